"""The band of calibrated unlearning: where the MIA AUC counts as calibrated (``0.5 +- tolerance``), and the
rules of the bisections that search a straight line of adapter weights for a state inside it
(calibration.bisect, calibration.bisect_selected; `train/bisect.py`). Pure functions, no torch;
`train/calibration.py` has the rest of the rules and re-exports these."""

from __future__ import annotations

import math


def band_side(mia_auc: float | None, *, tolerance: float) -> int | None:
    """-1 below the band (``AUC < 0.5 - tolerance``), +1 above it (``AUC > 0.5 + tolerance``), 0 within it
    (both edges included); None without a finite AUC. The one definition of the band: compared with its
    edges, not as ``|AUC - 0.5|``, which rounds 0.55 - 0.5 to 0.05000000000000004 and puts 0.55 outside."""
    if mia_auc is None or not math.isfinite(mia_auc):
        return None
    if mia_auc < 0.5 - tolerance:
        return -1
    return 1 if mia_auc > 0.5 + tolerance else 0


def crossed(upper_auc: float | None, mia_auc: float | None, *, tolerance: float) -> bool:
    """Whether the MIA AUC jumped over the whole band: from above ``0.5 + tolerance`` (an earlier state's
    ``upper_auc``) to below ``0.5 - tolerance`` now (missing or non-finite values: no)."""
    if upper_auc is None or mia_auc is None or not (math.isfinite(upper_auc) and math.isfinite(mia_auc)):
        return False
    return upper_auc > 0.5 + tolerance and mia_auc < 0.5 - tolerance


def bisect_step(
    lo: float, hi: float, mia_auc: float | None, *, tolerance: float, meets_floors: bool
) -> tuple[float, float] | None:
    """The next bracket of the interpolation weight after the state at ``t = (lo + hi) / 2`` measured
    ``mia_auc`` (t = 0: the state above the band, t = 1: the one below), or None: done, the state at t is
    within the band and meets the floors (or has no AUC to steer by). Within the band but below a floor:
    towards the less unlearned end."""
    mid = (lo + hi) / 2
    if mia_auc is None or not math.isfinite(mia_auc):
        return None
    if band_side(mia_auc, tolerance=tolerance) == 0:
        return None if meets_floors else (lo, mid)
    return (mid, hi) if mia_auc > 0.5 else (lo, mid)


def floors_step(
    lo: float,
    hi: float,
    mia_auc: float | None,
    *,
    tolerance: float,
    retain_met: bool,
    forget_met: bool,
    kept_is_lower: bool,
) -> tuple[float, float] | None:
    """The next bracket on the line from a state that met the retain floor (t = 0) to the kept state that did
    not (t = 1), after the state at ``t = (lo + hi) / 2``; None: done (within the band with both floors met,
    or no AUC to steer by). Retain below its floor: towards t = 0; forget EM above its ceiling: towards the
    kept state; both met but outside the band: towards the end on the band's side (``kept_is_lower``: the
    kept state's AUC is the lower of the two ends)."""
    mid = (lo + hi) / 2
    side = band_side(mia_auc, tolerance=tolerance)
    if side is None:
        return None
    if not retain_met:
        return (lo, mid)
    if not forget_met:
        return (mid, hi)
    if side == 0:
        return None
    towards_kept = (
        side > 0
    ) == kept_is_lower  # too high and the kept end is lower, or too low and it is higher
    return (mid, hi) if towards_kept else (lo, mid)
