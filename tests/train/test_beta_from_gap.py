"""calibration.npo_beta_from_gap: NPO's weight, the gap, the rule, and who it applies to."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.config import build_config
from llm_unlearn.losses import npo_loss
from llm_unlearn.train.beta_from_gap import WEIGHT_AT_TARGET, beta_from_gap, choose, loss_gap, npo_weight

H = {"calibration.holdout": "holdout.jsonl"}


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("delta", [-12.0, -5.0, -0.3, 0.0, 1.5])
def test_the_weight_is_npo_losss_derivative(beta, delta):
    # token level: the loss is a mean over N tokens, so one token's derivative is w / N
    logp = torch.tensor([delta, -1.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([0.0, -1.0, -2.0], dtype=torch.float64)
    npo_loss(logp, ref, beta).backward()
    assert float(logp.grad[0]) * 3 == pytest.approx(npo_weight(beta, delta), rel=1e-12, abs=1e-15)
    assert npo_weight(beta, 0.0) == 1.0


@pytest.mark.parametrize("gap", [2.5, 4.9, 11.6, 40.0])
def test_the_chosen_beta_leaves_half_the_push_at_the_target(gap):
    beta = beta_from_gap(0.5, gap)
    assert beta == pytest.approx(math.log(3.0) / gap, rel=1e-15)
    assert npo_weight(beta, -gap) == pytest.approx(WEIGHT_AT_TARGET, rel=1e-12)
    assert npo_weight(0.5, -gap) < WEIGHT_AT_TARGET  # what the configured beta would have left


@pytest.mark.parametrize("gap", [None, float("nan"), -1.0, 0.0, 1.0, math.log(3.0) / 0.5])
def test_it_only_ever_lowers_beta(gap):
    assert beta_from_gap(0.5, gap) == 0.5  # a small gap (<= ln(3)/0.5 = 2.2 nats) or none keeps it


def test_the_gap_is_the_difference_of_the_medians():
    assert loss_gap([0.1, 0.3, 9.0], [5.0, 6.0, 7.0, 100.0]) == pytest.approx(6.5 - 0.3)
    assert loss_gap([], [1.0]) is None and loss_gap([1.0], None) is None
    assert loss_gap([float("nan"), 1.0], [3.0]) == 2.0


def test_a_gated_calibrated_default_run_takes_the_rule_and_an_explicit_beta_turns_it_off():
    assert build_config(overrides=H).calibration.npo_beta_from_gap is True
    assert build_config().calibration.npo_beta_from_gap is False  # uncalibrated
    own = build_config(overrides={**H, "objective.npo_beta": 0.5})
    assert own.calibration.npo_beta_from_gap is False and own.objective.npo_beta == 0.5
    both = build_config(overrides={**H, "objective.npo_beta": 0.3, "calibration.npo_beta_from_gap": True})
    assert both.calibration.npo_beta_from_gap is True  # asked for both: the rule, capped at 0.3


@pytest.mark.parametrize(
    "over, applies",
    [
        ({}, True),
        ({"objective.method": "npo"}, False),  # sequence level by its own defaults
        ({"objective.method": "npo", "objective.npo_level": "token"}, True),
        ({"objective.npo_level": "sequence"}, False),
        ({"objective.method": "gradient_difference"}, False),
        ({"calibration.npo_beta_from_gap": False}, False),
    ],
)
def test_choose_sets_beta_for_token_level_npo_only(over, applies):
    cfg = build_config(overrides={**H, **over})
    before = cfg.objective.npo_beta
    got = choose(cfg, {"loss_gap": 11.0})
    if applies:
        assert got == {"gap": 11.0, "configured": before, "npo_beta": math.log(3.0) / 11.0}
        assert cfg.objective.npo_beta == math.log(3.0) / 11.0
    else:
        assert got is None and cfg.objective.npo_beta == before
    assert choose(build_config(overrides=H), {"loss_gap": None}) is None
