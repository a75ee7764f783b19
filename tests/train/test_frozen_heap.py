"""The heap is frozen while the chunks train (train/process.frozen_heap): transformers' Trainer.train() starts
with accelerate's free_memory(), a full gc.collect(), once a chunk; with torch, transformers and a model
loaded that walks ~5e5 objects (about 0.3 s here, of a 16 s demo-sized run). Frozen, those objects are
left out of the collection; the freeze is undone when training ends, and a caller's own freeze is left
as it was."""

from __future__ import annotations

import gc
import time

import pytest
from test_calibrated_run import _run

from llm_unlearn.train import loop
from llm_unlearn.train.process import frozen_heap


@pytest.fixture(autouse=True)
def _no_freeze_left():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_inside_and_undone_after():
    keep = [[i] for i in range(1000)]  # tracked objects alive at entry
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0


def test_undone_when_the_body_raises():
    with pytest.raises(KeyError), frozen_heap():
        raise KeyError("x")
    assert gc.get_freeze_count() == 0


def test_a_callers_freeze_is_left_alone(monkeypatch):
    """Checked on the calls, not on the count: a frozen object freed by its refcount leaves the
    permanent generation, so the freeze count can drop by a few between two reads (it did on CI)."""
    gc.freeze()
    assert gc.get_freeze_count() > 0
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    with frozen_heap():
        pass
    assert calls == []  # neither re-frozen nor unfrozen by us
    monkeypatch.undo()
    assert gc.get_freeze_count() > 0  # the caller's freeze is still there


def test_a_collection_inside_skips_what_was_alive_at_entry():
    """What the freeze buys: a full collection inside no longer walks the objects alive at entry."""
    heap = [{"i": i} for i in range(300_000)]  # a large tracked heap, as modules and a model make

    def collect_seconds() -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            gc.collect()
            best = min(best, time.perf_counter() - t)
        return best

    plain = collect_seconds()
    with frozen_heap():
        frozen = collect_seconds()
    assert len(heap) == 300_000
    # the frozen collection walks only what was made inside (nothing here): a ratio, not a time, so a
    # slower or busier machine moves both sides alike
    assert frozen < plain / 5, (plain, frozen)


def test_the_chunks_train_with_the_heap_frozen(one_torch_thread, tiny_world, tmp_path, monkeypatch):
    seen = []
    real = loop.ChunkLoop.train_chunks

    def spy(self):
        seen.append(gc.get_freeze_count())
        return real(self)

    monkeypatch.setattr(loop.ChunkLoop, "train_chunks", spy)
    _run(
        tiny_world,
        tmp_path / "run",
        **{"schedule.epochs": 1, "calibration.mode": "off", "calibration.eval_every": "off"},
    )
    assert len(seen) == 1 and seen[0] > 0  # frozen while the chunks trained
    assert gc.get_freeze_count() == 0  # and undone when the run returned
