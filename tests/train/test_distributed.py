"""Data-parallel training with `accelerate launch` (two CPU processes, gloo) on the tiny model.

What is checked: the run completes, the NPO term goes down, only one process writes the outputs
(merge and plots included), the other rank ends cleanly, and the run equals a single-process run with
the same global batch.

Tolerances, derived (not measured). `trainer.global_term_scale` weights every loss term by its share of
the global batch, so the averaged DDP gradient is mathematically the single-process gradient; what is
left is float32 summation order (each process sums its own tokens, gloo then adds the two halves).
The classical bound for a sum of n float32 terms is |fl(s) - s| <= n * u * sum|x|, u = 2**-24. A
gradient element of a LoRA weight is the end of a chain of sums: the vocabulary in the log-softmax
(V), per layer the hidden and MLP widths and the attention span (d + I + T), the tokens of the batch
(B * T), and clipping's norm over all P adapter elements: n_eff = V + L*(d + I + T) + B*T + P.
- Under SGD an update is linear in the gradient, so the two adapters' relative difference grows at
  most by n_eff * u per step: after S steps, RTOL = S * n_eff * u (about 2e-2 here; curvature feedback
  lr * |H| << 1 is neglected). The losses logged at step s see adapters within the same bound.
  Without the weighting (a plain mean of per-process means) the adapters differed by 110 %: the check
  still separates right from wrong by far.
- Under Adam there is no such bound: Adam divides by sqrt(v) + 1e-8, so a gradient element that is
  zero up to rounding gets a step of about lr in a direction set by the rounding, and the adapters may
  differ by O(lr) per element on another CPU (6e-3 was seen on one). Adam is therefore compared through
  its loss trajectory: the first step (identical weights, only the forward sums differ) to
  n_fwd * u with n_fwd = V + L*(d + I + T) + B*T, and the whole trajectory through what Adam must
  keep: the same number of steps, every term finite, the NPO term falling in every chunk in both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_unlearn import cli

REPO = Path(__file__).resolve().parents[2]
DDP_CONFIG = REPO / "examples" / "accelerate" / "ddp.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"

pytestmark = pytest.mark.slow

U32 = 2.0**-24  # float32 unit roundoff
STEPS = 30  # 5 chunks x 3 batches x 2 epochs
BATCH = 4
SGD_LR = 0.5
ADAM_LR = 5e-3


def _reduction_lengths(world, n_adapter: int) -> tuple[int, int]:
    """(n_fwd, n_eff) of the module docstring for the tiny model and data of `world`."""
    cfg = json.loads((Path(world["model_dir"]) / "config.json").read_text())
    tok = world["tokenizer"]
    ds = world["ds"]
    longest = max(len(tok(r["input"] + " " + r["output"])["input_ids"]) + 1 for r in ds.forget + ds.retain)
    n_fwd = (
        cfg["vocab_size"]
        + cfg["num_hidden_layers"] * (cfg["hidden_size"] + cfg["intermediate_size"] + longest)
        + BATCH * longest
    )
    return n_fwd, n_fwd + n_adapter


def _train_args(world, out: Path, *extra: str, optim: str = "sgd") -> list[str]:
    # 30 forget rows -> 5 chunks of 6 forget + 6 retain rows = 3 global batches of 4 (2 per process):
    # every batch is full, so no process pads its last batch with repeated rows. SGD steps are at most
    # lr long (gradients clipped to norm 1), hence its larger lr.
    lr = SGD_LR if optim == "sgd" else ADAM_LR
    common = "--chunk-size 6 --retain-per-forget 1 --epochs 2 --batch-size 4 --lora-r 4 --lora-alpha 16"
    paths = ["--model", str(world["model_dir"]), "--data", str(world["data_dir"]), "--output-dir", str(out)]
    sgd = ["--training-arg", "optim=sgd"] if optim == "sgd" else []
    return [*paths, *common.split(), "--lr", str(lr), "--add-eos", "--no-progress", *sgd, *extra]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    }
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cmd(*train_args: str) -> list[str]:
    return [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(DDP_CONFIG),
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "llm_unlearn",
        "--quiet",
        "train",
        *train_args,
    ]


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def _history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]


def _sgd_rtol(world, adapter: dict, steps: int = STEPS) -> float:
    _, n_eff = _reduction_lengths(world, sum(v.numel() for v in adapter.values()))
    return steps * n_eff * U32


def _assert_close_adapters(world, a: dict, b: dict, passes: int = 1, steps: int = STEPS) -> None:
    """Relative difference of every adapter tensor (as a whole) within the SGD bound; per tensor and
    not per element, because an element whose sum cancels has no useful relative bound. `passes`:
    gradients computed per step (2 under SAM: g sets eps, g' the step; each adds its own rounding)."""
    assert a.keys() == b.keys()
    rtol = passes * _sgd_rtol(world, a, steps)
    assert rtol < 0.1  # the bound still means something
    for k in a:
        rel = float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-30))
        assert rel <= rtol, (k, rel, rtol)


