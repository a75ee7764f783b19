"""The committed `make robustness` results agree with the recovery formula and cover every method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "robustness-cpu.json"


def test_committed_robustness_results_are_consistent():
    from llm_unlearn.attacks.recovery import recovery
    from llm_unlearn.train.methods import OBJECTIVES

    result = json.loads(RESULTS.read_text())
    assert list(result["methods"]) == list(OBJECTIVES)
    checked = 0
    for name, m in result["methods"].items():
        assert "error" not in m, name
        # the seconds are stored rounded to 0.01 and the ratio (of the unrounded ones) to 0.01
        sec, ev = m["suite_seconds"], m["evaluate_seconds"]
        bound = (sec + 0.005) / (ev - 0.005) - sec / ev + 0.005
        assert m["suite_over_evaluate"] == pytest.approx(sec / ev, abs=bound)
        for attack, table in m["recovery"].items():
            for metric, row in table.items():
                again = recovery(row["target"], row["unlearned"], row["attacked"])
                if row["recovery"] is None:
                    assert again["recovery"] is None and row["undefined"], (name, attack, metric)
                else:
                    assert again["recovery"] == pytest.approx(row["recovery"], abs=1e-12), (
                        name,
                        attack,
                        metric,
                    )
                checked += 1
        for s in m["timing"].values():
            assert s["seconds"] >= 0
    assert checked > 0
