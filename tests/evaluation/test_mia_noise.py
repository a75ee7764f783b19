"""The noise floor of a calibrated MIA AUC (evaluation/metrics/mia_noise.py) against a simulation of the
setting it describes: members spread like unseen documents, a holdout the calibration steers by, and a
grader's own non-members. The tolerances follow from the number of simulated replicates (the standard
error of a standard deviation estimated from K normal draws is sd / sqrt(2K))."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from llm_unlearn.evaluation.metrics.mia import loss_auc
from llm_unlearn.evaluation.metrics.mia_noise import (
    calibrated_sd,
    chance_all_within,
    median_abs_dev,
    noise_floor,
    sampling_sd,
)


def _spread(m: int) -> np.ndarray:
    """m member losses at the (r + 1/2)/m quantiles of the unseen documents' (standard normal) losses."""
    return norm.ppf((np.arange(m) + 0.5) / m)


def _aucs(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """The loss AUC per replicate: members [K, m] (or [m]), non-members [K, n]; no ties (continuous)."""
    members = np.broadcast_to(members, (nonmembers.shape[0], members.shape[-1]))
    return (members[:, :, None] < nonmembers[:, None, :]).mean(axis=(1, 2))


def test_the_simulated_auc_is_the_projects_loss_auc():
    rng = np.random.default_rng(0)
    nonmembers = rng.standard_normal((5, 40))
    got = _aucs(_spread(7), nonmembers)
    for k in range(5):
        assert got[k] == pytest.approx(loss_auc(list(_spread(7)), list(nonmembers[k])), abs=1e-12)


@pytest.mark.parametrize(("m", "n"), [(3, 24), (12, 96), (24, 24)])
def test_sampling_sd_is_the_simulated_one(m, n):
    K = 20000
    rng = np.random.default_rng(m * 1000 + n)
    aucs = _aucs(_spread(m), rng.standard_normal((K, n)))
    assert aucs.mean() == pytest.approx(0.5, abs=5 * sampling_sd(m, n) / math.sqrt(K))
    # 5 standard errors of the estimated standard deviation
    assert aucs.std(ddof=1) == pytest.approx(sampling_sd(m, n), rel=5 / math.sqrt(2 * K))


def test_sampling_sd_counts_the_members_granularity():
    """With 3 members the 1/(6 m^2) term is 10 % of the standard deviation: 1/sqrt(12 n) alone is
    outside the simulation's tolerance above (this is what the test would catch)."""
    assert sampling_sd(3, 24) / math.sqrt(1 / (12 * 24)) - 1 > 5 / math.sqrt(2 * 20000) * 4


def _calibrated(m: int, n: int, h: int, band: float, K: int, seed: int) -> np.ndarray:
    """Graded AUC - 0.5 of K runs whose calibration shifted the spread members' losses by the amount
    that puts their AUC against the run's own holdout at 0.5 + b, b uniform on [-band, band]."""
    rng = np.random.default_rng(seed)
    hold, grade = rng.standard_normal((K, h)), rng.standard_normal((K, n))
    target = 0.5 + rng.uniform(-band, band, K)
    base = _spread(m)
    lo, hi = np.full(K, -2.0), np.full(K, 2.0)
    for _ in range(40):  # the AUC falls as the members' losses rise: bisect the shift
        mid = (lo + hi) / 2
        above = _aucs(base[None, :] + mid[:, None], hold) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    shift = (lo + hi) / 2
    return _aucs(base[None, :] + shift[:, None], grade) - 0.5


@pytest.mark.parametrize(
    ("m", "n", "h", "band"),
    [(12, 96, 96, 0.0), (12, 96, 96, 0.05), (24, 24, 48, 0.0), (24, 24, 48, 0.05)],
)
def test_calibrated_sd_is_the_simulated_one(m, n, h, band):
    K = 4000
    dev = _calibrated(m, n, h, band, K, seed=m + n + h + int(band * 100))
    sd = calibrated_sd(m, n, h, band)
    assert dev.mean() == pytest.approx(0.0, abs=5 * sd / math.sqrt(K))
    # 5 standard errors, plus 3 % for the steps of the holdout's AUC (1 / (m h)) and the linearization
    assert dev.std(ddof=1) == pytest.approx(sd, rel=5 / math.sqrt(2 * K) + 0.03)
    # the median and the chance of every run within 0.10 of 0.5, as the normal approximation says
    assert np.median(np.abs(dev)) == pytest.approx(median_abs_dev(sd), rel=0.08)
    within = float((np.abs(dev) <= 0.10).mean())
    assert within == pytest.approx(chance_all_within(sd, 0.10, 1), abs=5 * math.sqrt(0.25 / K) + 0.01)


def test_chance_all_within_compounds_over_runs():
    one = chance_all_within(0.05, 0.10, 1)
    assert one == pytest.approx(2 * norm.cdf(2.0) - 1, abs=1e-12)
    assert chance_all_within(0.05, 0.10, 10) == pytest.approx(one**10, abs=1e-12)
    assert chance_all_within(0.0, 0.10, 3) == 1.0
    assert median_abs_dev(1.0) == pytest.approx(norm.ppf(0.75), abs=1e-12)


def test_noise_floor_rounds_the_three_numbers_and_refuses_bad_counts():
    got = noise_floor(12, 96, 96, band=0.05, width=0.10, runs=20)
    sd = calibrated_sd(12, 96, 96, 0.05)
    assert got == {
        "sd": round(sd, 4),
        "median_abs_dev": round(median_abs_dev(sd), 4),
        "chance_all_within": round(chance_all_within(sd, 0.10, 20), 4),
    }
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive whole number"):
            sampling_sd(bad, 10)
    with pytest.raises(ValueError, match="band"):
        calibrated_sd(12, 96, 96, band=-0.1)


# the README's table (section "What sampling alone leaves"): name, members, grader's non-members, holdout
README_ROWS = [
    ("the demo", 12, 96, 96),
    ("the real slice as first measured (24 + 48)", 24, 24, 48),
    ("the real slice (`make quality`): 54 + 96 of the organizers' 150 non-members", 24, 54, 96),
]


def readme_row(name: str, m: int, n: int, h: int) -> str:
    exact, band = calibrated_sd(m, n, h, 0.0), calibrated_sd(m, n, h, 0.05)
    cells = [
        name,
        str(m),
        str(n),
        str(h),
        f"{exact:.3f} / {band:.3f}",
        f"{median_abs_dev(exact):.3f} / {median_abs_dev(band):.3f}",
        f"{chance_all_within(exact, 0.05, 1):.2f} / {chance_all_within(band, 0.05, 1):.2f}",
        f"{chance_all_within(exact, 0.10, 10):.2f} / {chance_all_within(band, 0.10, 10):.2f}",
        f"{chance_all_within(exact, 0.10, 20):.2f} / {chance_all_within(band, 0.10, 20):.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def test_the_readme_table_is_the_formula():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    for row in README_ROWS:
        assert readme_row(*row) in text, readme_row(*row)
