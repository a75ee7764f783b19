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


# ---------------------------------------------------------------- spread targets (issue 19.2)
def test_spread_quantiles_are_rank_midpoints_shifted_by_the_center():
    losses = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 4.0}
    q = cal.spread_quantiles(losses, center=0.5)
    # ranks b < c < a < d -> (r + 0.5) / 4
    assert q == {"b": 0.125, "c": 0.375, "a": 0.625, "d": 0.875}
    # their mean is the center: the forgotten units are spread like the holdout, centred on q
    assert statistics.fmean(q.values()) == pytest.approx(0.5, abs=1e-15)
    shifted = cal.spread_quantiles(losses, center=0.6)
    assert shifted["b"] == pytest.approx(0.225) and shifted["d"] == pytest.approx(0.975)
    # clipped to [0, 1]
    assert cal.spread_quantiles(losses, center=0.9)["d"] == 1.0
    assert cal.spread_quantiles(losses, center=0.1)["b"] == 0.0


def test_spread_quantiles_ties_and_missing_losses_are_deterministic():
    # equal losses are ordered by key, so two CPUs that give the same (tied) losses agree
    q1 = cal.spread_quantiles({2: 1.0, 1: 1.0, 3: 0.5}, center=0.5)
    q2 = cal.spread_quantiles({1: 1.0, 3: 0.5, 2: 1.0}, center=0.5)
    assert q1 == q2 == {3: 1 / 6, 1: 0.5, 2: 5 / 6}
    # a unit without a finite loss gets the center; the others are ranked among themselves
    q = cal.spread_quantiles({"x": float("nan"), "y": 2.0, "z": 1.0}, center=0.5)
    assert q == {"x": 0.5, "z": 0.25, "y": 0.75}
    assert cal.spread_quantiles({}, center=0.5) == {}


def test_spread_targets_make_the_auc_one_half_against_the_holdout_itself():
    # the fixed point: if every unit's loss sits exactly at its target quantile of the holdout, the
    # loss AUC of the units against that holdout is 0.5 up to the rank granularity 1/(2n) (ties count 1/2)
    holdout = [0.3 * k for k in range(1, 41)]
    units = {f"u{k}": 10.0 - k for k in range(10)}  # any initial order
    q = cal.spread_quantiles(units, center=0.5)
    final = {k: cal.quantile(holdout, v) for k, v in q.items()}
    below = sum(1.0 if m < h else 0.5 if m == h else 0.0 for m in final.values() for h in holdout)
    auc = below / (len(final) * len(holdout))  # P(member loss < non-member loss): 0.5 = unseen
    assert abs(auc - 0.5) <= 1 / (2 * len(holdout))


def test_gate_takes_a_threshold_per_unit_over_its_kinds():
    loss = {0: 1.0, 1: 2.0, 2: 3.0}
    kind = {0: "document", 1: "document", 2: "record"}
    active = cal.gate(loss, kind, {"document": 1.5, "record": None}, unit_threshold={1: 2.5, 2: 2.0})
    # row 0 at the kind's 1.5 -> below: pushed; row 1 at its own 2.5 -> below: pushed; row 2 at its own
    # 2.0 (its kind has none) -> reached: gated off
    assert active == {0: True, 1: True, 2: False}


def test_the_monitor_gives_each_unit_the_holdout_quantile_of_its_rank_once():
    from types import SimpleNamespace

    from llm_unlearn.train.monitor import TrainingMonitor

    # rows 0, 1: records of documents 0 and 1; rows 3, 4, 5: the documents 0, 1, 2 as forget rows
    mon = SimpleNamespace(
        unit_of={
            0: ("document", 0),
            1: ("document", 1),
            3: ("document", 0),
            4: ("document", 1),
            5: ("document", 2),
        },
        document_rows={3, 4, 5},
        q=0.5,
        spread=True,
        unit_q=None,
    )
    holdout = [float(k) for k in range(1, 9)]
    row: dict = {}
    active, caps = TrainingMonitor._gate(mon, [3.0, 1.0, 2.0], holdout, None, None, row)
    want_q = {("document", 1): 1 / 6, ("document", 2): 0.5, ("document", 0): 5 / 6}
    assert mon.unit_q == pytest.approx(want_q)
    tau = {u: cal.quantile(holdout, q) for u, q in want_q.items()}
    assert caps == pytest.approx({3: tau[("document", 0)], 4: tau[("document", 1)], 5: tau[("document", 2)]})
    assert row["tau_document"] == cal.quantile(holdout, 0.5)  # the kind's centre, logged as before
    # every unit is still below its own target: all pushed
    assert all(active.values())
    # later evaluations keep the ranks of the first, whatever the losses do now
    active, caps = TrainingMonitor._gate(mon, [1.0, 9.0, 4.0], holdout, None, None, {})
    assert mon.unit_q == pytest.approx(want_q)
    assert active == {0: True, 3: True, 1: False, 4: False, 5: True}
    # without spread every unit has the kind's quantile, as before
    mon.spread, mon.unit_q = False, None
    _, caps = TrainingMonitor._gate(mon, [3.0, 1.0, 2.0], holdout, None, None, {})
    assert set(caps.values()) == {cal.quantile(holdout, 0.5)} and mon.unit_q is None


