"""calibration.extend: a calibrated run whose MIA AUC is still above the band, and still falling, when its
last chunk's steps are spent trains that chunk once more (at most N times): the budget ends where the
calibration says, not where the seed's epochs do."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _run, _stop_mode

from llm_unlearn.train import calibration as cal
from llm_unlearn.train.extend import extension_due, rewind_schedule

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


# the loss gap (holdout median - forget units' median, nats a token) is the continuous measure the AUC ranks:
# an AUC of a few members moves by whole pairs (1/256 for 8 x 32) while the gap still falls
@pytest.mark.parametrize(
    ("aucs", "gaps", "expected"),
    [
        # SmolLM2 at the end of its last chunk (quality-smollm2, 2026-12-07): the AUC 4 pairs up, the
        # gap halved: still on its way down
        ([0.76953125, 0.78515625], [1.721, 0.835], True),
        # the real slice's seed 4 (as is) at its end: AUC and gap both above their lowest of the pass: a plateau
        ([0.5885, 0.5638, 0.5760], [1.1757, 1.2993, 1.3826], False),
        # the gap at its lowest but by less than the margin: not a fall (a plateau in the last bits)
        ([0.70, 0.60, 0.62], [1.5, 1.2, 1.2 - cal.GAP_MARGIN / 2], False),
        ([0.70, 0.60, 0.62], [1.5, 1.2, 1.2 - 2 * cal.GAP_MARGIN], True),
        # the AUC rule alone still decides when the gap did not fall
        ([0.70, 0.64, 0.60], [1.0, 1.1, 1.2], True),
        # missing gaps: the AUC rule alone
        ([0.70, 0.58, 0.60], [None, None, None], False),
        ([0.70, 0.58, 0.60], [1.5, None, float("nan")], False),
        ([0.70, 0.58, 0.60], [None, 1.5, 1.0], True),  # missing elsewhere: skipped
        # the gap never decides inside or below the band
        ([0.70, 0.52], [2.0, 0.1], False),
        ([0.60], [1.0], True),  # only its start: the AUC rule decides (no fall in the gap)
    ],
)
def test_should_extend_when_the_loss_gap_still_falls(aucs, gaps, expected):
    args = {"tolerance": TOL, "done": 0, "allowed": 2, "stopped": False}
    assert cal.should_extend(aucs, gaps=gaps, **args) is expected


@pytest.mark.parametrize(
    ("aucs", "kw", "expected"),
    [
        # the demo's seed 11 with the ulp (2026-12-08, AVX-512): its last chunk's rows were all gated off at
        # the pass's first evaluation (the chunk ended there), the AUC one pair-step up, held above the band by
        # earlier chunks' units: the pass never trained, "still falling" cannot be judged
        ([0.753, 0.802], {"ended_early": True}, True),
        ([0.753, 0.802], {"ended_early": False}, False),
        ([0.753, 0.52], {"ended_early": True}, False),  # within the band: the stop's business
        ([0.753, 0.40], {"ended_early": True}, False),  # below it
        ([0.753, 0.802], {"ended_early": True, "done": 2}, False),  # none left
        ([0.753, 0.802], {"ended_early": True, "stopped": True}, False),
        ([0.753, None], {"ended_early": True}, False),
    ],
)
def test_a_pass_the_gate_ended_before_it_trained_extends_while_above_the_band(aucs, kw, expected):
    args = {"tolerance": TOL, "done": 0, "allowed": 2, "stopped": False, **kw}
    assert cal.should_extend(aucs, **args) is expected


def test_gap_margin_is_far_above_float_noise_and_far_below_a_real_fall():
    # float32 log-probabilities of logits up to ~30 nats: rounding ~30 x 2^-23 = 4e-6 nats, and another CPU's
    # matmul order moves a logit by ~sqrt(d) x eps x |logit| (d ~ 1000: 1.1e-4 nats): the margin is over 10x that; a
    # fall the extension acts on is tenths of a nat (SmolLM2: 0.9 between evaluations)
    eps32 = 2.0**-23
    assert cal.GAP_MARGIN >= 10 * (1000**0.5) * eps32 * 30
    assert cal.GAP_MARGIN <= 0.01


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


def test_extension_due_reads_the_gaps_of_the_pass_without_bisected_states():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cfg = build_config(overrides={"calibration.mode": "gate", "calibration.extend": 2})
    c = Calibrator(cfg, monitor=None, per_chunk_steps=[20, 40], interval="chunk")
    c.evaluations = [
        {"step": 0, "mia_auc": 1.0, "loss_gap": 4.46},
        {"step": 20, "mia_auc": 0.7695, "loss_gap": 1.721},  # the pass starts here
        # a bisected state with a lower gap: not the path, so not the pass's lowest
        {"step": 20, "mia_auc": 0.70, "loss_gap": 0.5, "bisect": {"t": 0.5}},
        {"step": 60, "mia_auc": 0.7852, "loss_gap": 0.835},
    ]
    assert extension_due(c, 1)  # the AUC one step up, the gap halved
    c.evaluations[-1]["loss_gap"] = 1.9  # the gap up too: not falling
    assert not extension_due(c, 1)
    c.evaluations[-1]["loss_gap"] = 0.835
    c.stop_reason = "calibrated"
    assert not extension_due(c, 1)


def test_extension_due_sees_a_last_chunk_the_gate_ended():
    """The wiring: the gate's end of the last chunk (a chunk_ends entry at the pass's latest evaluation) is
    what lets an AUC that did not fall still extend; an earlier chunk's end, or one at another step, is not."""
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cfg = build_config(
        overrides={"calibration.mode": "gate", "calibration.extend": 2, "calibration.tolerance": TOL}
    )
    calib = Calibrator(cfg, monitor=None, per_chunk_steps=[10, 10], interval="chunk")
    calib.evaluations = [
        {"step": 0, "mia_auc": 1.0},
        {"step": 10, "mia_auc": 0.75},
        {"step": 12, "mia_auc": 0.80},
    ]
    assert not extension_due(calib, 1)  # came back up, the chunk trained on: no
    calib.chunk_ends = [{"chunk": 2, "step": 12, "reason": "every forget row of the chunk is gated off"}]
    assert extension_due(calib, 1)
    calib.chunk_ends = [{"chunk": 1, "step": 12, "reason": "every forget row of the chunk is gated off"}]
    assert not extension_due(calib, 1)  # the chunk before the last
    calib.chunk_ends = [{"chunk": 2, "step": 11, "reason": "every forget row of the chunk is gated off"}]
    assert not extension_due(calib, 1)  # not where this pass is now
