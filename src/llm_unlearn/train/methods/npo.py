"""npo: NPO on the forget set only, no retain term."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import npo_term
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue


@register(
    "npo",
    terms=(T.NPO,),
    needs=lambda o: ReferenceNeeds(forget="logp"),
    summary="NPO on forget only: no retain term (Zhang et al. 2024)",
    source="Zhang et al. 2024 (arXiv:2404.05868); open-unlearning NPO.yaml",
)
def npo(step: Step, o) -> dict[str, TermValue]:
    return {T.NPO: npo_term(step, o)} if step.has_forget else {}
