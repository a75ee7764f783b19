"""calibration.bisect: when an evaluation finds that the MIA AUC jumped over the whole band since the latest
state above it, the states on the straight line between the two adapter weights are evaluated by bisection
and join the candidates for the kept state. The rules are `calibration.crossed` / `bisect_step`;
`calibrated.Calibrator` calls `bisect_if_crossed` before it appends the evaluation that jumped."""

from __future__ import annotations

import copy
import functools
import logging
import math
from typing import Any

import torch

from llm_unlearn.train import calibration as cal
from llm_unlearn.train.sharding import load_trainable, trainable_state

log = logging.getLogger(__name__)

# what a monitor's evaluation changes besides its row (calibration.push_answered, calibration.pull)
MONITOR_STATE = ("answered", "pull_caps")


def interpolate_state(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float
) -> dict[str, torch.Tensor]:
    """``(1 - t) a + t b`` tensor by tensor: exactly ``a`` at t = 0 and ``b`` at t = 1."""
    if t == 0.0:
        return {k: v.clone() for k, v in a.items()}
    if t == 1.0:
        return {k: v.clone() for k, v in b.items()}
    return {k: torch.lerp(a[k], b[k], t) for k in a}


class Neighbours:
    """calibration.bisect_selected's states: the latest evaluation on each side of the band's edges and the
    latest that met the retain floor (``edges``); the best candidate's nearest evaluations across the band's
    edge it is outside of and, when it misses the retain floor, its nearest that met it (``roles``, in the
    order `bisect_selected` searches them: the latest before it when it became the best, the first after it
    since). Each is (evaluation index, adapter weights)."""

    EDGES = ("not_below", "not_above", "retain_ok")
    ROLES = ("retain_before", "retain_after", "before", "after")

    def __init__(self, calib):
        self.calib = calib
        self.edges: dict[str, tuple[int, dict[str, torch.Tensor]] | None] = dict.fromkeys(self.EDGES)
        self.roles: dict[str, tuple[int, dict[str, torch.Tensor]] | None] = dict.fromkeys(self.ROLES)

    def track(self, ev: dict[str, Any], state, became: bool) -> None:
        """After ``ev`` (the latest of ``calib.evaluations``, weights ``state()``) was added; ``became``:
        it is the new best candidate."""
        c, evs = self.calib.c, self.calib.evaluations
        tol, floor = float(c.tolerance), float(c.retain_floor)
        side = cal.band_side(ev.get("mia_auc"), tolerance=tol)
        ok = cal.retain_ok(ev, evs[0], retain_floor=floor)
        i = len(evs) - 1
        if became:
            self.roles = dict.fromkeys(self.ROLES)
            self.roles["before"] = {-1: self.edges["not_below"], 1: self.edges["not_above"]}.get(side)
            self.roles["retain_before"] = None if ok else self.edges["retain_ok"]
        elif self.calib.best_index is not None:
            best = evs[self.calib.best_index]
            best_side = cal.band_side(best.get("mia_auc"), tolerance=tol)
            if self.roles["after"] is None and best_side in (-1, 1) and side not in (None, best_side):
                self.roles["after"] = (i, state())
            if (
                self.roles["retain_after"] is None
                and ok
                and not cal.retain_ok(best, evs[0], retain_floor=floor)
            ):
                self.roles["retain_after"] = (i, state())
        if side is not None and side >= 0:
            self.edges["not_below"] = (i, state())
        if side is not None and side <= 0:
            self.edges["not_above"] = (i, state())
        if ok:
            self.edges["retain_ok"] = (i, state())

    def kept_states(self) -> dict[int, dict[str, torch.Tensor]]:
        """{evaluation index: adapter weights} of every state held (saved with the checkpoint, so that a
        resumed run searches the same lines)."""
        held = [*self.edges.values(), *self.roles.values()]
        return {i: st for i, st in (h for h in held if h is not None)}

    def state(self) -> dict[str, Any]:
        """The indices of the states held, for the checkpoint's state.json."""
        idx = lambda d: {k: (v[0] if v is not None else None) for k, v in d.items()}  # noqa: E731
        return {"edges": idx(self.edges), "neighbours": idx(self.roles)}

    def restore(self, st: dict[str, Any], states: dict[int, dict[str, torch.Tensor]]) -> None:
        for field, held in (("edges", self.edges), ("neighbours", self.roles)):
            for role, i in (st.get(field) or {}).items():
                if role in held and i is not None and int(i) in states:
                    held[role] = (int(i), states[int(i)])