@pytest.fixture(scope="module")
def single_run(tiny_world, tmp_path_factory) -> Path:
    """The reference under SGD: one process, the same global batch (in this process, one thread)."""
    out = tmp_path_factory.mktemp("ddp") / "single"
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out, "--no-merge", "--no-plots")]) == 0
    return out


@pytest.fixture(scope="module")
def single_run_adam(tiny_world, tmp_path_factory) -> Path:
    """The reference under Adam (the default optimizer)."""
    out = tmp_path_factory.mktemp("ddp") / "single_adam"
    assert (
        cli.main(
            ["--quiet", "train", *_train_args(tiny_world, out, "--no-merge", "--no-plots", optim="adamw")]
        )
        == 0
    )
    return out


def test_accelerate_ddp_matches_single_process(tiny_world, single_run, tmp_path):
    out = tmp_path / "ddp"
    t0 = time.time()
    proc = subprocess.run(
        _launch_cmd(*_train_args(tiny_world, out)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    took = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # logging and saving happen once: one summary line, one row per optimizer step, merge + plots done
    assert proc.stdout.count("done in") == 1, proc.stdout
    run = json.loads((out / "run.json").read_text())
    hist = _history(out)
    assert run["total_steps"] == 30 and len(hist) == 30
    assert [r["step"] for r in hist] == list(range(1, 31))
    assert (out / "model" / "model.safetensors").is_file() and (out / "plots" / "losses.png").is_file()
    assert not (out / "checkpoint").exists()
    assert run["config"]["train"]["batch_size"] == 4  # the global batch, as given
    # the NPO term goes down within the chunks (second epoch of every chunk vs its first)
    first = [r["npo"] for r in hist if r["epoch"] <= 1.0]
    second = [r["npo"] for r in hist if r["epoch"] > 1.0]
    assert sum(second) / len(second) < sum(first) / len(first) - 0.05
    # the same adapter and losses as one process with the whole batch (SGD: the bound of the docstring)
    _assert_close_adapters(tiny_world, _adapter(single_run), _adapter(out))
    rtol = _sgd_rtol(tiny_world, _adapter(single_run))
    for a, b in zip(_history(single_run), hist):
        assert b["loss"] == pytest.approx(a["loss"], rel=rtol), (a, b)
        assert b["npo"] == pytest.approx(a["npo"], rel=rtol), (a, b)
    print(f"accelerate DDP run (2 processes): {took:.1f}s")


def _assert_same_adam_trajectory(world, single: list[dict], other: list[dict]) -> None:
    import math

    assert [r["step"] for r in other] == [r["step"] for r in single] == list(range(1, STEPS + 1))
    n_fwd, _ = _reduction_lengths(world, 0)
    # step 1: the same weights in both, only the forward sums are ordered differently
    assert other[0]["loss"] == pytest.approx(single[0]["loss"], rel=n_fwd * U32)
    assert other[0]["npo"] == pytest.approx(single[0]["npo"], rel=n_fwd * U32)
    for hist in (single, other):
        assert all(math.isfinite(r["loss"]) for r in hist)
        # unlearning progresses: the second pass over each chunk's batches has a lower NPO term than the
        # first (the check of the SGD test, here for both Adam runs)
        first = [r["npo"] for r in hist if r["epoch"] <= 1.0]
        second = [r["npo"] for r in hist if r["epoch"] > 1.0]
        assert sum(second) / len(second) < sum(first) / len(first) - 0.05, (first, second)


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _completed_chunks(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "state.json").read_text())["completed_chunks"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(tiny_world, single_run_adam, tmp_path):
    """A signal reaching one process only: both stop after the same step (the stop flag is all-reduced),
    nobody hangs, the last complete chunk is saved, and the run resumes -- here on one process. Under
    Adam (the default): compared by loss trajectory (see the module docstring)."""
    import psutil

    out = tmp_path / "ddp"
    proc = subprocess.Popen(
        _launch_cmd(*_train_args(tiny_world, out, "--no-merge", "--no-plots", optim="adamw")),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 200
        while _completed_chunks(out) < 1:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no chunk completed in time"
            time.sleep(0.02)
        at_kill = _completed_chunks(out)
        workers = [p for p in _children(proc.pid) if "llm_unlearn" in psutil.Process(p).cmdline()[:4]]
        ranks = {int(psutil.Process(p).environ().get("RANK", "-1")): p for p in workers}
        assert len(workers) == 2 and set(ranks) == {0, 1}, [psutil.Process(p).cmdline()[:4] for p in workers]
        os.kill(ranks[1], signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert at_kill < 5
    assert proc.returncode != 0, (at_kill, err[-3000:])
    assert "stopped: interrupted" in err, err[-3000:]
    assert "Run the same command again to resume" in err
    saved = _completed_chunks(out)
    assert 1 <= saved < 5
    # resume on a single process: the global batch is the same, so the configuration is too
    assert (
        cli.main(
            ["--quiet", "train", *_train_args(tiny_world, out, "--no-merge", "--no-plots", optim="adamw")]
        )
        == 0
    )
    _assert_same_adam_trajectory(tiny_world, _history(single_run_adam), _history(out))


# ----------------------------------------------------------------------------- examples/
def test_every_example_config_loads():
    from llm_unlearn.config import build_config

    paths = sorted((REPO / "examples" / "configs").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"default", "clausen2025", "atyaephyra", "ails-ntua", "semeval_7b"}
    for path in paths:
        cfg = build_config(path)
        if path.stem != "semeval_7b":  # a preset's file spells out that preset, nothing else
            assert cfg.preset == path.stem
            mine, preset = cfg.to_dict(), build_config(preset=path.stem).to_dict()
            for section in ("lora", "objective", "schedule", "train", "training_args"):
                assert mine[section] == preset[section], (path.name, section)


def test_every_accelerate_example_is_a_valid_accelerate_config():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted((REPO / "examples" / "accelerate").glob("*.yaml")):
        cfg = load_config_from_file(str(path))
        kinds[path.stem] = str(cfg.distributed_type).rsplit(".", 1)[-1]
        assert cfg.mixed_precision in (None, "no")  # llm-unlearn loads bf16 weights itself; no AMP on top
        ds_file = (cfg.deepspeed_config or {}).get("deepspeed_config_file")
        if ds_file:
            ds = json.loads((REPO / ds_file).read_text())
            assert ds["train_micro_batch_size_per_gpu"] == "auto"  # the Trainer fills in train.batch_size / N
            if ds["zero_optimization"]["stage"] == 3:  # rank 0 must be able to gather the weights to save
                assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        if cfg.fsdp_config:
            assert cfg.fsdp_config["fsdp_use_orig_params"] is True  # frozen + trainable weights in one unit
    assert kinds == {
        "ddp": "MULTI_GPU",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
        "fsdp": "FSDP",
    }


def test_slurm_scripts_are_valid_bash():
    scripts = sorted((REPO / "examples" / "slurm").glob("*.sbatch"))
    assert {p.stem for p in scripts} == {"train", "evaluate", "mmlu", "sample", "sweep"}
    for path in [*scripts, REPO / "examples" / "slurm" / "common.sh"]:
        subprocess.run(["bash", "-n", str(path)], check=True)
    for path in scripts:
        text = path.read_text()
        assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@120" in text
        assert "run_requeueable" in text


def test_train_sbatch_requeues_before_the_time_limit_and_resumes(tiny_world, single_run_adam, tmp_path):
    """train.sbatch run by bash outside Slurm: the time-limit signal (USR1 to the batch shell) stops the
    run after its current step (forwarded as SIGTERM), the job asks to be requeued (a stub scontrol),
    and the requeued start of the same script resumes and ends with the uninterrupted adapter."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (stub / "scontrol").chmod(0o755)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "data: {add_eos: true}\nlora: {r: 4, alpha: 16}\n"
        "schedule: {chunk_size: 6, retain_per_forget: 1, epochs: 2}\ntrain: {learning_rate: 5.0e-3}\n"
    )
    out = tmp_path / "run"
    env = _env()
    env.update(
        PATH=f"{stub}:{Path(sys.executable).parent}:{env.get('PATH', '')}",
        SLURM_SUBMIT_DIR=str(REPO),
        SLURM_JOB_ID="4242",
        VENV=str(Path(sys.executable).parent.parent),
        GPUS="1",
        MODEL=str(tiny_world["model_dir"]),
        DATA=str(tiny_world["data_dir"]),
        SPLIT="",
        CONFIG=str(cfg),
        OUT=str(out),
        BATCH_SIZE="4",
        EXTRA_ARGS="--no-plots --no-merge",
    )
    script = str(REPO / "examples" / "slurm" / "train.sbatch")
    proc = subprocess.Popen(
        ["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    try:
        deadline = time.time() + 200
        while _completed_chunks(out) < 1:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGUSR1)  # what --signal=B:USR1@120 does
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    assert "stopped: interrupted" in log and "requeueing job 4242" in log, log[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert 1 <= _completed_chunks(out) < 5
    # the requeued job starts the same script again
    done = subprocess.run(
        ["bash", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]  # no second requeue
    # one process both times, the same float32 operations in the same order: bit-identical in
    # principle; atol 1e-6 (~64 ulp of the largest adapter weights, ~0.2) only forgives a library
    # choosing another kernel after the restart, and is far below one Adam step (lr 5e-3)
    a, b = _adapter(single_run_adam), _adapter(out)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["pdu+sam", "simnpo"])
def test_methods_with_state_or_sequence_terms_match_single_process(tiny_world, tmp_path, method):
    """PDU keeps a multiplier updated from the retain NLL every step (all-reduced, so every process keeps
    the same one; no warm-up here, so it moves); SimNPO is a mean over forget *rows*; SAM (`--sam-rho`,
    here on PDU: one launch less) takes eps from the norm of the global gradient: all match one process
    with the whole batch."""
    extra = {"pdu+sam": ["--pdu-dual-warmup", "0", "--sam-rho", "0.05"]}.get(method, [])
    name = method.split("+")[0]
    args = ["--method", name, "--divergence-weight", "0", "--no-merge", "--no-plots", *extra]
    single = tmp_path / "single"
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, single, *args)]) == 0
    out = tmp_path / "ddp"
    proc = subprocess.run(
        _launch_cmd(*_train_args(tiny_world, out, *args)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    passes = 2 if "sam" in method else 1
    _assert_close_adapters(tiny_world, _adapter(single), _adapter(out), passes)
    rtol = passes * _sgd_rtol(tiny_world, _adapter(single))
    for a, b in zip(_history(single), _history(out)):
        assert b["loss"] == pytest.approx(a["loss"], rel=rtol), (a, b)
        if name == "pdu":
            assert b["pdu_dual"] == pytest.approx(a["pdu_dual"], rel=rtol), (a, b)
