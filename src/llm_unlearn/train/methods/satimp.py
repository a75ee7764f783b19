"""satimp: ascent weighted by p^b1 (1-p)^b2 (saturation x importance), plus the retain block."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue

SATIMP = "satimp"


@register(
    "satimp",
    terms=(SATIMP, T.RETAIN_NLL, T.DIVERGENCE),
    needs=with_retain,
    summary="SatImp: ascent weighted by p^b1 (1-p)^b2 (saturation x importance)",
    source="Yang et al., ICML 2025 (arXiv:2505.11953); open-unlearning SatImp.yaml",
)
def satimp(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        value = losses.satimp_loss(step.logp[step.tok_push], o.satimp_beta1, o.satimp_beta2)
        out[SATIMP] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    return {**out, **retain_block(step, o)}
