"""calibration.backtrack: after an overshoot the run goes back to its anchor (the latest evaluation that
did not overshoot and met the floors): that evaluation's adapter weights and optimizer state, and the
learning rate times backtrack_factor from then on."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _holdout_file, _run

from llm_unlearn.train import backtrack as bt
from llm_unlearn.train import calibration as cal
from llm_unlearn.train import loop as loop_mod
from llm_unlearn.train.sharding import trainable_state


def _opt_tensors(opt):
    inner = bt._inner(opt)
    return {
        (i, k): v.detach().clone()
        for i, st in enumerate(inner.state.values())
        for k, v in st.items()
        if torch.is_tensor(v)
    }


def test_an_overshoot_goes_back_to_the_anchor_with_a_smaller_learning_rate(
    one_torch_thread, tiny_world, tmp_path, monkeypatch
):
    seen: list[dict] = []  # per evaluation: the weights and optimizer state it left the loop with
    restored: list[dict] = []
    original = bt.after_evaluation

    def spy(loop, action, step):
        opt = loop.trainer.optimizer or loop.run_opt
        sched = loop.trainer.lr_scheduler or loop.run_sched
        before = {
            "lr": [g["lr"] for g in bt._inner(opt).param_groups] if opt is not None else None,
            "base": list(bt._inner(sched, "scheduler").base_lrs) if sched is not None else None,
        }
        result = original(loop, action, step)
        state = {
            "weights": trainable_state(loop.trainer.model),
            "opt": _opt_tensors(opt) if opt is not None else {},
        }
        if action == "backtrack":
            assert result is None  # the loop trains on
            restored.append(
                {
                    **state,
                    **before,
                    "after_lr": [g["lr"] for g in bt._inner(opt).param_groups],
                    "after_base": list(bt._inner(sched, "scheduler").base_lrs),
                }
            )
        seen.append(state)
        return result

    monkeypatch.setattr(loop_mod, "after_evaluation", spy)
    out = tmp_path / "bt"
    factor, n = 0.5, 2
    summary = _run(
        tiny_world,
        out,
        **{
            "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
            "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
            "calibration.mode": "stop",  # no gate: NPO pushes every forget row past unseen
            "train.learning_rate": 1e-2,
            "schedule.chunk_size": 15,
            "calibration.eval_every": 2,
            "calibration.eval_items": 8,
            "calibration.backtrack": n,
            "calibration.backtrack_factor": factor,
        },
    )
    c = summary["calibration"]
    evs, done = c["evaluations"], c["backtracks"]
    assert 1 <= len(done) <= n
    assert len(done) == len(restored)
    tol = c["tolerance"]
    for k, (entry, got) in enumerate(zip(done, restored)):
        assert entry["mia_auc"] < 0.5 - tol <= entry["to_mia_auc"]
        assert entry["to_step"] < entry["step"]
        anchor = entry["to_evaluation"] - 1
        assert cal.is_anchor(
            evs[anchor],
            evs[0],
            tolerance=tol,
            retain_floor=c["retain_floor"],
            forget_em_max=c["forget_em_max"],
        )
        # nothing later (before the overshoot) was an anchor
        over = next(
            i for i, e in enumerate(evs) if e["step"] == entry["step"] and e["mia_auc"] == entry["mia_auc"]
        )
        assert not any(
            cal.is_anchor(
                e, evs[0], tolerance=tol, retain_floor=c["retain_floor"], forget_em_max=c["forget_em_max"]
            )
            for e in evs[anchor + 1 : over + 1]
        )
        # the anchor's weights and optimizer moments, exactly
        for name, v in seen[anchor]["weights"].items():
            assert torch.equal(got["weights"][name], v), name
        assert got["opt"].keys() == seen[anchor]["opt"].keys()
        for key, v in seen[anchor]["opt"].items():
            assert torch.equal(got["opt"][key], v), key
        # the learning rate from now on, and the schedule's base rates it is computed from
        assert got["after_lr"] == pytest.approx([x * factor for x in got["lr"]], rel=1e-12)
        assert got["after_base"] == pytest.approx([x * factor for x in got["base"]], rel=1e-12)
        assert entry["lr_factor"] == pytest.approx(factor ** (k + 1))
    run = json.loads((out / "run.json").read_text())
    assert run["calibration"]["backtracks"] == done


def test_load_optimizer_snapshot_none_clears_the_moments_and_keeps_the_rate():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    snap = bt.optimizer_snapshot(opt)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    opt.param_groups[0]["lr"] = 0.05
    bt.load_optimizer_snapshot(opt, snap)
    assert torch.equal(opt.state[p]["exp_avg"], snap["state"][0]["exp_avg"])
    assert opt.param_groups[0]["lr"] == 0.05  # the schedule's, not the snapshot's
    bt.load_optimizer_snapshot(opt, None)
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == 0.05


def test_a_resumed_calibration_keeps_its_backtracks_and_their_rate_factor():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cfg = build_config(overrides={"calibration.backtrack": 3, "calibration.backtrack_factor": 0.4})
    calib = Calibrator(cfg, None, [4, 4], "chunk")
    assert calib.lr_factor() == 1.0
    done = [{"step": 3, "lr_factor": 0.4}, {"step": 5, "lr_factor": 0.4**2}]
    calib.restore({"evaluations": [], "backtracks": done}, None)
    assert calib.backtracks == done and calib.lr_factor() == pytest.approx(0.16)
    assert calib.anchor is None  # not saved: the next evaluation that qualifies becomes one
