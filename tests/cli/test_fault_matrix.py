"""Fault-injection matrix for `llm-unlearn train` (merge included): SIGTERM and kill -9 at every
stage boundary, a failing write at every write site, and concurrent starts.

Every case ends with: the original data and model byte-identical; every output either complete or
absent (a killed write may leave only a hidden `.llm-unlearn-tmp.*`, removed by the next start); and the same
command run again giving the uninterrupted result (the same adapter and loss history).

The interrupted runs are forked children of the test process (the libraries are imported already,
so a case costs the tiny run itself): the child patches one function so that it signals itself
there, then runs the command. The run: 6 forget + 6 retain rows, 2 chunks of 2 steps, merged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_unlearn import cli, io_utils

CTX = multiprocessing.get_context("fork")


def _argv(world, data: Path, model: Path, out: Path) -> list[str]:
    return [
        "--quiet",
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--limit",
        "6",
        "--chunk-size",
        "3",
        "--retain-per-forget",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--lora-alpha",
        "4",
        "--no-progress",
        "--no-plots",
    ]


def _digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def inputs(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    data, model = root / "data", root / "model"
    shutil.copytree(tiny_world["data_dir"], data)
    shutil.copytree(tiny_world["model_dir"], model)
    ref = root / "reference"
    assert cli.main(_argv(tiny_world, data, model, ref)) == 0
    return {
        "world": tiny_world,
        "data": data,
        "model": model,
        "ref": ref,
        "digest": (_digest(data), _digest(model)),
    }


# ----------------------------------------------------------------------------- stage boundaries
# (module, attribute, before/after, which call): where the child signals itself
STAGES = {
    "data read": ("llm_unlearn.data.records", "load_unlearning_data", "after", 1),
    "model loaded": ("llm_unlearn.modeling", "load_model", "after", 1),
    "chunk 1 checkpoint, before": ("llm_unlearn.train.checkpoint", "save_checkpoint", "before", 1),
    "chunk 1 checkpoint, after": ("llm_unlearn.train.checkpoint", "save_checkpoint", "after", 1),
    "chunk 2 checkpoint, between its renames": ("os", "replace", "checkpoint-swap", 1),
    "final adapter, before": ("llm_unlearn.train.checkpoint", "save_adapter", "before", 1),
    "final adapter, after": ("llm_unlearn.train.checkpoint", "save_adapter", "after", 1),
    "merge, after": ("llm_unlearn.modeling", "merge_and_save", "after", 1),
    "run.json, after": ("llm_unlearn.train.loop", "atomic_write_json", "after-run.json", 1),
}


def _child(argv, stage: str, sig: int, err_path: str) -> None:
    import importlib

    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    module, attr, when, _ = STAGES[stage]
    mod = importlib.import_module(module)
    real = getattr(mod, attr)

    def hooked(*a, **k):
        if when == "before":
            os.kill(os.getpid(), sig)
        if (
            when == "checkpoint-swap"
            and Path(a[1]).name == "checkpoint"
            and any((io_utils.temp_parts(q.name) or ("",))[0] == "old" for q in Path(a[1]).parent.iterdir())
        ):
            os.kill(os.getpid(), sig)  # the old checkpoint is aside, the new one not yet in place
        result = real(*a, **k)
        if when == "after" or (when == "after-run.json" and Path(a[0]).name == "run.json"):
            os.kill(os.getpid(), sig)
        return result

    setattr(mod, attr, hooked)
    code = cli.main(argv)
    sys.stderr.flush()
    os._exit(code)


def _assert_outputs_complete_or_absent(out: Path) -> None:
    if not out.exists():
        return
    for name in ("adapter", "model", "checkpoint"):
        d = out / name
        if d.exists():
            f = d / ("model.safetensors" if name == "model" else "adapter_model.safetensors")
            assert f.is_file() and load_file(str(f)), (name, sorted(p.name for p in d.iterdir()))
    for name in ("run.json", "log_history.jsonl", "checkpoint/state.json", ".llm-unlearn.json"):
        f = out / name
        if f.exists():
            for line in f.read_text().splitlines():
                json.loads(line) if name.endswith(".jsonl") else None
            if not name.endswith(".jsonl"):
                json.loads(f.read_text())
    if (out / "run.json").exists():  # finished: everything is there
        assert (out / "adapter").is_dir() and (out / "model").is_dir()


def _assert_rerun_equals_reference(inputs, out: Path) -> None:
    w = inputs["world"]
    assert cli.main(_argv(w, inputs["data"], inputs["model"], out)) == 0
    a, b = (
        load_file(str(inputs["ref"] / "adapter" / "adapter_model.safetensors")),
        load_file(str(out / "adapter" / "adapter_model.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:
        # one process, the same float32 operations in the same order as the reference (resume restores
        # the adapter bit for bit): equal; 1e-6 (~100 ulp of these weights) only forgives a kernel choice
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = lambda p: [json.loads(x)["step"] for x in (p / "log_history.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(out) == steps(inputs["ref"])
    assert (out / "model" / "model.safetensors").is_file()
    assert not [q for q in out.iterdir() if io_utils.temp_parts(q.name)] and not (out / "checkpoint").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_signal_at_every_stage_boundary(inputs, tmp_path, stage, sig):
    out = tmp_path / "out"
    err = tmp_path / "stderr.txt"
    p = CTX.Process(
        target=_child,
        args=(_argv(inputs["world"], inputs["data"], inputs["model"], out), stage, sig, str(err)),
    )
    p.start()
    p.join(300)
    assert p.exitcode is not None, "the child hung"
    text = err.read_text() if err.exists() else ""
    if sig == signal.SIGKILL:
        assert p.exitcode == -signal.SIGKILL, (p.exitcode, text[-2000:])
    else:
        assert p.exitcode == 3, (p.exitcode, text[-2000:])
        assert "stopped:" in text and "Run the same command again" in text and "Traceback" not in text, text
    assert (_digest(inputs["data"]), _digest(inputs["model"])) == inputs["digest"]
    _assert_outputs_complete_or_absent(out)
    _assert_rerun_equals_reference(inputs, out)
    assert (_digest(inputs["data"]), _digest(inputs["model"])) == inputs["digest"]


# ----------------------------------------------------------------------------- failing writes
def _count_writes(inputs, tmp_path, monkeypatch) -> int:
    import llm_unlearn.io_utils as io_utils

    calls = []
    for name in ("atomic_write_bytes", "atomic_dir"):
        real = getattr(io_utils, name)

        def counting(*a, _real=real, _name=name, **k):
            calls.append((_name, Path(a[0]).name))
            return _real(*a, **k)

        monkeypatch.setattr(io_utils, name, counting)
    _patch_importers(monkeypatch, io_utils)
    assert cli.main(_argv(inputs["world"], inputs["data"], inputs["model"], tmp_path / "count")) == 0
    monkeypatch.undo()
    return calls


def _patch_importers(monkeypatch, io_utils) -> None:
    """run.py imported atomic_dir by name: give it the patched one. (atomic_write_json / jsonl / text
    reach io_utils.atomic_write_bytes through the module's globals, and modeling imports atomic_dir
    inside merge_and_save: both see the patch without help.)"""
    import llm_unlearn.train.checkpoint as run

    monkeypatch.setattr(run, "atomic_dir", io_utils.atomic_dir)


def test_a_failing_write_at_every_write_site(inputs, tmp_path, monkeypatch, capsys):
    import llm_unlearn.io_utils as io_utils

    sites = _count_writes(inputs, tmp_path, monkeypatch)
    assert len(sites) >= 8, sites
    outcomes = []
    for n, site in enumerate(sites):
        out = tmp_path / f"fail{n}"
        calls = {"n": 0}
        for name in ("atomic_write_bytes", "atomic_dir"):
            real = getattr(io_utils, name)

            def failing(*a, _real=real, _calls=calls, _n=n, **k):
                _calls["n"] += 1
                if _calls["n"] == _n + 1:
                    raise OSError(errno.ENOSPC, "No space left on device", str(a[0]))
                return _real(*a, **k)

            monkeypatch.setattr(io_utils, name, failing)
        _patch_importers(monkeypatch, io_utils)
        rc = cli.main(_argv(inputs["world"], inputs["data"], inputs["model"], out))
        monkeypatch.undo()
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: disk full"), (site, rc, lines)
        assert (_digest(inputs["data"]), _digest(inputs["model"])) == inputs["digest"]
        _assert_outputs_complete_or_absent(out)
        _assert_rerun_equals_reference(inputs, out)
        outcomes.append((site, "one-line disk-full error, outputs complete or absent, rerun = reference"))
    print(f"failing writes: {len(outcomes)} write sites")
    for o in outcomes:
        print("  ", o)


# ----------------------------------------------------------------------------- concurrent starts
def _plain_child(argv, err_path: str, started=None, release=None) -> None:
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if started is not None:  # hold the run (and its lock) after reading the data until told to go on
        import llm_unlearn.data.records as records

        real = records.load_unlearning_data

        def held(*a, **k):
            started.set()
            release.wait(120)
            return real(*a, **k)

        records.load_unlearning_data = held
    code = cli.main(argv)
    sys.stderr.flush()
    os._exit(code)


def test_concurrent_starts_one_runs_the_other_is_refused(inputs, tmp_path):
    """A second start while the first holds the directory: refused at once with exit 2, naming the first
    process; the first finishes undisturbed with the uninterrupted result."""
    out = tmp_path / "out"
    argv = _argv(inputs["world"], inputs["data"], inputs["model"], out)
    started, release = CTX.Event(), CTX.Event()
    first = CTX.Process(target=_plain_child, args=(argv, str(tmp_path / "err0"), started, release))
    first.start()
    try:
        assert started.wait(120), "the first run did not start"
        second = CTX.Process(target=_plain_child, args=(argv, str(tmp_path / "err1")))
        second.start()
        second.join(120)
        err = (tmp_path / "err1").read_text()
        assert second.exitcode == 2, (second.exitcode, err)
        assert f"is in use by another llm-unlearn process (pid {first.pid} on host" in err, err
        assert len(err.strip().splitlines()) == 1
    finally:
        release.set()
        first.join(300)
    assert first.exitcode == 0, (tmp_path / "err0").read_text()
    assert (_digest(inputs["data"]), _digest(inputs["model"])) == inputs["digest"]
    _assert_rerun_equals_reference(inputs, out)  # finished run, the same inputs: nothing to do