def keep_upper(calib, ev: dict[str, Any], state) -> None:
    """calibration.bisect: an evaluation above the band that meets the floors is the new upper end
    (``calib.upper``); one within the band that meets them ends it (a calibrated candidate exists: nothing to
    search for)."""
    auc = ev.get("mia_auc")
    if int(calib.c.bisect) <= 0 or auc is None or not math.isfinite(auc):
        return
    if not cal.meets_floors(ev, calib.evaluations[0], **calib.floors):
        return
    side = cal.band_side(auc, tolerance=float(calib.c.tolerance))
    if side == 1:
        calib.upper = (len(calib.evaluations) - 1, state())
    elif side == 0:
        calib.upper = None


def bisect_if_crossed(calib, model, ev: dict[str, Any], *, step: int, chunk: int) -> None:
    """When ``ev`` (the evaluation just measured, not yet appended) is below the band and the calibrator's
    upper end (its latest state above the band that met the floors) was above it, evaluate up to
    calibration.bisect states between the two; each is a candidate (``calib._add``). The model's weights
    and the monitor's state (what the gate reads) are put back: the training goes on from where it was."""
    n, tol = int(calib.c.bisect), float(calib.c.tolerance)
    if n <= 0 or calib.upper is None:
        return
    idx, upper = calib.upper
    start = calib.evaluations[idx]
    if not cal.crossed(start.get("mia_auc"), ev.get("mia_auc"), tolerance=tol):
        return
    calib.upper = None  # one bisection a state above the band
    here = trainable_state(model)
    tried, _ = _search(
        calib, model, upper, here, n, step=step, chunk=chunk, ends=(idx, start, step), track=True
    )
    load_trainable(model, here)
    calib.bisections.append(
        {
            "step": step,
            "mia_auc": ev.get("mia_auc"),
            "from_step": start.get("step"),
            "from_mia_auc": start.get("mia_auc"),
            "tried": tried,
        }
    )
    log.info(
        "calibration: step %d: the MIA AUC jumped over the band (%.3f at step %s, %.3f now); on the line "
        "between the two: %s",
        step,
        start.get("mia_auc"),
        start.get("step"),
        ev.get("mia_auc"),
        ", ".join(_tried(x) for x in tried),
    )


def bisect_selected(calib, model) -> None:
    """calibration.bisect_selected, at the run's end. When the best candidate misses the retain floor, search
    the lines from its nearest evaluations that met it (``calib.near.roles`` retain_before, retain_after) to
    it (`calibration.floors_step`); when its MIA AUC is outside the band, the lines between it and its nearest
    evaluations across the band's edge (before, after; `calibration.bisect_step`). At most that many states
    a line and twice that in all, until one within the band meets the floors. Each state tried is a
    candidate; the model's weights and the monitor's state are put back (``finish`` then loads whichever
    candidate the selection keeps)."""
    n, tol = int(calib.c.bisect_selected), float(calib.c.tolerance)
    if n <= 0 or calib.best_index is None or calib.best_state is None:
        return
    s_idx, kept = calib.best_index, calib.best_state
    s_ev = calib.evaluations[s_idx]
    side = cal.band_side(s_ev.get("mia_auc"), tolerance=tol)
    lines = []
    if not cal.retain_ok(s_ev, calib.evaluations[0], retain_floor=float(calib.c.retain_floor)):
        lines += ["retain_before", "retain_after"]
    if side in (-1, 1):
        lines += ["before", "after"]
    here, left = None, 2 * n
    chunk = len(calib.per_chunk_steps) - 1
    for role in lines:
        got = calib.near.roles.get(role)
        if got is None or left <= 0:
            continue
        if here is None:
            here = trainable_state(model)
        j, other = got
        o_ev = calib.evaluations[j]
        if role.startswith("retain"):  # t = 0: the state that met the retain floor
            (a_idx, a_ev, a), (b_ev, b) = (j, o_ev, other), (s_ev, kept)
            lower = _auc(s_ev) <= _auc(o_ev)  # without an AUC: the kept state counts as the lower end
            rule = functools.partial(_floors_rule, calib=calib, kept_is_lower=lower)
            why = "kept state below the retain floor"
        else:  # t = 0: the end with the higher AUC (the less unlearned side, as in a jump over the band)
            (a_idx, a_ev, a), (_, b_ev, b) = sorted(
                [(s_idx, s_ev, kept), (j, o_ev, other)], key=lambda x: -float(x[1]["mia_auc"])
            )
            rule, why = None, "kept state outside the band"
        step = max(int(a_ev.get("step") or 0), int(b_ev.get("step") or 0))
        ends = (a_idx, a_ev, b_ev.get("step"))
        tried, found = _search(
            calib, model, a, b, min(n, left), step=step, chunk=chunk, ends=ends, track=False, rule=rule
        )
        left -= len(tried)
        calib.bisections.append(
            {
                "why": why,
                "step": step,
                "mia_auc": b_ev.get("mia_auc"),
                "from_step": a_ev.get("step"),
                "from_mia_auc": a_ev.get("mia_auc"),
                "to_step": b_ev.get("step"),
                "tried": tried,
            }
        )
        log.info(
            "calibration: the state to keep (step %s, MIA AUC %s) is %s; on the line to the %s state "
            "(step %s, AUC %s): %s",
            s_ev.get("step"),
            _fmt(s_ev.get("mia_auc")),
            "below the retain floor" if role.startswith("retain") else "outside the band",
            "earlier" if role.endswith("before") else "later",
            o_ev.get("step"),
            _fmt(o_ev.get("mia_auc")),
            ", ".join(_tried(x) for x in tried),
        )
        if found:
            break
    if here is not None:
        load_trainable(model, here)


