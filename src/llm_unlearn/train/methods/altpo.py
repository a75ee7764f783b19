"""altpo: DPO preferring a plausible alternative answer to the forget answer."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._dpo import DPO_TERMS, dpo_needs, dpo_terms
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "altpo",
    terms=(*DPO_TERMS, T.RETAIN_NLL, T.DIVERGENCE),
    needs=dpo_needs,
    alternatives=True,
    summary="AltPO: DPO preferring a plausible alternative answer (Mekala et al. 2024)",
    source="Mekala et al. 2024 (arXiv:2409.13474); open-unlearning community/methods/AltPO",
)
def altpo(step: Step, o) -> dict[str, TermValue]:
    return dpo_terms(step, o)
