"""idk_dpo: DPO preferring an "I don't know" answer to the forget answer."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._dpo import DPO_TERMS, dpo_needs, dpo_terms
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "idk_dpo",
    terms=(*DPO_TERMS, T.RETAIN_NLL, T.DIVERGENCE),
    needs=dpo_needs,
    alternatives=True,
    summary="DPO preferring an 'I don't know' answer to the forget answer (IdkDPO)",
    source="Rafailov et al. 2023; open-unlearning DPO.yaml, tofu/idk.yaml",
)
def idk_dpo(step: Step, o) -> dict[str, TermValue]:
    return dpo_terms(step, o)