def _auc(ev: dict[str, Any]) -> float:
    """The evaluation's MIA AUC, -inf without a finite one."""
    auc = ev.get("mia_auc")
    return float(auc) if auc is not None and math.isfinite(auc) else float("-inf")


def _fmt(auc) -> str:
    return f"{auc:.3f}" if auc is not None and math.isfinite(auc) else "n/a"


def _floors_rule(lo, hi, row, *, calib, kept_is_lower):
    """`calibration.floors_step` for the evaluation ``row`` of the state at t = (lo + hi) / 2."""
    start = calib.evaluations[0]
    return cal.floors_step(
        lo,
        hi,
        row.get("mia_auc"),
        tolerance=float(calib.c.tolerance),
        retain_met=cal.retain_ok(row, start, retain_floor=float(calib.c.retain_floor)),
        forget_met=cal.meets_floors(row, start, forget_em_max=float(calib.c.forget_em_max)),
        kept_is_lower=kept_is_lower,
    )


def _search(calib, model, a, b, n: int, *, step: int, chunk: int, ends, track: bool, rule=None):
    """Bisect the line ``(1 - t) a + t b`` (``a``: the end with the higher AUC) with at most ``n``
    evaluations, each a candidate (``calib._add``) recorded at ``step``; ``ends``: (a's evaluation index,
    a's evaluation, b's step); ``rule(lo, hi, row)``: the next bracket (default `calibration.bisect_step`).
    Returns (what was tried, whether a state within the band met the floors).
    The monitor's state is put back; the model holds the last state tried."""
    tol = float(calib.c.tolerance)
    idx, start, to_step = ends
    mon = calib.monitor
    kept = {k: copy.deepcopy(getattr(mon, k)) for k in MONITOR_STATE if hasattr(mon, k)}
    lo, hi, tried, found = 0.0, 1.0, [], False
    for _ in range(n):
        t = (lo + hi) / 2
        state = interpolate_state(a, b, t)
        load_trainable(model, state)
        row = mon.evaluate(model, step=step, chunk=chunk + 1)
        row.pop("_active", None), row.pop("_caps", None)  # the gate stays the training state's
        row["bisect"] = {
            "t": t,
            "from_evaluation": idx + 1,
            "from_step": start.get("step"),
            "to_step": to_step,
        }
        calib._add(row, lambda s=state: s, track=track)
        tried.append({"t": t, "mia_auc": row.get("mia_auc")})
        floors_met = cal.meets_floors(row, calib.evaluations[0], **calib.floors)
        if rule is None:
            nxt = cal.bisect_step(lo, hi, row.get("mia_auc"), tolerance=tol, meets_floors=floors_met)
        else:
            nxt = rule(lo, hi, row)
        if nxt is None:
            found = floors_met and cal.band_side(row.get("mia_auc"), tolerance=tol) == 0
            break
        lo, hi = nxt
    for k, v in kept.items():
        setattr(mon, k, v)
    return tried, found


def _tried(x: dict[str, Any]) -> str:
    auc = x["mia_auc"]
    return f"t={x['t']:g} AUC {auc:.3f}" if auc is not None else f"t={x['t']:g} no AUC"
