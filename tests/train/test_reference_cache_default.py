"""The reference cache's default, ``auto``: full where the exact distributions fit the budget, else no
cache (top-k only on request), with one line saying which and why; and on every path the default
touches -- gradient accumulation, resume, ``accelerate`` with two processes -- a run with ``auto`` gives
the adapter of a run with ``off`` within the float16 cache's rounding.

Tolerance. ``auto`` stores the reference's log-probabilities ``log q`` in float16 (unit roundoff
``u = 2**-11``), so each stored value is off by at most ``u * |log q|`` and each ``q`` by a relative
``u * M`` at most, with ``M`` the largest ``|log q|`` stored (computed below from the base model, which
is the reference). The divergence and its gradient are sums of ``q``-weighted terms, so their relative
change is bounded by ``u * M`` too (Rényi alpha = 0.5 enters through ``q**(1-alpha)``: half of that).
Everything else in the step is identical (the forget rows' target log-probs are stored in float32).
Under plain SGD the adapter is the sum of its updates, so to first order
``||B_auto - B_off|| <= u * M * ||B_off||`` for every LoRA B matrix (they start at 0, so ``B_off`` is the
whole update). That is the bound asserted, with SGD (Adam would divide by running RMS values and
amplify the rounding of near-zero gradient entries, see test_reference_cache.py). Data parallelism
adds only summation-order rounding (float32, ~1e-7 relative), far below it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_unlearn.config import ObjectiveOptions, TrainOptions, build_config
from llm_unlearn.data.tokenize import tokenize_records
from llm_unlearn.train import cache_build, cache_mode, reference_source
from llm_unlearn.train.loop import run_unlearning

REPO = Path(__file__).resolve().parents[2]
DDP_CONFIG = REPO / "examples" / "accelerate" / "ddp.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"
U_FLOAT16 = 2.0**-11

# 30 forget rows -> 5 chunks of 6 forget + 6 retain rows; batch 4 with 2 accumulation steps
SETTINGS = {
    "data.add_eos": True,
    "schedule.chunk_size": 6,
    "schedule.retain_per_forget": 1,
    "schedule.epochs": 2,
    "train.batch_size": 4,
    "train.gradient_accumulation_steps": 2,
    "train.learning_rate": 0.2,
    "lora.r": 4,
    "lora.alpha": 16,
    "train.progress": False,
    "train.merge": False,
    "train.plots": False,
    "training_args": {"optim": "sgd"},
}
CLI_ARGS = ["--chunk-size", "6", "--retain-per-forget", "1", "--epochs", "2", "--batch-size", "4",
            "--grad-accum", "2", "--lr", "0.2", "--lora-r", "4", "--lora-alpha", "16", "--add-eos",
            "--no-progress", "--no-merge", "--no-plots", "--training-arg", "optim=sgd"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(world, out: Path, **over):
    base = {"model.name_or_path": str(world["model_dir"]), "data.data": str(world["data_dir"]),
            "train.output_dir": str(out), **SETTINGS}  # fmt: skip
    base.update(over)
    return build_config(overrides=base)


def _lora_b(out: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    return {k: v for k, v in state.items() if "lora_B" in k}


def _max_abs_log_q(world) -> float:
    """M: the largest |log q| the cache stores (the base model = the reference, on the retain rows'
    answer positions)."""
    tok, model = world["tokenizer"], world["make_model"]()
    rows = tokenize_records(tok, world["ds"].retain, add_eos=True)
    m = 0.0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            labels = torch.tensor(r["labels"])
            pos = (labels[1:] != -100).nonzero().flatten()
            logq = torch.log_softmax(model(input_ids=ids).logits[0, pos].float(), dim=-1)
            m = max(m, float(logq.abs().max()))
    return m


def _assert_within_fp16_bound(auto: Path, off: Path, bound: float) -> float:
    a, b = _lora_b(auto), _lora_b(off)
    assert a.keys() == b.keys() and a
    worst = 0.0
    for k in a:
        size = float(b[k].norm())
        assert size > 0, k  # it trained
        rel = float((a[k] - b[k]).norm()) / size
        worst = max(worst, rel)
        assert rel <= bound, (k, rel, bound)
    return worst


@pytest.fixture(scope="module")
def bound(tiny_world) -> float:
    return U_FLOAT16 * _max_abs_log_q(tiny_world)


@pytest.fixture(scope="module")
def off_run(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refcache") / "off"
    run_unlearning(
        _cfg(tiny_world, out, **{"train.reference_cache": "off"}),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    return out


# ----------------------------------------------------------------------------- the choice
def test_auto_is_the_default_and_chooses_full_or_off_never_topk():
    assert TrainOptions().reference_cache == "auto"
    rows = [
        {"labels": [-100, -100, 5, 6, 7], "is_forget": False},
        {"labels": [-100, 4, 5], "is_forget": True},
    ]
    obj = ObjectiveOptions()  # Rényi over the vocabulary: 3 retain answer tokens need 3 x V values
    mode, why = cache_mode.choose_mode("auto", obj, rows, 1000, "float16", 6000 / 2**30)
    assert mode == "full" and "fit the budget" in why and "3 retain answer tokens" in why
    mode, why = cache_mode.choose_mode("auto", obj, rows, 1001, "float16", 6000 / 2**30)
    assert mode == "off" and "do not fit" in why and "topk" in why  # the approximation stays opt-in
    assert cache_mode.choose_mode("topk", obj, rows, 10**6, "float16", 1e-9)[0] == "topk"
    assert cache_mode.choose_mode("off", obj, rows, 10, "float16", 8)[0] == "off"
    # one float per token: always fits
    legacy = ObjectiveOptions(retain_divergence="token_renyi_legacy")
    assert cache_mode.choose_mode("auto", legacy, rows, 10**9, "float16", 1e-9)[0] == "full"
    none = ObjectiveOptions(method="gradient_ascent")
    assert cache_mode.choose_mode("auto", none, rows, 10, "float16", 8) == (
        "off",
        "the objective uses no reference model",
    )


def test_auto_beyond_the_budget_runs_without_a_cache(tiny_world, tmp_path, capsys):
    n = cache_build.BUILD_COUNT
    over = {"train.reference_cache_budget_gib": 1e-9, "schedule.epochs": 1}
    run_unlearning(
        _cfg(tiny_world, tmp_path / "r", **over),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    lines = _mode_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        "reference cache: off (auto: the exact distributions do not fit"
    )
    assert cache_build.BUILD_COUNT == n


# ----------------------------------------------------------------------------- the paths it touches
def test_auto_with_gradient_accumulation_gives_the_adapter_of_off(
    tiny_world, off_run, bound, tmp_path, capsys
):
    n = cache_build.BUILD_COUNT
    run_unlearning(_cfg(tiny_world, tmp_path / "auto"), model=tiny_world["make_model"](),
                   tokenizer=tiny_world["tokenizer"])  # fmt: skip
    assert cache_build.BUILD_COUNT == n + 1  # the default built a cache
    lines = _mode_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("reference cache: full (auto: the exact distributions fit")
    assert 1e-4 < bound < 0.05  # M between 0.2 and 100: a bound that can fail
    worst = _assert_within_fp16_bound(tmp_path / "auto", off_run, bound)
    print(f"gradient accumulation: max relative |B_auto - B_off| = {worst:.2e} (bound {bound:.2e})")


class _Kill(Exception):
    pass


def test_auto_resumed_gives_the_adapter_of_off(tiny_world, off_run, bound, tmp_path, monkeypatch):
    import llm_unlearn.train.checkpoint as run_mod

    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        if a[2] == 2:
            raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        run_unlearning(_cfg(tiny_world, tmp_path / "res"), model=tiny_world["make_model"](),
                       tokenizer=tiny_world["tokenizer"])  # fmt: skip
    assert (tmp_path / "res" / reference_source.CACHE_DIRNAME / "header.json").is_file()
    n = cache_build.BUILD_COUNT
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    run_unlearning(_cfg(tiny_world, tmp_path / "res"), model=tiny_world["make_model"](),
                   tokenizer=tiny_world["tokenizer"])  # fmt: skip
    assert cache_build.BUILD_COUNT == n  # the resumed run reused the cache
    worst = _assert_within_fp16_bound(tmp_path / "res", off_run, bound)
    print(f"resume: max relative |B_auto - B_off| = {worst:.2e} (bound {bound:.2e})")


def _mode_lines(capsys) -> list[str]:
    return [x for x in capsys.readouterr().out.splitlines() if x.startswith("reference cache: ")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_auto_under_accelerate_with_two_processes_gives_the_adapter_of_off(
    tiny_world, off_run, bound, tmp_path
):
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                           "MASTER_PORT", "LOCAL_WORLD_SIZE")}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )  # this checkout
    cmd = [str(ACCELERATE), "launch", "--config_file", str(DDP_CONFIG), "--num_processes", "2",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), "-m", "llm_unlearn",
           "train", "--model", str(tiny_world["model_dir"]), "--data", str(tiny_world["data_dir"]),
           "--output-dir", str(out), *CLI_ARGS]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    logs = proc.stdout + proc.stderr
    assert logs.count("reference cache: full (auto:") == 1, logs[-3000:]  # rank 0 says it, once
    worst = _assert_within_fp16_bound(out, off_run, bound)
    print(f"accelerate: max relative |B_auto - B_off| = {worst:.2e} (bound {bound:.2e})")
