"""benchmarks/mia_repartition.py: the graded-minus-holdout AUC gap under random splits of the non-members,
and the committed measurement of the real slice's kept states says what its runs say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "benchmarks" / "results" / "diagnostics" / "quality-real-54-96-repartition.json"


def _module():
    return load("mia_repartition")


def test_a_split_by_hand():
    # one member at loss 1 against non-members 0 and 2: graded {0} -> AUC 0 vs {2} -> 1: gap -1; or +1
    gaps = _module().repartition_gaps([1.0], [0.0, 2.0], 1, draws=200)
    assert set(gaps) == {-1.0, 1.0} and gaps == sorted(gaps)


def test_equal_losses_leave_no_gap_and_bad_sizes_are_refused():
    mod = _module()
    assert set(mod.repartition_gaps([1.0, 2.0], [3.0] * 10, 4, draws=50)) == {0.0}
    for n in (0, 10):
        with pytest.raises(ValueError, match="n_graded"):
            mod.repartition_gaps([1.0], [3.0] * 10, n)


def test_the_counted_gaps_are_the_aucs_of_the_same_splits():
    # the half-wins shortcut against two AUCs a draw (sklearn's), with ties among the losses
    import random

    from llm_unlearn.evaluation.metrics.mia import loss_auc

    mod = _module()
    rng = random.Random(3)
    members = [rng.choice([0.5, 1.0, 1.5, 2.0]) + rng.random() * (i % 2) for i in range(9)]
    pool = [rng.choice([1.0, 1.5, 2.5]) + rng.random() * (i % 3 == 0) for i in range(23)]
    got = mod.repartition_gaps(members, pool, 7, draws=300, seed=5)
    draw = random.Random(5)
    want = []
    for _ in range(300):
        chosen = set(draw.sample(range(len(pool)), 7))
        g = [pool[i] for i in chosen]
        r = [pool[i] for i in range(len(pool)) if i not in chosen]
        want.append(loss_auc(members, g) - loss_auc(members, r))
    assert got == pytest.approx(sorted(want), abs=1e-12)
    assert mod.split_gap(members, pool[:7], pool[7:]) == pytest.approx(
        loss_auc(members, pool[:7]) - loss_auc(members, pool[7:]), abs=1e-12
    )


def test_where_reads_the_sorted_draws():
    w = _module().where([float(i) for i in range(100)], 9.0)
    assert (w["q05"], w["q50"], w["q95"], w["share_at_or_below"]) == (5.0, 50.0, 95.0, 0.10)


def test_the_committed_measurement_is_consistent():
    d = json.loads(RESULT.read_text())
    for r in d["runs"]:
        assert r["gap"] == pytest.approx(r["auc_graded"] - r["auc_holdout"], abs=1e-12)
        m, g, h = r["sizes"]
        # the pooled AUC is the size-weighted mean of the two (the same members, disjoint non-members)
        assert r["auc_pooled"] == pytest.approx(
            (g * r["auc_graded"] + h * r["auc_holdout"]) / (g + h), abs=1e-12
        )
        rp = r["repartitioned_gap"]
        assert rp["q05"] <= rp["q50"] <= rp["q95"] and 0.0 <= rp["share_at_or_below"] <= 1.0
