"""gradient_difference: ascend the forget NLL, descend the retain NLL."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import forget_ascent_term, retain_nll_term
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "gradient_difference",
    terms=(T.FORGET_NLL, T.RETAIN_NLL),
    summary="ascend the forget NLL, descend the retain NLL",
    source="baseline; open-unlearning GradDiff",
)
def gradient_difference(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        out[T.FORGET_NLL] = forget_ascent_term(step, o)
    if step.has_retain:
        out[T.RETAIN_NLL] = retain_nll_term(step, o)
    return out
