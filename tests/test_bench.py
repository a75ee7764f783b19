"""The benchmark harness on the tiny shape: schema, and the variants' step-0 losses agree where they
compute the same objective."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench_module():
    spec = importlib.util.spec_from_file_location("llm_unlearn_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_result(bench_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny-cpu.json"
    result = bench_module.main(
        [
            "--shape",
            "tiny",
            "--steps",
            "2",
            "--eval",
            "quick",
            "--cache-dtype",
            "float32",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    return result, json.loads(out.read_text())


def test_json_schema(bench_module, tiny_result):
    result, saved = tiny_result
    assert saved["schema"] == bench_module.SCHEMA
    for key in (
        "shape",
        "shape_config",
        "device",
        "device_name",
        "dtype",
        "threads",
        "steps",
        "warmup",
        "variants",
        "ratios",
        "checks",
        "eval",
        "targets",
        "versions",
        "reference_cache",
        "gradient_checkpointing",
    ):
        assert key in saved, key
    assert saved["shape"] == "tiny" and saved["device"] == "cpu" and saved["threads"] == 1
    assert set(saved["variants"]) == set(bench_module.VARIANTS)
    for name, row in saved["variants"].items():
        assert row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 and len(row["ms_steps"]) == 2, name
        assert row["cpu_ms_per_step"] > 0 and row["ms_min"] <= row["ms_per_step"], name
        mem = row["memory"]
        assert mem["saved_for_backward_bytes"] > 0 and mem["largest_vocab_tensor_bytes"] > 0, name
        assert "total" in row["loss_step0"]
    for name in (
        "ours/sft_floor",
        "ours_no_cache/sft_floor",
        "ours_no_divergence/sft_floor",
        "seed_style/ours",
    ):
        assert saved["ratios"][name] > 0 and saved["ratios_min"][name] > 0 and saved["ratios_cpu"][name] > 0
        assert saved["targets"][name]["met"] in (True, False)
    ev = saved["eval"]
    assert ev["items"] > 0 and ev["batched"]["items_per_s"] > 0 and ev["official_compat"]["items_per_s"] > 0
    assert isinstance(ev["scores_agree"], bool) and "harmonic-mean-task-aggregate" in ev["batched"]
    assert saved["reference_cache"]["mode"] == "full" and saved["reference_cache"]["dtype"] == "float32"
    assert "ours/sft_floor" in bench_module.format_table(result)


def test_step0_losses_agree_where_the_objective_is_the_same(tiny_result):
    _, saved = tiny_result
    loss = {v: row["loss_step0"] for v, row in saved["variants"].items()}
    # Tolerances (step-0 losses of order 1-10, float32): the float32 cache stores log-softmax values
    # rounded once more (~sqrt(V) * u * |logit| ~ 1e-5 with V=512, u=2**-24); gradient checkpointing
    # recomputes the same forward in the same order (a few ulp: 1e-6); the seed-style step builds the
    # full [B, T, V] logits and reduces in another order, over up to B*T*V ~ 1e5 terms (~sqrt(n) * u *
    # |loss| ~ 1e-4); dropping one term leaves the others' sums unchanged up to reordering (1e-5).
    # the cache (float32) changes nothing; checkpointing changes nothing
    assert loss["ours"]["total"] == pytest.approx(loss["ours_no_cache"]["total"], abs=1e-5)
    assert loss["ours_gc"]["total"] == pytest.approx(loss["ours"]["total"], abs=1e-6)
    # the seed-style step computes the same objective the slow way
    assert loss["seed_style"]["total"] == pytest.approx(loss["ours_no_cache"]["total"], abs=1e-4)
    for term in ("npo", "retain_nll", "divergence"):
        assert loss["seed_style"][term] == pytest.approx(loss["ours_no_cache"][term], abs=1e-4)
    # without the divergence the total lacks exactly that term (same NPO and NLL)
    assert loss["ours_no_divergence"]["npo"] == pytest.approx(loss["ours"]["npo"], abs=1e-5)
    assert loss["ours_no_divergence"]["total"] == pytest.approx(
        loss["ours"]["total"] - loss["ours"]["divergence"], abs=1e-5
    )
    # the loss memory saving that makes ours cheaper: no [B, T, V] logits
    mem = {v: row["memory"]["largest_vocab_tensor_bytes"] for v, row in saved["variants"].items()}
    assert mem["ours"] < mem["sft_floor"] and mem["ours"] < mem["seed_style"]
    assert (
        saved["variants"]["ours_gc"]["memory"]["saved_for_backward_bytes"]
        < saved["variants"]["ours"]["memory"]["saved_for_backward_bytes"]
    )


def test_committed_small_cpu_results_have_the_schema(bench_module):
    path = BENCH.parent / "results" / "small-cpu.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/small-cpu.json not generated yet (make bench)")
    saved = json.loads(path.read_text())
    assert saved["schema"] == bench_module.SCHEMA and saved["shape"] == "small" and saved["steps"] >= 10
    assert set(bench_module.VARIANTS) <= set(saved["variants"])
