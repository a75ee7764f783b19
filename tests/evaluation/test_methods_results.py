"""The committed method comparison (benchmarks/results/methods-cpu.json, `make methods`) covers every
registered method and its numbers are consistent with the evaluator's own score objects."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from llm_unlearn.train.methods import OBJECTIVES

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "methods-cpu.json"
UNIT = ("forget_em", "forget_rougeL", "retain_em", "retain_rougeL", "mia_auc", "mia_score", "task_aggregate")


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def _ok(result):
    return {n: m for n, m in result["methods"].items() if "metrics" in m}


def test_covers_every_registered_method(result):
    missing = set(OBJECTIVES) - set(result["methods"])
    assert not missing, f"rerun `make methods`: no result for {sorted(missing)}"
    assert "npo_rt_div" in _ok(result)


def test_top_level_records_the_setup(result):
    for key in ("machine", "date", "budget", "notes", "before"):
        assert result[key]
    assert result["machine"]["torch"] and result["machine"]["cpu"]
    assert result["budget"]["optimizer_steps"] > 0
    assert result["budget"]["calibration"].startswith("off")


def test_same_budget_for_every_method(result):
    steps = result["budget"]["optimizer_steps"]
    for name, m in _ok(result).items():
        assert m["steps"] == m["total_steps"] == steps, name
        assert m["options"]["objective"]["method"] == name


def _check_metrics(x: dict, semeval: dict) -> None:
    for key in UNIT:
        assert x[key] is not None and 0.0 <= x[key] <= 1.0, key
    # recomputed from the evaluator's score objects
    assert x["forget_em"] == semeval["forget-set"]["overall-knowledge-score"]
    assert x["forget_rougeL"] == semeval["forget-set"]["overall-regurgitation-score"]
    assert x["retain_em"] == semeval["retain-set"]["overall-knowledge-score"]
    assert x["retain_rougeL"] == semeval["retain-set"]["overall-regurgitation-score"]
    assert x["mia_auc"] == semeval["mia_loss_acc"] == semeval["mia_attacks"]["loss"]
    assert math.isclose(x["mia_score"], 1 - 2 * abs(x["mia_auc"] - 0.5), abs_tol=1e-9)
    terms = semeval["aggregated-terms"]
    assert len(terms) == 12 and all(0.0 <= t <= 1.0 for t in terms)
    expected = 0.0 if min(terms) == 0 else statistics.harmonic_mean(terms)
    assert math.isclose(x["task_aggregate"], expected, abs_tol=1e-9)
    # the terms are the per-task scores: forget ones as 1 - x, retain ones as they are
    tasks = sorted(k for k in semeval["forget-set"] if k.startswith("Task"))
    rebuilt = [
        (1 - s[t][k]) if split == "forget" else s[t][k]
        for split, s in (("forget", semeval["forget-set"]), ("retain", semeval["retain-set"]))
        for t in tasks
        for k in ("regurgitation-score", "knowledge-score")
    ]
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(rebuilt, terms))


def test_before_is_the_memorized_target(result):
    _check_metrics(result["before"], result["before_semeval"])
    assert result["before"]["forget_em"] >= 0.9 and result["before"]["retain_em"] >= 0.9


def test_every_method_numbers(result):
    for name, m in _ok(result).items():
        _check_metrics(m["metrics"], m["semeval"])
        assert m["unlearn_seconds"] > 0 and m["eval_seconds"] > 0, name
        assert any(k.startswith("mean_") for k in m["terms_final"]), name


def test_default_method_forgets_and_keeps_retain(result):
    m = result["methods"]["npo_rt_div"]["metrics"]
    before = result["before"]
    assert m["forget_em"] <= before["forget_em"] - 0.5
    assert m["retain_em"] >= before["retain_em"] - 0.2
