"""calibration.last_chunk_factor: the last chunk trains factor x schedule.epochs passes (where a calibrated
run stops and is selected); every other chunk keeps schedule.epochs, and the step count the schedule,
the progress bar and the run-scope optimizer plan for is the one the trainer takes."""

from __future__ import annotations

import json

import pytest
from test_calibrated_run import _run

from llm_unlearn.config import build_config
from llm_unlearn.train.prepare import chunk_epochs
from llm_unlearn.train.trainer import steps_per_chunk


def test_only_the_last_chunk_is_scaled():
    cfg = build_config(overrides={"schedule.epochs": 3, "calibration.last_chunk_factor": 2.5})
    assert [chunk_epochs(cfg, c, 4) for c in range(4)] == [3, 3, 3, 7.5]
    assert chunk_epochs(build_config(overrides={"schedule.epochs": 3}), 3, 4) == 3  # default 1


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_the_trainer_takes_the_planned_steps(one_torch_thread, tiny_world, tmp_path, factor):
    out = tmp_path / f"f{factor}"
    summary = _run(
        tiny_world,
        out,
        **{
            "schedule.epochs": 2,
            "schedule.chunk_size": 5,
            "schedule.optimizer_scope": "run",
            "calibration.mode": "off",
            "calibration.eval_every": "off",
            "calibration.last_chunk_factor": factor,
            "train.logging_steps": 1,
        },
    )
    run = json.loads((out / "run.json").read_text())
    chunks = run["chunks"]
    rows = [r for r in map(json.loads, (out / "log_history.jsonl").read_text().splitlines()) if "loss" in r]
    per_chunk = [sum(1 for r in rows if r.get("chunk") == c["chunk"]) for c in chunks]
    n = [c["n_forget"] + c["n_retain"] for c in chunks]
    assert per_chunk[:-1] == [steps_per_chunk(k, 4, 1, 1, 2) for k in n[:-1]]
    assert per_chunk[-1] == steps_per_chunk(n[-1], 4, 1, 1, 2 * factor)
    assert summary["total_steps"] == sum(per_chunk) == rows[-1]["step"]
