"""calibration.extend: a calibrated run whose MIA AUC is still above the band, and still falling, when its
last chunk's steps are spent trains that chunk once more (at most N times): the budget ends where the
calibration says, not where the seed's epochs do."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _run, _stop_mode

from llm_unlearn.train import calibration as cal
from llm_unlearn.train.extend import rewind_schedule

TOL = 0.05


@pytest.mark.parametrize(
    ("aucs", "kw", "expected"),
    [
        ([0.70, 0.64, 0.60], {}, True),  # above the band, at its lowest: still on the way
        ([0.70, 0.58, 0.60], {}, False),  # came back up: more of the same does not bring it down
        ([0.70, 0.60, 0.60], {}, True),  # ties count as the lowest
        ([0.60], {}, True),  # a pass with only its start
        ([0.70, 0.52], {}, False),  # within the band: the stop's business
        ([0.70, 0.40], {}, False),  # below it
        ([0.70, 0.64, None], {}, False),  # no AUC now
        ([0.70, float("nan")], {}, False),
        ([0.70, None, 0.60], {}, True),  # missing values elsewhere are skipped
        ([0.70, 0.60], {"done": 2, "allowed": 2}, False),  # no extension left
        ([0.70, 0.60], {"allowed": 0}, False),  # off
        ([0.70, 0.60], {"stopped": True}, False),  # the run has stopped
        ([], {}, False),
    ],
)
def test_should_extend(aucs, kw, expected):
    args = {"tolerance": TOL, "done": 0, "allowed": 2, "stopped": False, **kw}
    assert cal.should_extend(aucs, **args) is expected


def test_rewind_schedule_replays_the_rates_from_a_step():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / 10))
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0  # the schedule's end
    rewind_schedule(opt, sched, 6)
    again = []
    for _ in range(4):
        again.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert again == pytest.approx(seen[6:])
    assert sched.last_epoch == 10
    rewind_schedule(None, None, 3)  # a chunk-scope run has no run-long schedule: nothing to do


# a learning rate too small to get there in the epochs given: the AUC is still above the band at the end
OPTS = {
    "schedule.optimizer_scope": "run",  # one optimizer for the run: its schedule is rewound per extension
    "train.learning_rate": 3e-3,
    "schedule.chunk_size": 30,
    "schedule.epochs": 2,
    "calibration.eval_every": 8,
}


@pytest.fixture(scope="module")
def extended(tiny_world, tmp_path_factory):
    """The run without extension and with ``calibration.extend 2`` (shared by the tests below)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("extend")
        base = _stop_mode(tiny_world, tmp, **OPTS)
        plain = _run(tiny_world, tmp / "plain", **base)
        whole = _run(tiny_world, tmp / "ext", **base, **{"calibration.extend": 2})
    finally:
        torch.set_num_threads(threads)
    return {"dir": tmp, "base": base, "plain": plain, "whole": whole}


def test_a_run_still_falling_at_its_end_trains_its_last_chunk_again(extended):
    """The extension repeats the last chunk's schedule; the run is otherwise the same up to then."""
    plain, got = extended["plain"], extended["whole"]
    pe, ge = plain["calibration"], got["calibration"]
    last = pe["evaluations"][-1]["mia_auc"]
    assert last > 0.5 + pe["tolerance"], "premise: the plain run ends above the band"
    n = len(pe["evaluations"])
    key = ("step", "mia_auc", "forget_em", "proxy")
    assert [[e[k] for k in key] for e in ge["evaluations"][:n]] == [
        [e[k] for k in key] for e in pe["evaluations"]
    ]
    ext = ge["extensions"]
    assert 1 <= len(ext) <= 2
    assert ext[0]["step"] == plain["steps_done"] == plain["total_steps"]
    per = ext[0]["steps"]  # one more pass of the last chunk
    assert all(e["steps"] == per for e in ext)
    assert plain["total_steps"] < got["steps_done"] <= plain["total_steps"] + len(ext) * per
    assert max(e["step"] for e in ge["evaluations"]) == got["steps_done"]
    for e in ext:  # each decided by the rule on what the run had measured then
        assert e["mia_auc"] > 0.5 + ge["tolerance"]
    run = json.loads((extended["dir"] / "ext" / "run.json").read_text())
    assert run["calibration"]["extensions"] == ext
    assert [c.get("extension") for c in run["chunks"][-len(ext) :]] == list(range(1, len(ext) + 1))


def test_a_run_killed_between_extensions_resumes_to_the_same_result(
    one_torch_thread, tiny_world, extended, monkeypatch
):
    """A signal after the first extension ends the run with its checkpoint; the same command then
    decides and trains the rest exactly as the uninterrupted run did."""
    import os
    import signal

    import llm_unlearn.train.loop as loop_mod
    from llm_unlearn.errors import TrainingInterrupted

    opts = {**extended["base"], "calibration.extend": 2}
    whole = extended["whole"]["calibration"]
    assert len(whole["extensions"]) == 2, "premise: the run extends twice"
    real = loop_mod.ChunkLoop._train_chunk

    def train_chunk(self, c):
        action = real(self, c)
        if self.summary_extra.get("extension") == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # after the first extension's checkpoint
        return action

    monkeypatch.setattr(loop_mod.ChunkLoop, "_train_chunk", train_chunk)
    out = extended["dir"] / "killed"
    with pytest.raises(TrainingInterrupted, match="Run the same command again"):
        _run(tiny_world, out, **opts)
    monkeypatch.setattr(loop_mod.ChunkLoop, "_train_chunk", real)
    again = _run(tiny_world, out, **opts)["calibration"]
    assert again["extensions"] == whole["extensions"]
    key = ("step", "mia_auc", "forget_em", "retain_em", "proxy")
    assert [[e[k] for k in key] for e in again["evaluations"]] == [
        [e[k] for k in key] for e in whole["evaluations"]
    ]
    assert again["selected"] == whole["selected"]
