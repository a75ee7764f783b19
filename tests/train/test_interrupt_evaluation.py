"""A signal during an evaluation inside a chunk ends the run at once (not after the evaluation, which
takes minutes on a large model); the chunks saved before are kept and the same command resumes."""

from __future__ import annotations

import json
import os
import signal

import pytest
from test_calibrated_run import _against_holdout, _run

from llm_unlearn.errors import TrainingInterrupted
from llm_unlearn.train.monitor import TrainingMonitor


def test_sigterm_in_a_mid_chunk_evaluation_stops_at_once(one_torch_thread, tiny_world, tmp_path, monkeypatch):
    extra = {
        **_against_holdout(tiny_world, tmp_path),
        "calibration.eval_every": 3,
        "calibration.eval_items": 4,
        "calibration.eval_max_new_tokens": 4,
        "schedule.chunk_size": 8,
        "schedule.epochs": 2,
    }
    real = TrainingMonitor.measure
    seen = {"calls": 0, "finished": 0, "killed_at": None}

    def measure(self, model):
        seen["calls"] += 1
        # the first evaluation inside the second chunk: chunk 1 is saved by then
        if seen["killed_at"] is None and seen["calls"] > 1 and _loop_chunk(model) == 1:
            seen["killed_at"] = seen["calls"]
            os.kill(os.getpid(), signal.SIGTERM)
        out = real(self, model)
        seen["finished"] += 1
        return out

    chunk = {"index": 0}

    def _loop_chunk(model):
        return chunk["index"]

    import llm_unlearn.train.loop as loop_mod

    real_train_chunk = loop_mod.ChunkLoop._train_chunk

    def train_chunk(self, c):
        chunk["index"] = c
        return real_train_chunk(self, c)

    monkeypatch.setattr(TrainingMonitor, "measure", measure)
    monkeypatch.setattr(loop_mod.ChunkLoop, "_train_chunk", train_chunk)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingInterrupted, match=r"in chunk 2/\d+, during the evaluation at step \d+; chunks 1..1"
    ):
        _run(tiny_world, out, **extra)
    assert seen["killed_at"] is not None
    assert seen["finished"] == seen["killed_at"] - 1  # the interrupted evaluation never finished
    assert not (out / "run.json").exists()
    monkeypatch.setattr(TrainingMonitor, "measure", real)
    summary = _run(tiny_world, out, **extra)  # the lock is released and the run resumes from chunk 1
    assert summary["calibration"]["evaluations"]
    run = json.loads((out / "run.json").read_text())
    assert run["chunk_count"] == summary["chunk_count"]
