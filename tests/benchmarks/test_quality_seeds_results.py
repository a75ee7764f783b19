"""The real slice's distribution over seeds (benchmarks/quality_seeds.py): its summary is what its runs say,
every run recomputes from its committed evaluation directory (tests/evaluation/test_quality_results.py),
and the README reports the file's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "benchmarks" / "results" / "quality-seeds-cpu.json"


def _module():
    return load("quality_seeds")


pytestmark = pytest.mark.skipif(not RESULT.is_file(), reason="quality-seeds-cpu.json not committed")


def test_the_summary_is_recomputed_from_the_runs():
    d = json.loads(RESULT.read_text())
    runs = d["runs"]
    # every seed under both conditions (the issue asks for 5 seeds: see the file's note for how many ran)
    assert len(runs) >= 6 and len({(r["seed"], r["perturb"]) for r in runs}) == len(runs)
    assert all(
        {r["perturb"] for r in runs if r["seed"] == s} == {"none", "ulp"} for s in {r["seed"] for r in runs}
    )
    for r in runs:
        assert r["abs_auc_dev"] == pytest.approx(abs(r["mia_auc"] - 0.5), abs=1e-12)
        assert r["mia_score"] == pytest.approx(1 - 2 * abs(r["mia_auc"] - 0.5), abs=1e-12)
        assert (REPO / r["evaluation_dir"] / "mia.jsonl").is_file()
    assert d["summary"] == _module().summarize(runs)


def test_the_readme_reports_the_distribution():
    s = json.loads(RESULT.read_text())["summary"]
    text = " ".join((REPO / "README.md").read_text().split())
    for part in (
        f"task aggregate {s['task_aggregate']['min']:.3f} / {s['task_aggregate']['median']:.3f} / "
        f"{s['task_aggregate']['max']:.3f}",
        f"MIA score {s['mia_score']['min']:.3f} / {s['mia_score']['median']:.3f} / {s['mia_score']['max']:.3f}",
        f"|AUC − 0.5| median {s['abs_auc_dev']['median']:.3f}, worst {s['abs_auc_dev']['worst']:.3f}",
    ):
        assert part in text, part


def test_a_run_keeps_its_calibration_trajectory(tmp_path):
    """Each run's entry holds what its calibration saw at every evaluation (from run.json), bisected
    states marked, so that a distribution can be read without the run directories."""
    mod = _module()
    evs = [
        {"step": 0, "chunk": 1, "mia_auc": 1.0, "proxy": 0.0, "forget_em": 1.0, "_unit": [1, 2]},
        {"step": 40, "chunk": 1, "mia_auc": 0.55, "proxy": 0.9, "active_fraction": 0.5, "bisect": {"t": 0.5}},
    ]
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"calibration": {"evaluations": evs}}))
    assert mod.trajectory(run) == [
        {"step": 0, "chunk": 1, "mia_auc": 1.0, "proxy": 0.0},
        {"step": 40, "chunk": 1, "mia_auc": 0.55, "proxy": 0.9, "active_fraction": 0.5, "bisect": True},
    ]
    assert mod.trajectory(tmp_path / "missing.json") is None
    run.write_text(json.dumps({"calibration": None}))
    assert mod.trajectory(run) == []
