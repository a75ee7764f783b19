"""The committed tuned leaderboard (benchmarks/results/leaderboard-cpu.json, `make leaderboard`): the same
trial budget for every method it holds, numbers consistent with each other, and the README's table made
from it."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "leaderboard-cpu.json"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def test_same_trial_budget_and_consistent_numbers(result):
    assert result["methods"] and "npo_rt_div" in result["methods"]
    for name, r in result["methods"].items():
        assert r["trials"]["complete"] + r["trials"]["pruned"] == result["trials_per_method"], name
        v = r["validation_proxy"]
        assert v["tuned"] >= v["default"], name  # the default is trial 0 of the same study
        assert r["best_options"]["objective.method"] == name
        assert math.isclose(
            r["cost_ratio"], r["sweep_seconds"] / r["default"]["unlearn_seconds"], rel_tol=0.02
        )
        for side in ("default", "tuned"):
            m = r[side]["metrics"]
            assert 0 <= m["task_aggregate"] <= 1 and 0 <= m["mia_auc"] <= 1
            assert math.isclose(m["mia_score"], 1 - 2 * abs(m["mia_auc"] - 0.5), abs_tol=1e-9)


def test_readme_table_is_the_json(result):
    spec = importlib.util.spec_from_file_location("leaderboard_bench", REPO / "benchmarks" / "leaderboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert mod.readme_table(result) in text, (
        "paste `python benchmarks/leaderboard.py --table` into the README"
    )
