"""undial: distill towards the reference with the true token's logit lowered, plus the retain block."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue

UNDIAL = "undial"


@register(
    "undial",
    terms=(UNDIAL, T.RETAIN_NLL, T.DIVERGENCE),
    needs=lambda o: with_retain(o, "dist"),
    summary="UNDIAL: distill towards the reference with the true token's logit lowered (Dong et al. 2025)",
    source="Dong et al., NAACL 2025 (arXiv:2402.10052); open-unlearning UNDIAL.yaml",
)
def undial(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        ref = step.reference()
        if ref.forget_logits is None:  # a top-k cache holds no full distribution: computed live
            ref = step.source.live_outputs(step.model, step.batch, ReferenceNeeds(forget="dist"), step.pos)
        ref_logits = ref.forget_logits
        if ref_logits.shape[0] != int(step.tok_push.sum()):
            ref_logits = ref_logits[step.tok_push[step.tok_forget]]
        logits, targets = step.logits[step.tok_push], step.pos.targets[step.tok_push]
        out[UNDIAL] = TermValue(
            losses.undial_loss(logits, ref_logits, targets, o.undial_strength),
            o.forget_weight,
            T.FORGET_TOKENS,
        )
    return {**out, **retain_block(step, o)}
