"""gradient_ascent: ascend the forget NLL."""

from __future__ import annotations

from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import forget_ascent_term
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "gradient_ascent",
    terms=(T.FORGET_NLL,),
    summary="ascend the forget NLL",
    source="baseline; open-unlearning GradAscent",
)
def gradient_ascent(step: Step, o) -> dict[str, TermValue]:
    return {T.FORGET_NLL: forget_ascent_term(step, o)} if step.has_forget else {}
