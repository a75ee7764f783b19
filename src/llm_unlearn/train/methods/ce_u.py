"""ce_u: cross-entropy towards the model's own distribution without the true token, plus the retain
block."""

from __future__ import annotations

import torch

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue

CE_U = "ce_u"


@register(
    "ce_u",
    terms=(CE_U, T.RETAIN_NLL, T.DIVERGENCE),
    needs=with_retain,
    summary="CE-U: cross-entropy towards the model's own distribution without the true token (Yang 2025)",
    source="Yang 2025 (arXiv:2503.01224); open-unlearning CEU.yaml",
)
def ce_u(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    rows = step.pos.rows
    first = torch.ones_like(rows, dtype=torch.bool)  # the first answer token of each row is not trained
    first[1:] = rows[1:] != rows[:-1]
    keep = step.tok_push & ~first
    if bool(keep.any()):
        value = losses.ce_u_loss(step.logits[keep], step.pos.targets[keep])
        out[CE_U] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    return {**out, **retain_block(step, o)}
