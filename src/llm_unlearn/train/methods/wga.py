"""wga: gradient ascent weighted by p^beta, plus the retain block."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue

WGA = "wga"


@register(
    "wga",
    terms=(WGA, T.RETAIN_NLL, T.DIVERGENCE),
    needs=with_retain,
    summary="WGA: gradient ascent weighted by p^beta (Wang et al. 2025)",
    source="Wang et al., ICLR 2025 (arXiv:2502.19301); open-unlearning WGA.yaml",
)
def wga(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        out[WGA] = TermValue(
            losses.wga_loss(step.logp[step.tok_push], o.wga_beta), o.forget_weight, T.FORGET_TOKENS
        )
    return {**out, **retain_block(step, o)}
