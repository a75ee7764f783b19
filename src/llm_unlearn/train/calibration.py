"""Calibrated unlearning: which forget rows to keep pushing, when to stop, which checkpoint to keep.

Pure functions of evaluation results (no torch), so that the rules can be tested on synthetic metric
trajectories. The evaluation itself lives in `train/monitor.py`; `calibrated.py` applies the rules.

The problem they solve: NPO pushes the forget data's likelihood down without a floor. Left alone it
goes *past* the point where the forget data looks like data the model never saw, and a loss-based
membership-inference attack then finds the forgotten documents by their *high* loss (AUC well below
0.5; the SemEval MIA score `1 - 2|AUC - 0.5|` punishes both directions alike).

**Per-unit gate** (`calibration.mode: gate`, the default preset). A *unit* is what the attack sees:
a forget row's member document when one is given (`--forget-documents`, matched by id: a record id is
its document's id plus `sc<k>`/`qa<k>`), else the row's own answer. At every evaluation the current
model's loss of each unit is compared with the holdout's typical loss of the same kind of text:

    tau_doc = quantile_q(NLL of the holdout documents)        (current model)
    tau_rec = quantile_q(answer NLL of the holdout records)   (current model)
    row active  <=>  loss(unit of row) < tau(kind of unit)

An inactive row keeps its place in the schedule but contributes nothing to the forget term (its
tokens leave the NPO mean; a batch with no active forget row has a forget term of exactly 0), so a
row stops being pushed once its unit already looks never-seen. A unit whose kind has no holdout
(e.g. records when the holdout has only documents) is never gated. q defaults to 0.5 (the median).

**Spread targets** (`calibration.gate_spread`, on by default). With one threshold for all, every
forgotten unit ends just past the holdout's median: bunched at one point, and the final AUC against
the grader's non-members is then the share of them above that point, a binomial proportion (standard
deviation 1/(2 sqrt(m)) for m non-members) whatever the run did. Instead the units are ranked once,
by their loss at the first evaluation, and the unit of rank r among n gets its own target quantile
`q - 1/2 + (r + 1/2)/n` (`spread_quantiles`): they end spread like the holdout, and the AUC noise
falls to about 1/sqrt(12 m). A row that is its own unit (a document row, or a record without a
document) is decided at every step by its loss in that very batch against its cap, so a unit that
drifted back below its target between evaluations is pushed again at once; the record rows of a
document follow that document's latest in-batch loss.

**Pull-back** (`calibration.pull`, weight w > 0; off by default). The gate only stops pushing, so a
document unit that the updates of other rows carry past unseen stays there, and the attack then finds it
by its *high* loss. With the pull, a forget document row whose loss in the batch is above the holdout
quantile `pull_quantile(q_unit, band) = min(1, q_unit + band)` gets a descent term instead of none:

    total += w x mean over those rows of their mean NLL

so each document unit has a band `[tau(q_unit), tau(q_unit + band)]` it settles in: pushed below it,
drawn back above it, left alone inside (hysteresis). Record rows are never pulled (their answers are
the knowledge to forget).

**Stopping** (`should_stop`). Only in the last chunk (earlier chunks hold forget rows that later
chunks have not reached yet, so an early global AUC says nothing about them): stop when the MIA AUC
is within `tolerance` of 0.5 ("calibrated"), when it has gone below `0.5 - tolerance` ("overshoot":
more steps only make the forget data *less* familiar than unseen data), or when every forget row is
gated off ("all forget units look unseen"). In an earlier chunk, a chunk whose forget rows are all
gated off ends early.

**The last chunk's budget** (`calibration.last_chunk_factor`, 2 in a gated calibrated run). With one
optimizer for the run and a decaying learning rate, the last chunk, where the run stops and is selected,
trains its new units at the smallest rates of the schedule; its passes are `factor x schedule.epochs`
(`train/prepare.chunk_epochs`), which also stretches the schedule, and the calibrated stop ends it early.

**Backtracking** (`calibration.backtrack` n > 0, `backtrack_factor` f). An evaluation whose AUC is below
`0.5 - tolerance` is an overshoot wherever it happens (in an earlier chunk the units not reached yet only
hold the AUC up). Instead of stopping there (the last chunk) or training on (an earlier one), the run goes
back to its *anchor*, the latest evaluation that was not an overshoot and met the quality floors
(`is_anchor`): that evaluation's adapter weights and optimizer state, and the learning rate times f from
then on (compounding), then trains the remaining steps of the chunk. At most n times a run; then the
rules above apply. Never after the last chunk's own end (no step would be left to take).

**Extension** (`calibration.extend` n > 0). When the last chunk's steps are spent, the run has not stopped and
the AUC is still above the band and still on its way down (`should_extend`: at its lowest of the pass's
evaluations, its start included, or the loss gap more than `GAP_MARGIN` below its lowest of the pass
before: the AUC of a few members moves by whole pairs, the gap it ranks does not; or the gate ended the
pass before its steps were spent, every row of it gated off: a pass that did not train says nothing about
falling), the last chunk is trained once more, with the same schedule
of learning rates as its pass (a run-long schedule is rewound to the chunk's start); at most n times.
Under the gate the pass holds every chunk's rows (`train/extend.extension_rows`,
`calibration.extend_revisit`): the AUC is over all forget documents, and the units that keep it above the
band may be earlier chunks' that relapsed, while the last chunk's own are all gated off.

**Bisection** (`calibration.bisect` k > 0). An AUC that falls fast can jump over the whole band between two
evaluations: from above `0.5 + tolerance` to below `0.5 - tolerance` (`crossed`). The crossing then lies on
the way between the two states, and the straight line between their adapter weights, `(1 - t) W_above +
t W_below`, is searched for it by bisection (`bisect_step`): at most k evaluations of interpolated states,
ending at the first within the band that meets the floors. They are candidates like any evaluation (the
training itself goes on from where it was, with its own gate), one bisection per state above the band.

**Bisecting the kept state** (`calibration.bisect_selected` k > 0). The selection below can only keep a state
the run evaluated. When the one it would keep is outside the band (often: the only in-band evaluations
missed a floor on the sampled items, and the next one had already fallen past), the band's edge lies between
it and its nearest evaluations on the other side of that edge (`band_side`): the latest before it and the
first after it. At the run's end each of those two lines is searched by bisection like a jump
(`bisect_step`, at most k states a line, the first within the band that meets the floors ends the search);
the states tried are candidates, and the selection runs over all of them. When the state it would keep
misses the retain floor, the lines to its nearest evaluations that met it (the latest before, the first
after; the start meets it) are searched first (`floors_step`: back towards the retain side while retain
is short, on towards the kept state while forget EM is over its ceiling, then towards the band). At most
2k states in all.

**Selection** (`select_best`). Every evaluation is a candidate checkpoint. With quality floors
(`calibration.retain_floor` r, `calibration.forget_em_max` f; `meets_floors`) the candidates whose
sampled retain EM and ROUGE-L are each >= r x the run's first evaluation and whose forget EM is <= f
come first (the calibrated stop also waits for such a state); among them, or among all when none does,
each is scored by a proxy of the official final score `mean(task aggregate, MMLU, MIA score)`:

    proxy = mean(task_aggregate, 1 - 2|AUC - 0.5| [, mmlu])

where the task aggregate is the official harmonic mean of the 12 terms measured on the sampled
items, and MMLU enters only when a budget for it is given. The highest proxy wins; among equal
proxies the later evaluation wins (it has seen more of the schedule). Without any evaluation the
last state is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from llm_unlearn.evaluation.metrics.semeval import mia_score
from llm_unlearn.train.band import band_side, bisect_step, crossed, floors_step  # noqa: F401 (re-exported)

MODES = ("off", "stop", "gate")


def proxy_score(
    task_aggregate: float | None, mia_auc: float | None, mmlu: float | None = None
) -> float | None:
    """``mean`` of the available parts among (task aggregate, MIA score, MMLU); None when the task
    aggregate or the AUC is missing (an evaluation that cannot be compared)."""
    if task_aggregate is None or mia_auc is None:
        return None
    if not (math.isfinite(task_aggregate) and math.isfinite(mia_auc)):
        return None
    parts = [float(task_aggregate), mia_score(mia_auc)]
    if mmlu is not None and math.isfinite(mmlu):
        parts.append(float(mmlu))
    return sum(parts) / len(parts)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default rule):
    position ``q * (n - 1)`` in the sorted values. Raises ValueError on an empty input."""
    xs = sorted(float(v) for v in values if v is not None and math.isfinite(v))
    if not xs:
        raise ValueError("quantile of no finite values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread_quantiles(unit_loss: Mapping[Any, float | None], *, center: float) -> dict[Any, float]:
    """``{unit: target quantile}``: the unit of rank ``r`` (ascending loss, ties by key) among ``n``
    gets ``clip(center - 1/2 + (r + 1/2) / n, 0, 1)``; a unit without a finite loss gets ``center``.

    With these targets the forgotten units end spread like the holdout (their mean target is the
    center) instead of bunched at one quantile: bunched at the median, the final AUC against fresh
    non-members is the share of them above one point, a binomial proportion with standard deviation
    ``1 / (2 sqrt(m))`` (0.14 for m = 12); spread, it is a mean of uniform ranks, ``1 / sqrt(12 m)``
    (0.08). Ranks are taken once, so a unit keeps its target for the whole run; swapping the ranks of
    two nearly tied units (the float noise of another CPU) swaps two neighbouring targets, nothing more.
    """
    finite = [(k, float(v)) for k, v in unit_loss.items() if v is not None and math.isfinite(v)]
    ordered = sorted(finite, key=lambda kv: (kv[1], _sort_key(kv[0])))
    n = len(ordered)
    out = {k: min(1.0, max(0.0, center - 0.5 + (r + 0.5) / n)) for r, (k, _) in enumerate(ordered)}
    for k in unit_loss:
        out.setdefault(k, center)
    return out


def _sort_key(key: Any) -> tuple:
    return (0, key, "") if isinstance(key, (int, float)) else (1, 0, repr(key))


def pull_quantile(target: float, band: float) -> float:
    """The holdout quantile above which a document unit with target quantile ``target`` is drawn back
    (`calibration.pull`): ``min(1, target + band)``. Between ``target`` and it the unit is neither pushed
    nor pulled (hysteresis: float noise near one threshold cannot flip it between the two)."""
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    return min(1.0, float(target) + float(band))


def gate(
    unit_loss: Mapping[Any, float | None],
    unit_kind: Mapping[Any, str],
    thresholds: Mapping[str, float | None],
    unit_threshold: Mapping[Any, float | None] | None = None,
) -> dict[Any, bool]:
    """``{key: active}``: a unit is active while its loss is below its threshold: its own in
    ``unit_threshold`` when given there, else its kind's; a unit with no threshold, or whose loss is
    unknown, stays active."""
    out = {}
    for key, loss in unit_loss.items():
        own = unit_threshold.get(key) if unit_threshold else None
        tau = own if own is not None else thresholds.get(unit_kind[key])
        out[key] = not (tau is not None and loss is not None and math.isfinite(loss) and loss >= tau)
    return out


def meets_floors(
    ev: Mapping[str, Any],
    start: Mapping[str, Any] | None,
    *,
    retain_floor: float = 0.0,
    forget_em_max: float = 1.0,
) -> bool:
    """Whether evaluation ``ev`` is a state a user would accept: retain EM and ROUGE-L each at least
    ``retain_floor`` x their value at ``start`` (the run's first evaluation), and forget EM at most
    ``forget_em_max``. A metric that was not measured (or a start without it) cannot fail; 0 and 1
    turn the floors off."""

    def num(d, k):
        v = d.get(k) if d is not None else None
        return float(v) if v is not None and math.isfinite(v) else None

    for k in ("retain_em", "retain_rougeL"):
        now, then = num(ev, k), num(start, k)
        if now is not None and then is not None and now < retain_floor * then - _EPS:
            return False
    f = num(ev, "forget_em")
    return not (f is not None and f > forget_em_max + _EPS)


# the metrics are shares of items (k / n) and the floors decimal fractions: their product rounds by an ulp
# (0.9 x 0.8 = 0.7200000000000001 > 0.72), far below the 1 / n of one item
_EPS = 1e-12


def candidate_key(
    ev: Mapping[str, Any],
    start: Mapping[str, Any] | None,
    *,
    retain_floor: float = 0.0,
    forget_em_max: float = 1.0,
) -> tuple[bool, float] | None:
    """How candidates are ordered: first whether they meet the floors, then the proxy (None: no
    proxy, not a candidate). The larger key wins; ties go to the later evaluation."""
    value = ev.get("proxy")
    if value is None or not math.isfinite(value):
        return None
    ok = meets_floors(ev, start, retain_floor=retain_floor, forget_em_max=forget_em_max)
    return (ok, float(value))


def should_stop(
    mia_auc: float | None,
    *,
    tolerance: float,
    last_chunk: bool,
    active_fraction: float | None = None,
    meets_floors: bool = True,
) -> str | None:
    """The reason to stop the run now, or None (see the module docstring). ``meets_floors``: whether
    the current state meets the quality floors; the calibrated stop waits for one that does."""
    if not last_chunk:
        return None
    if active_fraction is not None and active_fraction <= 0.0:
        return "all forget units look unseen (every forget row is gated off)"
    if mia_auc is None or not math.isfinite(mia_auc):
        return None
    if band_side(mia_auc, tolerance=tolerance) == 0:
        if not meets_floors:
            return None
        return f"calibrated: MIA AUC {mia_auc:.3f} is within {tolerance} of 0.5"
    if mia_auc < 0.5 - tolerance:
        a, b = _distinct(mia_auc, 0.5 - tolerance)
        return f"overshoot: MIA AUC {a} < {b} (the forget data looks less familiar than unseen data)"
    return None


def is_anchor(
    ev: Mapping[str, Any],
    start: Mapping[str, Any] | None,
    *,
    tolerance: float,
    retain_floor: float = 0.0,
    forget_em_max: float = 1.0,
) -> bool:
    """Whether evaluation ``ev`` is a state a backtrack may return to: its MIA AUC was measured and is
    not below ``0.5 - tolerance`` (not an overshoot), and it meets the quality floors."""
    auc = ev.get("mia_auc")
    if auc is None or not math.isfinite(auc) or auc < 0.5 - tolerance:
        return False
    return meets_floors(ev, start, retain_floor=retain_floor, forget_em_max=forget_em_max)


def should_backtrack(mia_auc: float | None, *, tolerance: float, left: int, anchored: bool) -> bool:
    """Whether to go back to the anchor now: the AUC overshot (below ``0.5 - tolerance``), backtracks are
    left and an anchor exists."""
    if left <= 0 or not anchored or mia_auc is None or not math.isfinite(mia_auc):
        return False
    return mia_auc < 0.5 - tolerance


#: How much the loss gap (nats a token) must have fallen below the pass's lowest before to count as still
#: falling: 18 x what float32 rounding and another CPU's summation order can move a per-token loss by
#: (logits up to ~30 nats, ~sqrt(1000) x 2^-23 relative: 1.1e-4), and far below a real fall (tenths of a nat).
GAP_MARGIN = 2e-3


def finite(values: Sequence[float | None] | None) -> list[float]:
    """The values that are numbers and finite (None and NaN/inf left out), as floats."""
    return [float(v) for v in (values or ()) if v is not None and math.isfinite(v)]


def should_extend(
    pass_aucs: Sequence[float | None],
    *,
    tolerance: float,
    done: int,
    allowed: int,
    stopped: bool,
    gaps: Sequence[float | None] | None = None,
    ended_early: bool = False,
) -> bool:
    """Whether to train the last chunk once more: extensions left, no stop, the latest of this pass's AUCs
    (its start first) above ``0.5 + tolerance``, and still falling: that AUC at the lowest of them (ties
    count), or the latest loss gap (``gaps``, the same evaluations) more than :data:`GAP_MARGIN` below the
    lowest gap before it. The gap is the continuous measure the AUC ranks: with few members the AUC moves by
    whole pairs and can read one pair up while the gap still falls. Missing or non-finite values elsewhere
    are skipped. ``ended_early``: the gate ended the pass at its latest evaluation (every row of the pass
    gated off) with its steps not spent; it did not train, so whether it still falls cannot be judged, and
    above the band is enough (an extension revisits every chunk's rows: calibration.extend_revisit)."""
    if stopped or done >= allowed or not pass_aucs:
        return False
    last = pass_aucs[-1]
    if last is None or not math.isfinite(last) or last <= 0.5 + tolerance:
        return False
    if ended_early or last <= min(finite(pass_aucs)):
        return True
    if not gaps or len(gaps) != len(pass_aucs):
        return False
    now, before = gaps[-1], finite(gaps[:-1])
    return now is not None and math.isfinite(now) and bool(before) and now < min(before) - GAP_MARGIN


def retain_ok(ev: Mapping[str, Any], start: Mapping[str, Any] | None, *, retain_floor: float) -> bool:
    """The retain half of :func:`meets_floors`: retain EM and ROUGE-L each at least ``retain_floor`` x the
    start's."""
    return meets_floors(ev, start, retain_floor=retain_floor, forget_em_max=1.0)


def _distinct(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with 3 decimals, or as many more as it takes for them to read differently (an AUC
    one pair below the line, 0.4499, is not "0.450 < 0.450")."""
    for digits in range(3, 17):
        x, y = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if x != y:
            return x, y
    return repr(a), repr(b)


def _between(ev: Mapping[str, Any]) -> str:
    b = ev.get("bisect")
    return f" (bisected: t = {b['t']:g} on the line from step {b['from_step']})" if b else ""


def select_best(
    evaluations: Sequence[Mapping[str, Any]], *, retain_floor: float = 0.0, forget_em_max: float = 1.0
) -> tuple[int | None, str]:
    """Index of the best candidate by :func:`candidate_key` (the floors, then the highest ``proxy``;
    later wins ties) and a sentence saying why; ``(None, reason)`` when no evaluation has a proxy
    (then the caller keeps the last state). The start is ``evaluations[0]``."""
    start = evaluations[0] if evaluations else None
    floors = {"retain_floor": retain_floor, "forget_em_max": forget_em_max}
    best, best_key = None, None
    for i, ev in enumerate(evaluations):
        key = candidate_key(ev, start, **floors)
        if key is not None and (best_key is None or key >= best_key):
            best, best_key = i, key
    if best is None:
        return None, "no evaluation with a proxy score: the last state is kept"
    ev = evaluations[best]
    auc = ev.get("mia_auc")
    auc_text = f", MIA AUC {auc:.3f}" if auc is not None else ""
    reason = (
        f"highest proxy of the final score ({best_key[1]:.4f}: task aggregate "
        f"{ev.get('task_aggregate', float('nan')):.4f}{auc_text}) at step {ev.get('step')}{_between(ev)} "
        f"of {len(evaluations)} evaluations"
    )
    if retain_floor > 0.0 or forget_em_max < 1.0:
        if best_key[0]:
            reason += (
                f" among those that meet the floors (retain >= {retain_floor:g} x the start, "
                f"forget EM <= {forget_em_max:g})"
            )
        else:
            reason += (
                f"; no evaluation met the floors (retain >= {retain_floor:g} x the start, "
                f"forget EM <= {forget_em_max:g})"
            )
    return best, reason
