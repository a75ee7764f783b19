"""npo_rt_div (the default): NPO on forget + NLL on retain + divergence to the reference on retain."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import (
    divergence_on,
    divergence_term,
    npo_term,
    retain_nll_term,
    with_retain,
)
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue


def npo_needs(o) -> ReferenceNeeds:
    """Forget log-probs for NPO (when it is on), the divergence's needs on the retain side."""
    return with_retain(o, "logp" if o.forget_weight > 0 else None)


@register(
    "npo_rt_div",
    terms=(T.NPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=npo_needs,
    summary="NPO on forget + NLL on retain + divergence to the reference on retain (Clausen 2025)",
    source="Clausen (2025), SemEval-2025 Task 4; the Rényi divergence replaces the seed's token-level "
    "term (this project)",
)
def npo_rt_div(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if o.forget_weight > 0 and step.has_forget:
        out[T.NPO] = npo_term(step, o)
    if step.has_retain:
        out[T.RETAIN_NLL] = retain_nll_term(step, o)
        if divergence_on(o):
            out[T.DIVERGENCE] = divergence_term(step, o)
    return out
