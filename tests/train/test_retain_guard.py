"""calibration.retain_guard: the retain floor of the selection as a constraint of the training itself. Each
in-training evaluation updates a multiplier of the retain-side terms (a dual variable): up while the
sampled retain metrics are below the floor, back toward 1 while they are above it
(``train/retain_guard.py``). Exact rules on chosen numbers, then the loss, then a run."""

from __future__ import annotations

import math

import pytest
import torch
from test_calibrated_run import _lora, _rows

from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.data.tokenize import UnlearnCollator
from llm_unlearn.train import retain_guard as rg
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import unlearning_loss

START = {"retain_em": 1.0, "retain_rougeL": 0.8}


def ev(em, rl):
    return {"retain_em": em, "retain_rougeL": rl}


def test_ratio_is_the_worse_of_em_and_rouge_against_the_start():
    assert rg.retain_ratio(ev(0.9, 0.8), START) == pytest.approx(0.9)
    assert rg.retain_ratio(ev(1.0, 0.6), START) == pytest.approx(0.75)
    assert rg.retain_ratio(ev(None, 0.4), START) == pytest.approx(0.5)  # a metric not measured: the other
    assert rg.retain_ratio(ev(0.5, 0.5), {"retain_em": 0.0, "retain_rougeL": None}) is None  # nothing to hold
    assert rg.retain_ratio(ev(0.5, float("nan")), {"retain_em": 0.0, "retain_rougeL": 0.5}) is None


def test_a_violation_of_the_whole_allowed_drop_doubles_the_multiplier():
    # floor 0.9: the allowed drop is 0.1; a ratio of 0.8 is below the floor by that much
    assert rg.next_scale(1.0, 0.8, floor=0.9) == pytest.approx(2.0)
    assert rg.next_scale(1.0, 0.85, floor=0.9) == pytest.approx(math.sqrt(2.0))
    assert rg.next_scale(3.0, 0.7, floor=0.9) == pytest.approx(12.0)
    # floor 0.8 allows a drop of 0.2: the same 0.1 below the floor is half of it
    assert rg.next_scale(1.0, 0.7, floor=0.8) == pytest.approx(math.sqrt(2.0))


def test_above_the_floor_it_relaxes_by_the_same_rule_and_never_below_one():
    assert rg.next_scale(4.0, 1.0, floor=0.9) == pytest.approx(2.0)  # all the slack: halved
    assert rg.next_scale(4.0, 0.95, floor=0.9) == pytest.approx(4.0 / math.sqrt(2.0))
    assert rg.next_scale(4.0, 0.9, floor=0.9) == pytest.approx(4.0)  # on the floor: unchanged
    assert rg.next_scale(1.2, 1.0, floor=0.9) == 1.0
    assert rg.next_scale(1.0, 1.0, floor=0.9) == 1.0


def test_bounded_above_and_off_without_a_floor_or_a_ratio():
    assert rg.next_scale(10.0, 0.0, floor=0.9) == rg.MAX_SCALE
    assert rg.next_scale(3.0, 0.5, floor=0.0) == 1.0  # no floor: nothing to guard
    assert rg.next_scale(3.0, 0.5, floor=1.0) == 1.0  # no allowed drop: the rule has no scale
    assert rg.next_scale(3.0, None, floor=0.9) == 3.0  # nothing measured: unchanged


def test_one_item_of_sampling_noise_moves_it_by_a_bounded_factor():
    # 16 sampled retain items: one item is 1/16 of EM; one flip near the floor changes the multiplier by
    # at most 2 ** ((1 / 16) / 0.1) (the rule is continuous in the ratio)
    for r in (0.8125, 0.875, 0.9375):
        a, b = rg.next_scale(2.0, r, floor=0.9), rg.next_scale(2.0, r - 1 / 16, floor=0.9)
        assert 1.0 <= b / a <= 2 ** ((1 / 16) / 0.1) + 1e-12