def test_gate_refreshes_are_spaced_evenly_between_evaluations_and_never_on_one():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cfg = build_config(overrides={"calibration.gate_refresh": 4})
    cal_ = Calibrator(cfg, monitor=None, per_chunk_steps=[80, 48], interval="auto")
    cal_.active = {0: True}
    # chunk 1 of 2: an evaluation every 20 steps, 4 refreshes between them (every 4 steps)
    evals = [s for s in range(80) if cal_.due(s, 0)]
    refresh = [s for s in range(80) if cal_.gate_due(s, 0)]
    assert evals == [0, 20, 40, 60]
    assert refresh[:4] == [4, 8, 12, 16] and len(refresh) == 16
    assert not set(evals) & set(refresh)
    # the last chunk has 8 evaluations (every 6 steps): refreshes every step between them
    assert [s for s in range(12) if cal_.gate_due(s, 1)] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    # off: no refresh; nor before the first gate, nor without the gate
    for change in ({"calibration.gate_refresh": 0}, {"calibration.mode": "stop"}):
        other = Calibrator(build_config(overrides=change), None, [80, 48], "auto")
        other.active = {0: True}
        assert not any(other.gate_due(s, 0) for s in range(80))
    cal_.active = None
    assert not any(cal_.gate_due(s, 0) for s in range(80))


# ---------------------------------------------------------------- quality floors (calibration.retain_floor,
# calibration.forget_em_max): a candidate the user would accept


def _ev(step, proxy, forget_em=0.0, retain_em=1.0, retain_rougeL=1.0, auc=0.5):
    return {
        "step": step,
        "proxy": proxy,
        "forget_em": forget_em,
        "retain_em": retain_em,
        "retain_rougeL": retain_rougeL,
        "mia_auc": auc,
    }


def test_meets_floors_compares_with_the_start_and_the_forget_ceiling():
    start = _ev(0, 0.0, forget_em=1.0, retain_em=0.8, retain_rougeL=1.0)
    floors = {"retain_floor": 0.9, "forget_em_max": 0.2}
    assert cal.meets_floors(_ev(5, 0.9, forget_em=0.2, retain_em=0.72, retain_rougeL=0.9), start, **floors)
    assert not cal.meets_floors(
        _ev(5, 0.9, forget_em=0.2, retain_em=0.71, retain_rougeL=1.0), start, **floors
    )
    assert not cal.meets_floors(
        _ev(5, 0.9, forget_em=0.2, retain_em=0.8, retain_rougeL=0.89), start, **floors
    )
    assert not cal.meets_floors(_ev(5, 0.9, forget_em=0.21), start, **floors)
    # a metric not measured cannot fail it; floors off (0 and 1) accept everything
    assert cal.meets_floors({"step": 5, "proxy": 0.5}, start, **floors)
    assert cal.meets_floors(
        _ev(5, 0.9, forget_em=1.0, retain_em=0.0), start, retain_floor=0.0, forget_em_max=1.0
    )
    # a start with no retain knowledge (0): the floor is 0, met by anything
    assert cal.meets_floors(_ev(5, 0.9, retain_em=0.0), _ev(0, 0.0, retain_em=0.0), **floors)


def test_select_best_prefers_a_candidate_that_meets_the_floors():
    evs = [
        _ev(0, 0.0, forget_em=1.0),
        _ev(10, 0.95, retain_em=0.75),  # the best proxy, but retain fell to 0.75 x
        _ev(20, 0.90, forget_em=0.1),  # meets both floors
        _ev(30, 0.93, forget_em=0.4),  # forget EM above the ceiling
    ]
    idx, reason = cal.select_best(evs, retain_floor=0.9, forget_em_max=0.2)
    assert idx == 2 and "floors" in reason
    # without floors: the highest proxy, as before
    assert cal.select_best(evs)[0] == 1
    # no candidate meets them: the highest proxy, and the reason says so
    idx, reason = cal.select_best(evs[:2] + evs[3:], retain_floor=0.9, forget_em_max=0.2)
    assert idx == 1 and "no evaluation met" in reason


