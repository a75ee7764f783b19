"""Pieces several methods share, defined once: the retain side (retain NLL, divergence to the
reference), its reference needs, the NPO and gradient-ascent forget terms.

Every method's retain side is the same block: a retain NLL weighted by ``retain_weight``, plus the
divergence to the reference (``retain_divergence``) when ``divergence_weight > 0`` (off by default for
the peer framework's methods, as in their papers). RMU replaces the NLL by its own retain term, PDU
weights the NLL by its dual multiplier.
"""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue


def divergence_on(o) -> bool:
    """The retain divergence is part of the loss."""
    return o.retain_divergence != "none" and o.divergence_weight > 0


def retain_needs(o) -> str | None:
    """What the retain side needs from the reference: the divergence's log-probs or distributions."""
    if not divergence_on(o):
        return None
    return "logp" if o.retain_divergence == "token_renyi_legacy" else "dist"


def with_retain(o, forget: str | None = None) -> ReferenceNeeds:
    """The needs of a method: `forget` on the forget side, the retain block's on the retain side."""
    return ReferenceNeeds(forget=forget, retain=retain_needs(o))


def pushed_rows_logp(step: Step):
    """(model log p per pushed forget token, their rows)."""
    return step.logp[step.tok_push], step.pos.rows[step.tok_push]


def npo_term(step: Step, o) -> TermValue:
    """NPO on the pushed forget tokens (token level) or on their per-sequence sums (sequence level)."""
    logp = step.logp[step.tok_push]
    ref = step.pushed_forget(step.reference().forget_logp)
    if o.npo_level == "sequence":
        rows = step.pos.rows[step.tok_push]
        logp = losses.row_sums(logp, rows, step.n_rows)[step.push]
        ref = losses.row_sums(ref.float(), rows, step.n_rows)[step.push]
        unit = T.FORGET_ROWS
    else:
        unit = T.FORGET_TOKENS
    return TermValue(losses.npo_loss(logp, ref.to(logp.dtype), o.npo_beta), o.forget_weight, unit)


def forget_ascent_term(step: Step, o) -> TermValue:
    """The forget NLL, entering the total with weight -forget_weight (gradient ascent)."""
    return TermValue(losses.nll_loss(step.logp[step.tok_push]), -o.forget_weight, T.FORGET_TOKENS)


def retain_nll_term(step: Step, o) -> TermValue:
    return TermValue(losses.nll_loss(step.logp[step.tok_retain]), o.retain_weight, T.RETAIN_TOKENS)


def divergence_term(step: Step, o) -> TermValue:
    """D(model || reference) on the retain tokens: Rényi (alpha), KL, or the upstream token form."""
    logits = step.logits[step.tok_retain]
    ref = step.reference()
    kind = o.retain_divergence
    if kind == "token_renyi_legacy":
        logp = step.logp[step.tok_retain]
        value = losses.legacy_token_renyi(logp, ref.retain_logp.to(logp.dtype), o.renyi_alpha)
    elif ref.retain_topk is not None:  # top-k reference cache (KL is the alpha = 1 case)
        mask = logits.new_ones(logits.shape[0], dtype=bool)
        topk_logp, topk_idx, tail = ref.retain_topk
        alpha = 1.0 if kind == "kl" else o.renyi_alpha
        value = losses.renyi_divergence_topk(logits, topk_logp, topk_idx, mask, alpha, ref_tail_logprobs=tail)
    elif kind == "kl":
        value = losses.kl_divergence(logits, ref.retain_logits, logits.new_ones(logits.shape[0], dtype=bool))
    else:
        mask = logits.new_ones(logits.shape[0], dtype=bool)
        value = losses.renyi_divergence(logits, ref.retain_logits, mask, o.renyi_alpha)
    return TermValue(value, o.divergence_weight, T.RETAIN_TOKENS)


def retain_block(step: Step, o, nll_weight: float | None = None) -> dict[str, TermValue]:
    """Retain NLL (weight `nll_weight`, default retain_weight) and, when on, the divergence."""
    out: dict[str, TermValue] = {}
    if not step.has_retain:
        return out
    weight = o.retain_weight if nll_weight is None else nll_weight
    if weight > 0 or nll_weight is not None:
        term = retain_nll_term(step, o)
        out[T.RETAIN_NLL] = TermValue(term.value, weight, term.unit)
    if divergence_on(o):
        out[T.DIVERGENCE] = divergence_term(step, o)
    return out
