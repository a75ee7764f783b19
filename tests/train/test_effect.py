"""The end-of-run check that a run did something (train/effect.py): the rules on exact numbers, and two
real runs on the tiny memorized model: one that cannot have moved (learning rate 1e-9), one that forgets
selectively (the default objective at the demo's rate) and one that collapses (gradient ascent). Over
seeds each real run's outcome lies far from the rules' lines, much farther than the seeds move it, so
another CPU's rounding is not expected to flip it."""

from __future__ import annotations

import json
import logging

import pytest

from llm_unlearn.config import build_config
from llm_unlearn.train.effect import judge, warning_line
from llm_unlearn.train.loop import run_unlearning


def test_forget_side_must_move_by_one_rows_worth():
    # 4 rows: resolution 1/4; values dyadic, so the means are exact
    before = [1.0, 1.0, 1.0, 1.0]
    e = judge(before, [1.0, 1.0, 1.0, 0.0078125], [], [])  # moved by 0.248046875 < 0.25
    assert e["verdict"] == "no_forgetting" and e["forget_resolution"] == 0.25
    assert "llm-unlearn sweep" in warning_line(e)
    assert judge(before, [1.0, 1.0, 1.0, 0.0], [], [])["verdict"] == "ok"  # exactly one row's worth
    assert judge(before, before, before, before)["verdict"] == "no_forgetting"  # nothing at all
    assert judge([], [], [1.0], [1.0])["verdict"] == "unmeasured"
    assert warning_line({"verdict": "ok"}) is None


def test_retain_collapse_is_half_lost_or_as_much_as_the_forget_side():
    f0, f1 = [1.0, 1.0], [0.5, 0.5]  # forget dropped by 0.5
    assert judge(f0, f1, [1.0, 1.0], [0.75, 0.75])["verdict"] == "ok"  # less, and above half: selective
    one = [1.0] * 8  # 8 rows: resolution 1/8
    assert judge(one, [0.75] * 8, one, [0.75] * 8)["verdict"] == "retain_collapsed"  # as much, above half
    assert judge(one, [0.75] * 8, one, [0.875] * 8)["verdict"] == "ok"  # one row's worth, less than forget
    assert judge(f0, [0.0, 0.0], [1.0, 1.0], [0.5, 0.5])["verdict"] == "retain_collapsed"  # half lost
    assert judge(f0, [0.0, 0.0], [1.0, 1.0], [0.5, 0.625])["verdict"] == "ok"  # above half, less than forget
    # a retain drop below one row's worth is never a collapse, however small the forget drop
    f_small = [1.0] * 4
    assert judge(f_small, [0.75] * 4, [1.0] * 4, [0.8125] * 4)["verdict"] == "ok"
    e = judge(f0, f1, [1.0, 1.0], [0.25, 0.25])
    assert "collapsed" in warning_line(e) and "llm-unlearn sweep" in warning_line(e)


def _run(tiny_world, out, lr, method):
    cfg = build_config(
        overrides={
            "model.name_or_path": str(tiny_world["model_dir"]),
            "data.data": str(tiny_world["data_dir"]),
            "data.add_eos": True,
            "objective.method": method,
            "train.output_dir": str(out),
            "train.learning_rate": lr,
            "train.batch_size": 8,
            "train.plots": False,
            "train.progress": False,
            "train.merge": False,
            "schedule.chunk_size": 100,
            "schedule.epochs": 2,
            "calibration.mode": "off",
        }
    )
    run_unlearning(cfg)
    return json.loads((out / "run.json").read_text())["effect"]


@pytest.mark.parametrize(
    ("method", "lr", "verdict"),
    [
        ("gradient_difference", 1e-9, "no_forgetting"),  # validation refuses lr 0: 1e-9 moves nothing
        # the default objective at the demo's rate. Measured over train.seed 0-4 and 42 (2026-12-07):
        # forget 0.984 -> 0.001-0.025, retain 0.984 -> 0.948-0.961, far from both rules' lines (one
        # row's worth; half lost or as much as the forget side). gradient_difference at 5e-3 is not:
        # its retain side ended at 0.32-0.50 over two seeds, across the collapse line, and flipped
        # between CPUs.
        ("npo_rt_div", 5e-3, "ok"),
        ("gradient_ascent", 5e-2, "retain_collapsed"),  # no retain term: retain 0.984 -> 0.000, 6 seeds
    ],
)
def test_a_run_says_whether_it_did_anything(tiny_world, tmp_path, caplog, method, lr, verdict):
    with caplog.at_level(logging.WARNING, logger="llm_unlearn.train.effect"):
        effect = _run(tiny_world, tmp_path / "out", lr, method)
    assert effect["verdict"] == verdict, effect
    warned = [r for r in caplog.records if r.name == "llm_unlearn.train.effect"]
    assert len(warned) == (1 if verdict != "ok" else 0)
    if verdict == "no_forgetting":
        assert abs(effect["forget_after"] - effect["forget_before"]) < effect["forget_resolution"]
        assert "llm-unlearn sweep" in warned[0].getMessage()
    else:
        assert effect["forget_before"] - effect["forget_after"] >= effect["forget_resolution"]
    if verdict == "retain_collapsed":
        assert "collapsed" in warned[0].getMessage() and "llm-unlearn sweep" in warned[0].getMessage()
