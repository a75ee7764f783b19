"""How far from 0.5 a calibrated MIA AUC lands by sampling alone: the floor under any target on |AUC − 0.5|.

After a calibrated run the ``m`` member (forget) documents are fixed and, at best, their losses are spread
like those of documents the model never saw, at the quantiles ``(r + 1/2) / m`` of that population (what
the gate's spread targets aim at). The loss AUC against a sample ``S`` of ``n`` unseen documents is the mean
over ``y`` in ``S`` of ``G(y)``, the share of members whose loss is below ``y``. ``G(Y)`` is then ``k / m``
with probability ``1/m`` for ``k = 1 .. m-1`` and ``1/(2m)`` for ``k = 0`` and ``k = m``: mean 1/2 and
variance ``1/12 + 1/(6 m^2)``. The AUC's sampling variance is that over ``n`` (:func:`sampling_sd`).

The calibration measures the AUC against its holdout (``h`` documents) and stops within ``band`` of 0.5;
the grader measures it against its own non-members (``n``, disjoint). With the members shared,
``AUC_eval - 0.5 = b - c + e``: ``b`` where the calibration stopped (within ±band), ``c`` the holdout's
sampling error, ``e`` the grader's; independent, so their variances add (:func:`calibrated_sd`; ``b``
uniform on ±band, variance ``band^2 / 3``; ``band = 0``: a calibration that lands exactly on 0.5 by its own
holdout, the best any can do). Over ``runs`` independent runs (normal approximation):
:func:`median_abs_dev` is the median of ``|AUC - 0.5|`` and :func:`chance_all_within` the probability that
every run ends within ``width`` of 0.5. ``tests/evaluation/test_mia_noise.py`` checks both formulas against a
simulation.
"""

from __future__ import annotations

import math

__all__ = ["sampling_sd", "calibrated_sd", "median_abs_dev", "chance_all_within", "noise_floor"]

_MEDIAN_HALF_NORMAL = 0.6744897501960817  # the median of |Z|, Z standard normal (Phi^-1(3/4))


def _count(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def sampling_sd(members: int, nonmembers: int) -> float:
    """The standard deviation of the loss AUC of ``members`` fixed documents spread like unseen ones,
    against ``nonmembers`` unseen documents drawn at random: ``sqrt((1/12 + 1/(6 m^2)) / n)``."""
    m, n = _count("members", members), _count("nonmembers", nonmembers)
    return math.sqrt((1.0 / 12.0 + 1.0 / (6.0 * m * m)) / n)


def calibrated_sd(members: int, evaluation: int, holdout: int, band: float = 0.0) -> float:
    """The standard deviation of the graded AUC around 0.5 after a calibration against ``holdout``
    documents that stopped within ``band`` of 0.5 (uniformly), graded against ``evaluation`` others."""
    if not (band >= 0 and math.isfinite(band)):
        raise ValueError(f"band must be a finite number >= 0, got {band!r}")
    e, c = sampling_sd(members, evaluation), sampling_sd(members, holdout)
    return math.sqrt(e * e + c * c + band * band / 3.0)


def median_abs_dev(sd: float) -> float:
    """The median of ``|AUC - 0.5|`` when ``AUC - 0.5`` is normal with mean 0 and standard deviation ``sd``."""
    return _MEDIAN_HALF_NORMAL * sd


def chance_all_within(sd: float, width: float, runs: int = 1) -> float:
    """The probability that ``runs`` independent runs all end within ``width`` of 0.5."""
    one = math.erf(width / (sd * math.sqrt(2.0))) if sd > 0 else 1.0
    return one ** _count("runs", runs)


def noise_floor(
    members: int, evaluation: int, holdout: int, *, band: float = 0.0, width: float = 0.10, runs: int = 10
) -> dict[str, float]:
    """``{sd, median_abs_dev, chance_all_within}`` of a setting (see the module docstring), rounded to
    4 decimals: what a calibration that does everything right can expect."""
    sd = calibrated_sd(members, evaluation, holdout, band)
    return {
        "sd": round(sd, 4),
        "median_abs_dev": round(median_abs_dev(sd), 4),
        "chance_all_within": round(chance_all_within(sd, width, runs), 4),
    }