def test_candidate_key_orders_floors_first_then_proxy():
    start = _ev(0, 0.0, forget_em=1.0)
    key = lambda e: cal.candidate_key(e, start, retain_floor=0.9, forget_em_max=0.2)  # noqa: E731
    assert key(_ev(1, 0.5)) > key(_ev(2, 0.99, retain_em=0.5))
    assert key(_ev(1, 0.6)) > key(_ev(2, 0.5))
    assert key({"step": 3, "proxy": None}) is None


def test_the_calibrated_stop_waits_for_a_state_that_meets_the_floors():
    assert cal.should_stop(0.5, tolerance=0.05, last_chunk=True, meets_floors=False) is None
    assert cal.should_stop(0.5, tolerance=0.05, last_chunk=True, meets_floors=True).startswith("calibrated")
    # overshoot and all-gated-off stop whatever the floors say (more steps cannot help)
    assert cal.should_stop(0.3, tolerance=0.05, last_chunk=True, meets_floors=False).startswith("overshoot")
    assert cal.should_stop(0.9, tolerance=0.05, last_chunk=True, active_fraction=0.0, meets_floors=False)


def test_evaluations_are_denser_once_the_auc_is_near_one_half():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cal_ = Calibrator(build_config(overrides={"calibration.dense_near": 0.15}), None, [80, 48], "auto")
    assert [s for s in range(80) if cal_.due(s, 0)] == [0, 20, 40, 60]  # no evaluation yet: 4 a chunk
    cal_.evaluations = [{"mia_auc": 0.9}]
    assert [s for s in range(80) if cal_.due(s, 0)] == [0, 20, 40, 60]
    cal_.evaluations.append({"mia_auc": 0.64})  # within 0.15 of 0.5: 16 a chunk (every 5 steps)
    assert [s for s in range(80) if cal_.due(s, 0)] == list(range(0, 80, 5))
    assert cal_.every(1) == 2  # the last chunk: 32 instead of 8 (48 steps)
    cal_.evaluations.append({"mia_auc": 0.30})  # past the band again: the usual spacing
    assert cal_.every(0) == 20
    off = Calibrator(build_config(), None, [80, 48], "auto")
    off.evaluations = [{"mia_auc": 0.5}]
    assert off.every(0) == 20  # dense_near 0 (the default): off


def test_an_anchor_is_a_measured_state_that_did_not_overshoot_and_meets_the_floors():
    start = {"retain_em": 1.0, "retain_rougeL": 1.0, "forget_em": 1.0, "mia_auc": 1.0}
    floors = {"retain_floor": 0.9, "forget_em_max": 0.2}
    ok = {"mia_auc": 0.62, "retain_em": 1.0, "retain_rougeL": 0.95, "forget_em": 0.1}
    assert cal.is_anchor(ok, start, tolerance=0.05, **floors)
    # exactly at the overshoot line is not an overshoot; one ulp below is
    assert cal.is_anchor({**ok, "mia_auc": 0.45}, start, tolerance=0.05, **floors)
    assert not cal.is_anchor({**ok, "mia_auc": math.nextafter(0.45, 0)}, start, tolerance=0.05, **floors)
    assert not cal.is_anchor({**ok, "mia_auc": None}, start, tolerance=0.05, **floors)
    assert not cal.is_anchor({**ok, "mia_auc": float("nan")}, start, tolerance=0.05, **floors)
    assert not cal.is_anchor({**ok, "retain_em": 0.85}, start, tolerance=0.05, **floors)
    assert not cal.is_anchor({**ok, "forget_em": 0.25}, start, tolerance=0.05, **floors)
    assert cal.is_anchor({**ok, "forget_em": 0.25}, start, tolerance=0.05)  # no floors


def test_should_backtrack_on_an_overshoot_only_with_backtracks_left_and_an_anchor():
    kw = {"tolerance": 0.05, "left": 1, "anchored": True}
    assert cal.should_backtrack(0.40, **kw)
    assert not cal.should_backtrack(0.45, **kw)  # on the line: not an overshoot
    assert not cal.should_backtrack(0.55, **kw)
    assert not cal.should_backtrack(0.90, **kw)
    assert not cal.should_backtrack(None, **kw)
    assert not cal.should_backtrack(float("nan"), **kw)
    assert not cal.should_backtrack(0.40, **{**kw, "left": 0})
    assert not cal.should_backtrack(0.40, **{**kw, "anchored": False})


def test_the_overshoot_message_never_reads_as_a_number_below_itself():
    r = cal.should_stop(0.4499, tolerance=0.05, last_chunk=True)
    assert r.startswith("overshoot: MIA AUC 0.4499 < 0.4500")
    assert cal.should_stop(0.4, tolerance=0.05, last_chunk=True).startswith(
        "overshoot: MIA AUC 0.400 < 0.450"
    )
