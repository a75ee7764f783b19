"""Sharded training: `accelerate launch --config_file examples/accelerate/fsdp.yaml` on two CPU processes.

accelerate does not shard on CPU (its FSDP switch is for accelerators), so llm-unlearn applies FSDP2
(`fully_shard`) itself (train/sharding.py). Checked here: FSDP2 is really active (the log line, and
run.json's record: every LoRA tensor a DTensor at the end of training, the trained model not wrapped
in DDP), the adapter equals the one-process run, and a run stopped after a chunk resumes under FSDP
to the same adapter.

Tolerance: the one of tests/train/test_distributed.py (its docstring derives it), unchanged. FSDP2
all-gathers the weights exactly (a copy) and reduce-scatters the gradients as their average over the
processes, as DDP all-reduces them; `trainer.global_term_scale` makes that average the gradient of the
global batch. What remains is float32 summation order: under SGD, RTOL = STEPS * n_eff * u per adapter
tensor (`_sgd_rtol`), the same chain of sums as under DDP (the reduce-scatter adds the same two halves).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_distributed as ddp  # noqa: E402  (the DDP test's helpers and its derived tolerance)

from llm_unlearn import cli  # noqa: E402

FSDP_CONFIG = ddp.REPO / "examples" / "accelerate" / "fsdp.yaml"

pytestmark = pytest.mark.slow


def _fsdp_cmd(*train_args: str) -> list[str]:
    cmd = ddp._launch_cmd(*train_args)
    cmd[cmd.index(str(ddp.DDP_CONFIG))] = str(FSDP_CONFIG)
    return cmd


def _args(world, out: Path) -> list[str]:
    return ddp._train_args(world, out, "--no-merge", "--no-plots")


@pytest.fixture(scope="module")
def single_run(tiny_world, tmp_path_factory) -> Path:
    """One process, the same global batch, SGD (the DDP test's reference run)."""
    out = tmp_path_factory.mktemp("fsdp") / "single"
    assert cli.main(["--quiet", "train", *_args(tiny_world, out)]) == 0
    return out


def _assert_fsdp_was_active(out: Path, stdout: str) -> None:
    assert "FSDP2: sharded 3 modules over 2 processes" in stdout, stdout  # 2 decoder layers + the model
    rec = json.loads((out / "run.json").read_text())["sharding"]
    assert rec["processes"] == 2 and rec["modules"] == 3
    assert rec["trainable_tensors"] > 0 and rec["trainable_dtensors"] == rec["trainable_tensors"], rec
    assert "DistributedDataParallel" not in rec["wrapped_model"], rec


def _assert_matches_single(world, single: Path, out: Path) -> float:
    a, b = ddp._adapter(single), ddp._adapter(out)
    ddp._assert_close_adapters(world, a, b)
    rtol = ddp._sgd_rtol(world, a)
    hist, ref = ddp._history(out), ddp._history(single)
    assert [r["step"] for r in hist] == list(range(1, ddp.STEPS + 1))
    for x, y in zip(ref, hist):
        assert y["loss"] == pytest.approx(x["loss"], rel=rtol), (x, y)
        assert y["npo"] == pytest.approx(x["npo"], rel=rtol), (x, y)
    return max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)


def test_fsdp_on_cpu_matches_single_process(tiny_world, single_run, tmp_path):
    out = tmp_path / "fsdp"
    t0 = time.time()
    proc = subprocess.run(
        _fsdp_cmd(*_args(tiny_world, out)),
        env=ddp._env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.count("done in") == 1, proc.stdout
    _assert_fsdp_was_active(out, proc.stdout)
    assert not (out / "model").exists()  # no merged model from sharded weights: `llm-unlearn merge` after
    rel = _assert_matches_single(tiny_world, single_run, out)
    print(f"FSDP2 run (2 CPU processes): {time.time() - t0:.1f}s, adapter rel. diff {rel:.2e}")


def test_fsdp_run_stopped_after_a_chunk_resumes_under_fsdp(tiny_world, single_run, tmp_path):
    import psutil

    out = tmp_path / "fsdp"
    proc = subprocess.Popen(
        _fsdp_cmd(*_args(tiny_world, out)),
        env=ddp._env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 200
        while ddp._completed_chunks(out) < 1:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no chunk completed in time"
            time.sleep(0.02)
        workers = [p for p in ddp._children(proc.pid) if "llm_unlearn" in psutil.Process(p).cmdline()[:4]]
        ranks = {int(psutil.Process(p).environ().get("RANK", "-1")): p for p in workers}
        os.kill(ranks[1], signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped: interrupted" in err, err[-3000:]
    saved = ddp._completed_chunks(out)
    assert 1 <= saved < 5, saved
    # the same command again: it continues after the saved chunks, sharded again
    proc = subprocess.run(
        _fsdp_cmd(*_args(tiny_world, out)),
        env=ddp._env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_fsdp_was_active(out, proc.stdout)
    run = json.loads((out / "run.json").read_text())
    assert [c["chunk"] for c in run["chunks"]] == [1, 2, 3, 4, 5], run["chunks"]
    rel = _assert_matches_single(tiny_world, single_run, out)
    print(f"FSDP2 resumed after {saved} chunk(s): adapter rel. diff {rel:.2e}")
