"""calibration.bisect: when an evaluation finds that the MIA AUC jumped over the whole band since the latest
state above it, the states on the straight line between the two adapter weights are evaluated by bisection
and join the candidates for the kept state. The rules are `calibration.crossed` / `bisect_step`;
`calibrated.Calibrator` calls `bisect_if_crossed` before it appends the evaluation that jumped."""

from __future__ import annotations

import copy
import logging
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
    mon = calib.monitor
    kept = {k: copy.deepcopy(getattr(mon, k)) for k in MONITOR_STATE if hasattr(mon, k)}
    lo, hi, tried = 0.0, 1.0, []
    for _ in range(n):
        t = (lo + hi) / 2
        state = interpolate_state(upper, here, t)
        load_trainable(model, state)
        row = mon.evaluate(model, step=step, chunk=chunk + 1)
        row.pop("_active", None), row.pop("_caps", None)  # the gate stays the training state's
        row["bisect"] = {"t": t, "from_evaluation": idx + 1, "from_step": start.get("step"), "to_step": step}
        calib._add(row, lambda s=state: s)
        tried.append({"t": t, "mia_auc": row.get("mia_auc")})
        floors_met = cal.meets_floors(row, calib.evaluations[0], **calib.floors)
        nxt = cal.bisect_step(lo, hi, row.get("mia_auc"), tolerance=tol, meets_floors=floors_met)
        if nxt is None:
            break
        lo, hi = nxt
    load_trainable(model, here)
    for k, v in kept.items():
        setattr(mon, k, v)
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


def _tried(x: dict[str, Any]) -> str:
    auc = x["mia_auc"]
    return f"t={x['t']:g} AUC {auc:.3f}" if auc is not None else f"t={x['t']:g} no AUC"
