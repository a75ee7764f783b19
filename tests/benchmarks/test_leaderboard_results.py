"""The committed tuned leaderboards (benchmarks/results/leaderboard*-cpu.json, `make leaderboard`): the
same trial budget for every method each holds, numbers consistent with each other (with several held-out
seeds: every run, and the medians shown), and the README's table made from each."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from benchmark_scripts import load

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
FILES = ("leaderboard-cpu.json", "leaderboard30-cpu.json", "leaderboard30-confirmed-cpu.json")


@pytest.fixture(scope="module", params=FILES)
def result(request) -> dict:
    return json.loads((RESULTS / request.param).read_text(encoding="utf-8"))


def _consistent(m: dict) -> None:
    assert 0 <= m["task_aggregate"] <= 1 and 0 <= m["mia_auc"] <= 1
    assert math.isclose(m["mia_score"], 1 - 2 * abs(m["mia_auc"] - 0.5), abs_tol=1e-9)


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
            runs = r[side].get("runs")
            if runs is None:  # one held-out run
                _consistent(r[side]["metrics"])
                continue
            assert len(runs) == result["heldout_seeds"] == len(r[side]["seeds"]), name
            for m in runs:
                _consistent(m)
            for key, value in r[side]["metrics"].items():  # each metric's median over the seeds
                vals = [m[key] for m in runs if m[key] is not None]
                assert value == (pytest.approx(statistics.median(vals)) if vals else None), (name, key)
        confirmed = r.get("validation_runs")
        if confirmed:  # the proxies are the means of the confirmed runs
            assert v["tuned"] == pytest.approx(statistics.fmean(confirmed["tuned"]))
            assert v["default"] == pytest.approx(statistics.fmean(confirmed["default"]))
            assert len(confirmed["tuned"]) == 1 + result["confirm"]["seeds"]


def test_readme_table_is_the_json(result):  # every committed leaderboard has its table in the README
    mod = load("leaderboard")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert mod.readme_table(result) in text, (
        "paste `python benchmarks/leaderboard.py --table` into the README"
    )
