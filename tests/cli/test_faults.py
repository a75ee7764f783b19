"""Faults: a killed, signalled or failing run loses nothing and leaves nothing half-written.

The runs are real `llm-unlearn train` processes on the tiny model (one thread each): 30 forget rows,
5 chunks of 6 forget + 6 retain rows, 6 optimizer steps per chunk, a fresh optimizer per chunk.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llm_unlearn.io_utils as io_utils
from llm_unlearn import cli

N_CHUNKS = 5
# The kill delay comes from a seeded generator, so that a failure can be replayed: rerun with
# LLM_UNLEARN_FAULT_SEED set to the seed its message names (another value draws another delay).
FAULT_SEED = int(os.environ.get("LLM_UNLEARN_FAULT_SEED", "0"))


def _train_args(world, out: Path) -> list[str]:
    return [
        "--model",
        str(world["model_dir"]),
        "--data",
        str(world["data_dir"]),
        "--output-dir",
        str(out),
        "--chunk-size",
        "6",
        "--retain-per-forget",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "5e-3",
        "--lora-r",
        "4",
        "--lora-alpha",
        "16",
        "--add-eos",
        "--no-progress",
        "--no-merge",
        "--no-plots",
    ]


def _cli_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "llm-unlearn"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "llm_unlearn"]
    return [*head, "--quiet", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _completed_chunks(out: Path) -> int:
    """The chunks a resume would find: DIR/checkpoint, or (killed between the two renames of its swap)
    the previous version that `recover_dir` puts back."""
    olds = sorted(out.glob(f"{io_utils.OLD_PREFIX}*.checkpoint"), key=lambda p: p.stat().st_mtime_ns)
    for ckpt in [out / "checkpoint", *olds[-1:]]:
        try:
            return json.loads((ckpt / "state.json").read_text())["completed_chunks"]
        except (OSError, ValueError, KeyError):  # not there yet, or being swapped right now
            continue
    return 0


def _start(world, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _cli_cmd("train", *_train_args(world, out)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_chunks(proc: subprocess.Popen, out: Path, n: int, timeout: float = 180) -> int:
    deadline = time.time() + timeout
    while (done := _completed_chunks(out)) < n:
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (rc {proc.returncode}) before chunk {n}: {proc.communicate()[1][-2000:]}"
            )
        assert time.time() < deadline, f"chunk {n} not completed within {timeout}s"
        time.sleep(0.01)
    return done


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _assert_same_adapter(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        # resumed vs uninterrupted on one process: the same float32 operations in the same order, the
        # adapter restored bit for bit, each chunk reseeded: equal in principle; 1e-6 (~100 ulp of
        # weights ~0.1) only forgives a library picking another kernel after a restart
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def _steps(out: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (out / "log_history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(tiny_world, tmp_path_factory) -> Path:
    """The same command, never interrupted."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out)]) == 0
    return out


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_kill_9_twice_then_rerun_gives_the_uninterrupted_adapter(tiny_world, reference_run, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(FAULT_SEED)
    fraction = round(rng.uniform(0.0, 0.9), 3)
    where = f"LLM_UNLEARN_FAULT_SEED={FAULT_SEED}, kill {fraction} of a chunk after a save"
    print(where)
    # kill point 1: as soon as a first chunk is saved (usually while chunk 2 trains)
    proc = _start(tiny_world, out)
    try:
        _wait_for_chunks(proc, out, 1)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, where
    first = _completed_chunks(out)  # what a resume finds (a save may have landed before the kill)
    assert 1 <= first <= N_CHUNKS - 3, where  # two more to measure a chunk by, one to be killed in
    # kill point 2: the same command again, killed at a random moment of the chunk after the next
    # one. The moment is a random fraction of one chunk's duration measured in this run, so that the
    # kill lands while chunks remain on any machine (a fixed delay outlasted the last chunks of a
    # fast one: the run had finished training and removed its checkpoint when it was killed).
    proc = _start(tiny_world, out)
    try:
        _wait_for_chunks(proc, out, first + 1)
        t_a = time.monotonic()
        second = _wait_for_chunks(proc, out, first + 2)
        time.sleep(fraction * (time.monotonic() - t_a))
        alive = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    except ProcessLookupError:
        alive = False
    finally:
        if proc.poll() is None:
            proc.kill()
    assert alive, f"the second run ended before the kill ({where})"
    assert second <= _completed_chunks(out) < N_CHUNKS, where
    # the same command once more: resumes after the last complete chunk and finishes
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out)]) == 0, where
    _assert_same_adapter(_adapter(reference_run / "adapter"), _adapter(out / "adapter"))
    assert _steps(out) == _steps(reference_run) == list(range(1, 31)), where
    assert not (out / "checkpoint").exists(), where
    temps = (".checkpoint", io_utils.TMP_PREFIX, io_utils.OLD_PREFIX)
    assert not [p.name for p in out.iterdir() if p.name.startswith(temps)], where  # no leftovers


