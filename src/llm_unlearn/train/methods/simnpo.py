"""simnpo: reference-free, length-normalized NPO, plus the retain block."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import pushed_rows_logp, retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue

SIMNPO = "simnpo"


@register(
    "simnpo",
    terms=(SIMNPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=with_retain,
    summary="SimNPO: reference-free, length-normalized NPO (Fan et al. 2024)",
    source="Fan et al. 2024 (arXiv:2410.07163); open-unlearning SimNPO.yaml",
)
def simnpo(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        logp, rows = pushed_rows_logp(step)
        value = losses.simnpo_loss(logp, rows, step.n_rows, o.simnpo_beta, o.simnpo_delta)
        out[SIMNPO] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
    return {**out, **retain_block(step, o)}
