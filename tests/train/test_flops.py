"""UnlearnTrainer.floating_point_ops: the Trainer's own estimate, the parameter count taken once."""

from __future__ import annotations

import types

import torch
from transformers import Trainer

from llm_unlearn.modeling import apply_lora
from llm_unlearn.train.trainer import UnlearnTrainer


def test_flops_equal_the_trainers_and_count_parameters_once(tiny_world, monkeypatch):
    pm = apply_lora(tiny_world["make_model"](), r=2, alpha=4, target_modules=["q_proj"])
    calls = []
    fake = types.SimpleNamespace(model=pm, _flop_params=None)
    for n in (3, 7):
        inputs = {"input_ids": torch.ones(2, n, dtype=torch.long)}
        want = Trainer.floating_point_ops(fake, inputs)
        assert want > 0
        assert UnlearnTrainer.floating_point_ops(fake, inputs) == want
    count = fake._flop_params
    assert count == pm.num_parameters(exclude_embeddings=True)
    monkeypatch.setattr(pm, "num_parameters", lambda **kw: calls.append(kw) or 0)
    assert (
        UnlearnTrainer.floating_point_ops(fake, {"input_ids": torch.ones(1, 5, dtype=torch.long)})
        == 6 * 5 * count
    )
    assert calls == []  # the count was taken once, not again
    assert UnlearnTrainer.floating_point_ops(fake, {"labels": torch.ones(1, 2)}) == 0
