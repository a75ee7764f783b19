"""The loss AUC's standard error and interval (DeLong et al. 1988) against its definition, a hand-computed
case and an exact expectation under the null."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from llm_unlearn.evaluation.metrics.mia import auc_interval, loss_auc, loss_auc_interval, mia_score_range
from llm_unlearn.evaluation.metrics.semeval import mia_score


def psi(x, y):
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def brute_delong(pos, neg):
    """The definition, pair by pair: AUC, and S10/m + S01/n from the structural components."""
    m, n = len(pos), len(neg)
    auc = sum(psi(x, y) for x, y in itertools.product(pos, neg)) / (m * n)
    v10 = [sum(psi(x, y) for y in neg) / n for x in pos]
    v01 = [sum(psi(x, y) for x in pos) / m for y in neg]
    s10 = sum((v - auc) ** 2 for v in v10) / (m - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (n - 1)
    return auc, math.sqrt(s10 / m + s01 / n)


def test_a_case_by_hand():
    # members 2, 3 against non-members 1, 2.5: pairs (2,1) (3,1) (3,2.5) won, (2,2.5) lost -> AUC 3/4;
    # V10 = (1/2, 1), V01 = (1, 1/2): both sample variances 1/8, so Var = 1/16 + 1/16 = 1/8
    r = auc_interval([2.0, 3.0], [1.0, 2.5])
    assert r["auc"] == pytest.approx(0.75, abs=1e-15)
    assert r["se"] == pytest.approx(math.sqrt(1 / 8), abs=1e-15)
    z = 1.959963984540054
    assert r["low"] == pytest.approx(max(0.0, 0.75 - z * math.sqrt(1 / 8)), abs=1e-12)
    assert r["high"] == 1.0  # clipped: 0.75 + 0.69 > 1
    assert (r["members"], r["nonmembers"], r["level"]) == (2, 2, 0.95)


@pytest.mark.parametrize("seed", range(5))
def test_the_rank_computation_is_the_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=int(rng.integers(2, 12))).astype(float).tolist()  # many ties
    neg = rng.integers(0, 6, size=int(rng.integers(2, 15))).astype(float).tolist()
    auc, se = brute_delong(pos, neg)
    r = auc_interval(pos, neg)
    assert r["auc"] == pytest.approx(auc, abs=1e-12)
    assert r["se"] == pytest.approx(se, abs=1e-12)


def test_the_loss_interval_is_the_loss_auc_with_score_minus_nll():
    rng = np.random.default_rng(7)
    members, nonmembers = rng.normal(2.0, 1.0, 24).tolist(), rng.normal(2.3, 1.0, 54).tolist()
    r = loss_auc_interval(members, nonmembers)
    assert r["auc"] == pytest.approx(loss_auc(members, nonmembers), abs=1e-12)
    assert r == auc_interval([-x for x in members], [-x for x in nonmembers])
    assert r["low"] < r["auc"] < r["high"]


def test_the_level_sets_the_width():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(0.3, 1, 30).tolist(), rng.normal(0, 1, 40).tolist()
    r95, r50 = auc_interval(pos, neg), auc_interval(pos, neg, level=0.5)
    assert r95["se"] == r50["se"]
    # half-widths z(0.975) se and z(0.75) se, where nothing is clipped
    assert (r95["high"] - r95["low"]) / (r50["high"] - r50["low"]) == pytest.approx(
        1.959963984540054 / 0.6744897501960817, rel=1e-12
    )


def test_complete_separation_has_no_spread_and_bad_input_is_refused():
    r = auc_interval([5.0, 6.0, 7.0], [1.0, 2.0])
    assert (r["auc"], r["se"], r["low"], r["high"]) == (1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        auc_interval([1.0], [0.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        auc_interval([1.0, float("nan")], [0.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        auc_interval([1.0, 2.0], [0.0, 2.0], level=1.0)


def test_the_variance_estimate_under_the_null_has_its_exact_expectation():
    """With members and non-members from one continuous distribution, E[S10] = 1/12 + 1/(12 n) and
    E[S01] = 1/12 + 1/(12 m) (a component's variance 1/12 + 1/(6 n), minus the covariance 1/(12 n) of two
    components that share the non-members), so E[se^2] = (m + n + 2) / (12 m n), one 1/(12 m n) above the
    AUC's exact variance (m + n + 1) / (12 m n). Checked by simulation within 4 of its standard errors."""
    m, n, runs = 24, 54, 3000
    rng = np.random.default_rng(0)
    var_est, aucs = [], []
    for _ in range(runs):
        r = auc_interval(rng.normal(size=m).tolist(), rng.normal(size=n).tolist())
        var_est.append(r["se"] ** 2)
        aucs.append(r["auc"])
    var_est = np.asarray(var_est)
    mc_se = var_est.std(ddof=1) / math.sqrt(runs)
    assert abs(var_est.mean() - (m + n + 2) / (12 * m * n)) < 4 * mc_se
    # and the AUC's own spread is the exact one (its sample variance has relative sd sqrt(2 / (runs - 1))
    # for a near-normal AUC)
    exact = (m + n + 1) / (12 * m * n)
    assert abs(np.var(aucs, ddof=1) / exact - 1) < 4 * math.sqrt(2 / (runs - 1))


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (0.40, 0.62, (0.76, 1.0)),  # contains 0.5: the best score is 1
        (0.55, 0.70, (0.60, 0.90)),  # above 0.5: the score falls with the AUC
        (0.20, 0.45, (0.40, 0.90)),  # below 0.5
        (1.0, 1.0, (0.0, 0.0)),
    ],
)
def test_the_mia_score_range_of_an_auc_interval(low, high, expected):
    lo, hi = mia_score_range(low, high)
    assert (lo, hi) == pytest.approx(expected, abs=1e-12)
    grid = np.linspace(low, high, 1001)
    scores = [mia_score(a) for a in grid]
    assert lo == pytest.approx(min(scores), abs=1e-12) and hi >= max(scores) - 1e-12


def test_the_demo_table_shows_the_interval_only_where_there_is_one():
    from llm_unlearn.demo import format_table

    side = {"knowledge_em": 1.0, "regurgitation_rougeL": 1.0}
    before = {"forget": side, "retain": side, "mia_auc": 1.0, "mia_auc_interval": [1.0, 1.0]}
    after = dict(before, mia_auc=0.474, mia_auc_interval=[0.3612, 0.5901])
    table = format_table({"before": before, "after": after, "seconds": 80.0})
    assert "  95 % interval (sampling)  1.00-1.00 0.36-0.59" in table.splitlines()
    none = {
        k: dict(v, mia_auc=None, mia_auc_interval=None) for k, v in (("before", before), ("after", after))
    }
    assert "interval" not in format_table(dict(none, seconds=80.0))
