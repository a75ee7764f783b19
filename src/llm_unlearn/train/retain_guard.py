"""calibration.retain_guard: the selection's retain floor (``calibration.retain_floor`` r: retain EM and
ROUGE-L each at least r x their value at the run's first evaluation) held during the training too, not
only when the state is chosen.

A run can lose retain from its first chunk (the demo's seed 4: retain EM 0.72 x the start after 20 steps)
and never meet the floor again; the selection can then only keep a state below it. So every in-training
evaluation updates a multiplier ``s`` of the retain-side terms (their unit is the retain tokens or rows;
``train/loss.py``), a dual variable of the constraint ``ratio >= r``, where ``ratio`` is the worse of the
two sampled retain metrics against the start::

    s <- clip(s * 2 ** ((r - ratio) / (1 - r)), 1, MAX_SCALE)

Below the floor by the whole allowed drop (1 - r) the multiplier doubles; above it, it relaxes by the same
rule (at most halved: the ratio is at most 1), never below 1. The rule has no constant of its own but the
floor's; it is continuous in the ratio, so one sampled item that a float rounding flips (1/n of EM) moves
``s`` by at most ``2 ** ((1/n) / (1 - r))``, never on or off. ``MAX_SCALE`` keeps the forget side at least
1/17 of the loss's weight when both sides' terms are of one size, so the run still unlearns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_SCALE", "retain_ratio", "next_scale", "update"]

MAX_SCALE = 16.0
_METRICS = ("retain_em", "retain_rougeL")


def _num(d: Mapping[str, Any] | None, k: str) -> float | None:
    v = d.get(k) if d is not None else None
    return float(v) if v is not None and math.isfinite(float(v)) else None


def retain_ratio(ev: Mapping[str, Any], start: Mapping[str, Any] | None) -> float | None:
    """The worse of retain EM and ROUGE-L at ``ev`` as a share of their values at ``start``; a metric not
    measured at either, or 0 at the start (nothing to hold), is left out; None when neither is left."""
    ratios = []
    for k in _METRICS:
        now, then = _num(ev, k), _num(start, k)
        if now is not None and then is not None and then > 0:
            ratios.append(now / then)
    return min(ratios) if ratios else None


def next_scale(scale: float, ratio: float | None, *, floor: float) -> float:
    """The multiplier after an evaluation whose retain ratio is ``ratio`` (module docstring); 1 when the
    floor is off (0) or allows no drop (1); unchanged when nothing was measured."""
    if not 0.0 < floor < 1.0:
        return 1.0
    if ratio is None:
        return float(scale)
    s = float(scale) * 2.0 ** ((floor - ratio) / (1.0 - floor))
    return min(max(s, 1.0), MAX_SCALE)


def update(calib, ev: dict[str, Any]) -> None:
    """After the in-training evaluation ``ev`` of ``calib`` (a ``train/calibrated.Calibrator``): its
    multiplier from ``ev`` against the run's first evaluation, recorded in ``ev`` as ``retain_scale`` (the
    value the steps after it train with); nothing when calibration.retain_guard is off."""
    if not calib.c.retain_guard:
        return
    ratio = retain_ratio(ev, calib.evaluations[0])
    calib.retain_scale = next_scale(calib.retain_scale, ratio, floor=float(calib.c.retain_floor))
    ev["retain_scale"] = calib.retain_scale
