"""The calibration rules (llm_unlearn.calibration) on synthetic metric trajectories."""

from __future__ import annotations

import math
import statistics

import pytest

from llm_unlearn.train import calibration as cal


def test_proxy_is_mean_of_task_aggregate_and_mia_score():
    # AUC 0.3 -> MIA score 1 - 2*0.2 = 0.6; mean(0.9, 0.6) = 0.75
    assert cal.proxy_score(0.9, 0.3) == pytest.approx(0.75, abs=1e-15)
    # with MMLU: mean(0.9, 0.6, 0.45) = 0.65
    assert cal.proxy_score(0.9, 0.3, 0.45) == pytest.approx(0.65, abs=1e-15)
    assert cal.proxy_score(None, 0.5) is None
    assert cal.proxy_score(0.9, None) is None
    assert cal.proxy_score(0.9, float("nan")) is None
    # symmetric in the AUC's distance from 0.5
    assert cal.proxy_score(0.8, 0.62) == pytest.approx(cal.proxy_score(0.8, 0.38), abs=1e-15)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], [0.5, 0.1, 0.9, 0.7]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_quantile_matches_statistics_inclusive_rule(values, q):
    if len(values) == 1:
        assert cal.quantile(values, q) == values[0]
        return
    # statistics.quantiles(method="inclusive") uses the same (n - 1) * q interpolation
    xs = sorted(values)
    if q == 0.0:
        expected = xs[0]
    elif q == 1.0:
        expected = xs[-1]
    else:
        # n=100 cut points of the inclusive method at q*100
        expected = statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
    assert cal.quantile(values, q) == pytest.approx(expected, rel=1e-12)


def test_quantile_rejects_empty_and_bad_q():
    with pytest.raises(ValueError):
        cal.quantile([], 0.5)
    with pytest.raises(ValueError):
        cal.quantile([float("nan")], 0.5)
    with pytest.raises(ValueError):
        cal.quantile([1.0], 1.5)


def test_gate_compares_each_unit_with_its_kinds_threshold():
    loss = {0: 1.0, 1: 3.0, 2: 2.0, 3: 9.0, 4: None}
    kind = {0: "document", 1: "document", 2: "record", 3: "record", 4: "document"}
    active = cal.gate(loss, kind, {"document": 2.5, "record": None})
    # doc 0 below tau, doc 1 above; records have no threshold -> active; unknown loss -> active
    assert active == {0: True, 1: False, 2: True, 3: True, 4: True}
    # equality counts as reached
    assert cal.gate({0: 2.5}, {0: "document"}, {"document": 2.5}) == {0: False}


def test_should_stop_only_in_the_last_chunk():
    assert cal.should_stop(0.5, tolerance=0.05, last_chunk=False) is None
    assert cal.should_stop(0.1, tolerance=0.05, last_chunk=False, active_fraction=0.0) is None
    assert cal.should_stop(0.53, tolerance=0.05, last_chunk=True).startswith("calibrated")
    assert cal.should_stop(0.56, tolerance=0.05, last_chunk=True) is None  # still too familiar
    assert cal.should_stop(0.44, tolerance=0.05, last_chunk=True).startswith("overshoot")
    assert cal.should_stop(0.9, tolerance=0.05, last_chunk=True, active_fraction=0.0).startswith("all forget")
    assert cal.should_stop(None, tolerance=0.05, last_chunk=True) is None


def _trajectory():
    """A typical over-shooting run: the AUC falls from 1.0 through 0.5 to 0.1 while forgetting
    completes; the task aggregate rises as the forget answers go, then drops as retain degrades."""
    aucs = [1.0, 0.9, 0.75, 0.6, 0.52, 0.4, 0.25, 0.1]
    tasks = [0.0, 0.3, 0.6, 0.8, 0.88, 0.9, 0.9, 0.85]
    return [
        {"step": 10 * (i + 1), "mia_auc": a, "task_aggregate": t, "proxy": cal.proxy_score(t, a)}
        for i, (a, t) in enumerate(zip(aucs, tasks))
    ]


def test_select_best_avoids_the_overshoot():
    evs = _trajectory()
    idx, reason = cal.select_best(evs)
    # proxies: ... 0.52 -> mean(0.88, 0.96) = 0.92 is the maximum; the last one is mean(0.85, 0.2) = 0.525
    assert idx == 4
    assert evs[idx]["mia_auc"] == 0.52
    assert "step 50" in reason
    assert evs[idx]["proxy"] > evs[-1]["proxy"]


def test_select_best_ties_go_to_the_later_and_none_without_proxies():
    evs = [
        {"step": 1, "proxy": 0.7, "task_aggregate": 0.7, "mia_auc": 0.5},
        {"step": 2, "proxy": 0.7, "task_aggregate": 0.7, "mia_auc": 0.5},
        {"step": 3, "proxy": None},
    ]
    assert cal.select_best(evs)[0] == 1
    idx, reason = cal.select_best([{"step": 1, "proxy": None}])
    assert idx is None and "last state" in reason
    assert cal.select_best([])[0] is None


def test_stop_rule_on_the_trajectory_stops_at_the_first_calibrated_point():
    evs = _trajectory()
    stops = [cal.should_stop(e["mia_auc"], tolerance=0.05, last_chunk=True) for e in evs]
    first = next(i for i, s in enumerate(stops) if s)
    assert first == 4 and stops[first].startswith("calibrated")
    # a run that jumps over the band is stopped by the overshoot rule at the first point past it
    jump = [0.9, 0.7, 0.3, 0.1]
    stops = [cal.should_stop(a, tolerance=0.05, last_chunk=True) for a in jump]
    assert stops[:2] == [None, None] and stops[2].startswith("overshoot")
    assert not math.isnan(cal.proxy_score(0.5, 0.3))
