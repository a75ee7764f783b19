"""The corrected method defaults (issue 21) against the values their sources hold, written here as read
in the sources (tmlr-group/SatImp at 51314c0; locuslab/open-unlearning at d3d7cf9), and each one's
effect on the loss the trainer builds."""

from __future__ import annotations

import pytest
import torch

from conftest import collate_rows, make_lora_model, make_rows
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.registry import default_options

TOL = {"rel": 1e-9, "abs": 1e-10}  # float64 model: the total is the same sum in another order

# tmlr-group/SatImp: dataloader/dataloader_sat.py `satimp_gd`: loss = forget_loss + self.coeff * retain_loss,
# config/forget_sat.yaml coeff: 0.1; open-unlearning SatImp class: gamma=1.0, alpha=0.1
SATIMP = {"forget_weight": 1.0, "retain_weight": 0.1, "satimp_beta1": 5.0, "satimp_beta2": 1.0}
# open-unlearning configs/trainer/NPO.yaml: beta 0.1, alpha 1.0, gamma 1.0, retain_loss_type NLL
NPO = {"npo_beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "npo_level": "sequence"}
# open-unlearning configs/trainer/PDU.yaml: dual_step_size 1.0, dual_warmup_epochs 5, gamma 1.0, alpha 1.0
PDU = {"pdu_dual_step": 1.0, "pdu_dual_warmup_epochs": 5.0, "forget_weight": 1.0, "retain_weight": 1.0}


@pytest.mark.parametrize(("method", "source"), [("satimp", SATIMP), ("npo", NPO), ("pdu", PDU)])
def test_defaults_are_the_sources(method, source):
    o = default_options(method)
    assert {k: getattr(o, k) for k in source} == source
    assert o.divergence_weight == 0.0  # none of the three sources has a divergence term


@pytest.mark.parametrize(("method", "forget_term"), [("satimp", "satimp"), ("npo", "npo")])
def test_the_total_is_gamma_forget_plus_alpha_retain_nll(tiny_world, method, forget_term):
    pm = make_lora_model(tiny_world, dtype=torch.float64)
    batch = collate_rows(tiny_world, make_rows(tiny_world, 3, 3))
    o = default_options(method)
    sel = AnswerHeadSelector(pm)
    try:
        total, terms = unlearning_loss(pm, batch, o, sel)
    finally:
        sel.remove()
    assert set(terms) == {forget_term, "retain_nll"}
    src = SATIMP if method == "satimp" else NPO
    gamma, alpha = src["forget_weight"], src["retain_weight"]
    assert float(total) == pytest.approx(gamma * terms[forget_term] + alpha * terms["retain_nll"], **TOL)


def test_pdu_warns_when_the_warmup_covers_every_epoch():
    from llm_unlearn.config import build_config
    from llm_unlearn.train.methods.pdu import warmup_note

    cfg = build_config(overrides={"objective.method": "pdu"})  # 5 epochs per chunk, warm-up 5
    assert "stays at its initial value" in warmup_note(cfg) and "--pdu-dual-warmup 0" in warmup_note(cfg)
    assert warmup_note(build_config(overrides={"objective.method": "pdu", "schedule.epochs": 8})) is None
    over = {"objective.method": "pdu", "objective.pdu_dual_warmup_epochs": 0.0}
    assert warmup_note(build_config(overrides=over)) is None
    assert warmup_note(build_config(overrides={"objective.method": "npo"})) is None