def test_the_loss_multiplies_the_retain_side_terms_only(one_torch_thread, tiny_world):
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    batch = UnlearnCollator(tok.pad_token_id)(_rows(tiny_world, ds.forget[:2], ds.retain[:2]))
    obj = ObjectiveOptions(method="npo_rt_div", retain_weight=0.7, divergence_weight=0.3)
    with torch.no_grad():
        base, terms = unlearning_loss(pm, batch, obj, sel)
        scaled, terms2 = unlearning_loss(pm, batch, obj, sel, retain_scale=3.0)
    assert terms == terms2  # the logged values are the terms themselves
    assert terms[T.RETAIN_NLL] > 0 and terms[T.DIVERGENCE] != 0
    retain = 0.7 * terms[T.RETAIN_NLL] + 0.3 * terms[T.DIVERGENCE]
    assert float(scaled - base) == pytest.approx(2.0 * retain, rel=1e-4, abs=1e-6)


def test_a_run_below_the_retain_floor_trains_its_retain_side_with_the_multiplier(
    one_torch_thread, tiny_world, tmp_path, monkeypatch
):
    """The monitor's retain EM is made to read 0.8 x the start at every evaluation after the first: each
    such evaluation doubles the multiplier (floor 0.9), the evaluation rows record it, and every training
    step after an evaluation passes the multiplier of that evaluation to the loss."""
    from test_calibrated_run import _against_holdout, _run

    from llm_unlearn.train import loss as loss_mod
    from llm_unlearn.train import monitor as monitor_mod
    from llm_unlearn.train import trainer as trainer_mod

    real_eval = monitor_mod.TrainingMonitor.evaluate

    def low_retain(self, model, *, step, chunk, measured=None):
        row = real_eval(self, model, step=step, chunk=chunk, measured=measured)
        if step > 0:
            row["retain_em"], row["retain_rougeL"] = 0.8, 1.0
        return row

    seen: list[float] = []
    real_loss = loss_mod.unlearning_loss

    def recording(*a, **k):
        seen.append(k.get("retain_scale", 1.0))
        return real_loss(*a, **k)

    monkeypatch.setattr(monitor_mod.TrainingMonitor, "evaluate", low_retain)
    monkeypatch.setattr(trainer_mod, "unlearning_loss", recording)
    summary = _run(
        tiny_world,
        tmp_path / "run",
        **{
            **_against_holdout(tiny_world, tmp_path),
            "schedule.chunk_size": 15,
            "schedule.epochs": 2,
            "calibration.eval_every": 4,
            "calibration.eval_items": 6,
            "calibration.mode": "gate",
            "calibration.retain_floor": 0.9,
            "calibration.retain_guard": True,
            "calibration.bisect": 0,
            "calibration.bisect_selected": 0,
            "calibration.extend": 0,
        },
    )
    evs = [e for e in summary["calibration"]["evaluations"] if "retain_scale" in e]
    assert evs and evs[0]["step"] == 0 and evs[0]["retain_scale"] == 1.0
    want = [min(2.0**i, rg.MAX_SCALE) for i in range(len(evs))]
    assert [e["retain_scale"] for e in evs] == pytest.approx(want)
    assert len(evs) >= 3 and seen[0] == 1.0 and max(seen) == pytest.approx(want[-2] if len(evs) > 1 else 1.0)
    assert sorted(set(seen)) == pytest.approx(sorted(set(want[:-1])))  # the last one trains no step


def test_the_multiplier_survives_a_resume():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.calibrated import Calibrator

    cfg = build_config(overrides={"calibration.retain_guard": True, "calibration.retain_floor": 0.9})
    a = Calibrator(cfg, monitor=object(), per_chunk_steps=[4], interval=2)
    a.retain_scale = 5.5
    b = Calibrator(cfg, monitor=object(), per_chunk_steps=[4], interval=2)
    b.restore(a.state())
    assert b.retain_scale == 5.5

    class T:
        pass

    t = T()
    b.apply_to(t)
    assert t.retain_scale == 5.5
