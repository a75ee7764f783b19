"""npo: NPO on the forget set plus the retain block (a retain NLL weighted by retain_weight), as
open-unlearning's NPO.yaml (beta 0.1, gamma 1, alpha 1, retain_loss_type NLL)."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import npo_term, retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "npo",
    terms=(T.NPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=lambda o: with_retain(o, "logp"),
    summary="NPO on forget sequences + retain NLL (Zhang et al. 2024; open-unlearning NPO.yaml)",
    source="Zhang et al. 2024 (arXiv:2404.05868); open-unlearning NPO.yaml",
)
def npo(step: Step, o) -> dict[str, TermValue]:
    out = {T.NPO: npo_term(step, o)} if step.has_forget else {}
    return {**out, **retain_block(step, o)}