# ----------------------------------------------------------------------------- SIGTERM
@pytest.mark.slow
def test_sigterm_finishes_the_step_exits_3_and_says_how_to_resume(tiny_world, reference_run, tmp_path):
    out = tmp_path / "run"
    proc = _start(tiny_world, out)
    try:
        _wait_for_chunks(proc, out, 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err
    assert "stopped: interrupted" in err and "Run the same command again to resume" in err, err[-2000:]
    done = _completed_chunks(out)
    assert 1 <= done < N_CHUNKS
    assert len(_steps(out)) == 6 * done  # log_history holds the complete chunks only
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out)]) == 0
    _assert_same_adapter(_adapter(reference_run / "adapter"), _adapter(out / "adapter"))
    assert _steps(out) == list(range(1, 31))


# ----------------------------------------------------------------------------- failure while saving
def test_failure_while_writing_a_checkpoint_keeps_the_previous_one(
    tiny_world, reference_run, tmp_path, monkeypatch, capsys
):
    from peft import PeftModel

    out = tmp_path / "run"
    real_save = PeftModel.save_pretrained
    calls = {"n": 0}

    def save_then_fail(self, save_directory, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint after chunk 2: half the files, then the disk is full
            Path(save_directory, "adapter_model.safetensors").write_bytes(b"\0" * 100)
            raise OSError(28, "No space left on device")
        return real_save(self, save_directory, *a, **k)

    monkeypatch.setattr(PeftModel, "save_pretrained", save_then_fail)
    rc = cli.main(["--quiet", "train", *_train_args(tiny_world, out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error:") and "No space left" in err[0], err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["completed_chunks"] == 1
    load_file(str(out / "checkpoint" / "adapter_model.safetensors"))  # loadable
    assert not [p.name for p in out.iterdir() if p.name.startswith(".checkpoint")]
    # and resuming from it gives the uninterrupted result
    monkeypatch.setattr(PeftModel, "save_pretrained", real_save)
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out)]) == 0
    _assert_same_adapter(_adapter(reference_run / "adapter"), _adapter(out / "adapter"))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_atomic_dir_keeps_the_old_version_when_the_final_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint"
    io_utils.atomic_dir(target, lambda d: (d / "state.json").write_text('{"completed_chunks": 1}'))
    before = _tree(target)
    real_replace = os.replace

    def replace(src, dst):
        parts = io_utils.temp_parts(Path(src).name)
        if parts and parts[0] == "tmp":  # the new version's rename fails (after the old one moved aside)
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(io_utils.os, "replace", replace)
    with pytest.raises(OSError):
        io_utils.atomic_dir(target, lambda d: (d / "state.json").write_text('{"completed_chunks": 2}'))
    monkeypatch.setattr(io_utils.os, "replace", real_replace)
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """Temporary files are private (0600 / 0700); the renamed results must not stay so, or the
    group sharing a project directory on a cluster could not read run.json or the adapter."""
    old = os.umask(0o022)
    try:
        f = io_utils.atomic_write_text(tmp_path / "run.json", "{}")
        d = io_utils.atomic_dir(tmp_path / "adapter", lambda t: (t / "x").write_text("x"))
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    """Killed after the old checkpoint was moved aside and before the new one was renamed in: the
    next start puts the old (complete) one back and removes the unfinished temporary one."""
    target = tmp_path / "checkpoint"
    io_utils.atomic_dir(target, lambda d: (d / "state.json").write_text('{"completed_chunks": 1}'))
    before = _tree(target)
    os.replace(target, tmp_path / f"{io_utils.OLD_PREFIX}999999.abcd.checkpoint")
    half = tmp_path / f"{io_utils.TMP_PREFIX}999999.abc123.checkpoint"
    half.mkdir()
    (half / "state.json").write_text('{"completed_chunks": 2}')
    io_utils.recover_dir(target, clean=True)
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_resume_recovers_a_checkpoint_left_aside(tiny_world, reference_run, tmp_path, monkeypatch):
    """A run killed during the checkpoint swap after chunk 4 (the checkpoint is moved aside)
    resumes after chunk 4 and ends with the uninterrupted adapter."""
    import llm_unlearn.train.checkpoint as run_mod

    out = tmp_path / "run"
    real_save = run_mod.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(o, *a, **k):
        real_save(o, *a, **k)
        if a[2] == 4:
            raise Killed

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        cli.main(["--quiet", "train", *_train_args(tiny_world, out)])
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    os.replace(out / "checkpoint", out / f"{io_utils.OLD_PREFIX}999999.abcd.checkpoint")
    assert cli.main(["--quiet", "train", *_train_args(tiny_world, out)]) == 0
    _assert_same_adapter(_adapter(reference_run / "adapter"), _adapter(out / "adapter"))
    assert _steps(out) == list(range(1, 31))


# ----------------------------------------------------------------------------- NaN / inf
def test_a_non_finite_loss_stops_with_term_chunk_and_step_and_keeps_the_checkpoint(
    tiny_world, tmp_path, monkeypatch, capsys
):
    import llm_unlearn.train.methods._shared as trainer_mod

    out = tmp_path / "run"
    real_npo = trainer_mod.losses.npo_loss

    def npo_nan_after_chunk_1(*a, **k):
        value = real_npo(*a, **k)
        if (out / "checkpoint" / "state.json").is_file():
            return value * float("nan")
        return value

    monkeypatch.setattr(trainer_mod.losses, "npo_loss", npo_nan_after_chunk_1)
    before = {p.name for p in tmp_path.iterdir()}
    rc = cli.main(["--quiet", "train", *_train_args(tiny_world, out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("error:") and "'npo'" in line and "chunk 2" in line and "step 1" in line, line
    assert "Traceback" not in line
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["completed_chunks"] == 1
    load_file(str(out / "checkpoint" / "adapter_model.safetensors"))
    assert not (out / "adapter").exists() and not (out / "run.json").exists()
    assert {p.name for p in tmp_path.iterdir()} == before | {"run"}


# ----------------------------------------------------------------------------- evaluation resume
def _mmlu_dir(root: Path) -> Path:
    d = root / "mmlu"
    (d / "dev").mkdir(parents=True)
    (d / "test").mkdir()
    (d / "dev" / "anatomy_dev.csv").write_text("What is 1+1?,1,2,3,4,B\n")
    (d / "test" / "anatomy_test.csv").write_text("What is 2+2?,1,2,3,4,D\nWhat is 3+3?,6,7,8,9,A\n")
    return d


def test_evaluate_reuses_finished_stages_and_redoes_what_changed(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.evaluation.benchmarks.semeval.evaluate as semeval_mod

    calls: dict[str, int] = {}
    fail: set[str] = set()

    def counting(name, module, attr):
        real = getattr(module, attr)

        def wrapper(*a, **k):
            if name in fail:
                raise RuntimeError(f"killed during {name}")
            calls[name] = calls.get(name, 0) + 1
            return real(*a, **k)

        monkeypatch.setattr(module, attr, wrapper)

    counting("generate", semeval_mod, "greedy_generate")
    counting("nll", semeval_mod, "answer_nll")
    counting("mia", semeval_mod, "document_statistics")
    import llm_unlearn.evaluation.benchmarks.mmlu.evaluate as mmlu_mod

    counting("mmlu", mmlu_mod, "evaluate_mmlu")
    data = tmp_path / "data"
    shutil.copytree(tiny_world["data_dir"], data)
    out = tmp_path / "eval"
    argv = [
        "--quiet",
        "evaluate",
        "--model",
        str(tiny_world["model_dir"]),
        "--data",
        str(data),
        "--mia-data",
        str(data / "mia"),
        "--mmlu-data",
        str(_mmlu_dir(tmp_path)),
        "--mmlu-ntrain",
        "1",
        "--output-dir",
        str(out),
        "--limit",
        "3",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--no-progress",
    ]

    def run(*extra: str) -> dict:
        calls.clear()
        assert cli.main([*argv, *extra]) == 0
        return json.loads((out / "evaluation_results.json").read_text())

    # an evaluation killed during MIA: generations, NLLs and MMLU are kept, no results file
    fail.add("mia")
    with pytest.raises(RuntimeError, match="killed during mia"):
        cli.main(argv)
    assert calls == {"mmlu": 1, "generate": 1, "nll": 1}
    assert not (out / "evaluation_results.json").exists()
    fail.clear()
    # the same command again: only MIA is computed
    first = run()
    assert calls == {"mia": 1}
    # once more: nothing is recomputed, and the results are the same
    again = run()
    assert calls == {}
    drop = ("timing",)
    assert {k: v for k, v in again.items() if k not in drop} == {
        k: v for k, v in first.items() if k not in drop
    }
    # another generation length: generations are redone, the rest is reused
    run("--max-new-tokens", "5")
    assert calls == {"generate": 1}
    # changed data: everything that reads it is redone
    rows = (data / "retain.jsonl").read_text().splitlines()
    rec = json.loads(rows[0])
    rec["output"] = rec["output"] + " (changed)"
    (data / "retain.jsonl").write_text("\n".join([json.dumps(rec), *rows[1:]]) + "\n")
    run("--max-new-tokens", "5")
    assert set(calls) == {"generate", "nll", "mia", "mmlu"}
