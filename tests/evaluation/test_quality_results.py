"""Every number of benchmarks/results/quality-cpu.json is recomputable from the committed evaluation
directories with the official formulas (the model outputs and member/non-member losses are the data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn.evaluation.metrics.mia import loss_auc
from llm_unlearn.evaluation.metrics.semeval import semeval_results

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "quality-cpu.json"
# the calibrated default re-measured with the gated defaults, now and as first chosen (same slice, target)
GATED = REPO / "benchmarks" / "results" / "quality-gated-default.json"
GATED_V1 = REPO / "benchmarks" / "results" / "quality-gated-v1.json"
SEEDS = (
    REPO / "benchmarks" / "results" / "quality-seeds-cpu.json"
)  # the default over seeds (quality_seeds.py)
# measured before (NPO beta fixed at 0.5): the tiny slice as first sized (24 + 48) and SmolLM2; kept
DIAG = REPO / "benchmarks" / "results" / "diagnostics"
FIRST = (
    DIAG / "quality-cpu-24-48.json",
    DIAG / "quality-seeds-24-48.json",
    DIAG / "quality-smollm2-beta0.5.json",
    # SmolLM2 with beta from the gap, before calibration.extend read the loss gap (it did not extend)
    DIAG / "quality-smollm2-beta-from-gap.json",
    # SmolLM2's current default again with the target's weights moved one ulp (another CPU imitated)
    DIAG / "quality-smollm2-extend-gap-ulp.json",
    # SmolLM2 with the loss-gap extension, before the unlearning step ran one forward per length group
    DIAG / "quality-smollm2-extend-gap.json",
    # SmolLM2 with one forward per length group (the previous entries of quality-cpu.json, with trajectory)
    DIAG / "quality-smollm2-length-groups.json",
    # SmolLM2 with the retain floor held in training (calibration.retain_guard): quality-cpu.json's entry
    DIAG / "quality-smollm2-retain-guard.json",
    # the tiny model's plain default with the retain guard, on a target fine-tuned on the AVX-512 CPU
    DIAG / "quality-tiny-retain-guard.json",
)


def _entries(path=RESULTS):
    if not path.is_file():
        return []
    return json.loads(path.read_text())["runs"]


@pytest.mark.parametrize(
    "entry",
    _entries()
    + _entries(GATED)
    + _entries(GATED_V1)
    + _entries(SEEDS)
    + [e for f in FIRST for e in _entries(f)],
    ids=lambda e: f"{e['model']}/{e['run']}/{e['evaluation_dir']}",
)
def test_quality_entry_recomputes_from_its_evaluation_directory(entry):
    d = REPO / entry["evaluation_dir"]
    gens = [json.loads(x) for x in (d / "generations.jsonl").read_text().splitlines() if x.strip()]
    mia = [json.loads(x) for x in (d / "mia.jsonl").read_text().splitlines() if x.strip()]
    auc = loss_auc(
        [r["nll"] for r in mia if r["set"] == "member"], [r["nll"] for r in mia if r["set"] == "nonmember"]
    )
    # the raw outputs only: scores are recomputed from expected and generated text
    raw = [{k: r[k] for k in ("id", "task", "split", "expected_output", "model_output")} for r in gens]
    res = semeval_results(raw, mia_auc=auc)
    f, r = res["forget-set"], res["retain-set"]
    # the same float operations on the same inputs as when the benchmark wrote them: equal to rounding
    # of a float64 mean over at most a few hundred items (1e-12 is far above it)
    got = {
        "task_aggregate": res["harmonic-mean-task-aggregate"],
        "mia_auc": res["mia_loss_acc"],
        "mia_score": res["mia_final_score"],
        "forget_em": f["overall-knowledge-score"],
        "forget_rougeL": f["overall-regurgitation-score"],
        "retain_em": r["overall-knowledge-score"],
        "retain_rougeL": r["overall-regurgitation-score"],
    }
    for key, value in got.items():
        assert entry[key] == pytest.approx(value, abs=1e-12), key
    stored = json.loads((d / "evaluation_results.json").read_text())
    assert stored["harmonic-mean-task-aggregate"] == pytest.approx(
        res["harmonic-mean-task-aggregate"], abs=1e-12
    )


def test_the_quality_file_has_every_preset_and_the_calibrated_default():
    runs = {e["run"] for e in _entries()}
    if not runs:
        pytest.skip(f"{RESULTS} not committed")
    assert {
        "target",
        "default-uncalibrated",
        "clausen2025",
        "atyaephyra",
        "ails-ntua",
        "default-calibrated",
    } <= runs
