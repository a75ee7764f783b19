"""The objective registry: one small function per unlearning method.

An objective reads a :class:`~llm_unlearn.train.step.Step` (the model's answer-token log-probs and
logits of one batch, which rows are forget rows, the reference on request) and returns its named terms
(:class:`~llm_unlearn.train.step.TermValue`: value, weight in the total, unit). The formulas live in
:mod:`llm_unlearn.losses`; the driver that builds the step, applies the calibration gate, sums the
weighted terms and checks them is ``train/loss.py``.

Adding a method: write one function here, decorated with :func:`register` (its name, the terms it
produces, what it needs from the reference), add its formula to ``losses/`` if it is new, a test, and a
row in the README's table of methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llm_unlearn import losses
from llm_unlearn.errors import ConfigError
from llm_unlearn.train import terms as T
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue

Compute = Callable[[Step, object], dict[str, TermValue]]


@dataclass(frozen=True)
class Objective:
    name: str
    compute: Compute
    needs: Callable[[object], ReferenceNeeds]
    terms: tuple[str, ...]
    summary: str
    capture_layer: Callable | None = None  # (options, model) -> index of the decoder layer to capture
    alternatives: bool = False  # needs an alternative answer per forget row (alt_input_ids / alt_labels)
    train_layers: Callable | None = (
        None  # (options, model) -> the decoder layers the method trains (None: all)
    )


OBJECTIVES: dict[str, Objective] = {}


def register(
    name: str,
    *,
    terms: tuple[str, ...],
    needs=None,
    summary: str = "",
    capture_layer=None,
    alternatives: bool = False,
    train_layers=None,
):
    """Register `fn(step, options) -> {term: TermValue}` as the objective `name`. `needs(options)` says
    what the reference must provide (default: nothing); `capture_layer(options, model)` asks for the
    output of one decoder layer in `step.hidden`; `alternatives` for an alternative answer per forget row;
    `train_layers(options, model)` names the only decoder layers the method trains."""

    def wrap(fn: Compute) -> Compute:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = Objective(
            name=name,
            compute=fn,
            needs=needs or (lambda o: ReferenceNeeds()),
            terms=tuple(terms),
            summary=summary or (fn.__doc__ or "").strip().splitlines()[0],
            capture_layer=capture_layer,
            alternatives=alternatives,
            train_layers=train_layers,
        )
        return fn

    return wrap


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective.method {name!r} (known: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


def needs_of(options) -> ReferenceNeeds:
    """What the configured objective needs from the reference model."""
    return get(options.method).needs(options)


def _load_methods() -> None:
    """The methods of the peer framework (train/methods.py) register themselves on import."""
    import llm_unlearn.train.methods  # noqa: F401


def all_terms() -> tuple[str, ...]:
    """Every term name of every registered objective, in registration order, then forget_active."""
    seen: dict[str, None] = {}
    for obj in OBJECTIVES.values():
        seen.update(dict.fromkeys(obj.terms))
    seen[T.FORGET_ACTIVE] = None
    return tuple(seen)


# ----------------------------------------------------------------------------- shared pieces
def _divergence_on(o) -> bool:
    return o.retain_divergence != "none" and o.divergence_weight > 0


def _npo_needs(o) -> ReferenceNeeds:
    forget = "logp" if o.forget_weight > 0 else None
    retain = None
    if _divergence_on(o):
        retain = "logp" if o.retain_divergence == "token_renyi_legacy" else "dist"
    return ReferenceNeeds(forget=forget, retain=retain)


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


def forget_ascent_term(step: Step, o) -> TermValue:
    """The forget NLL, entering the total with weight -forget_weight (gradient ascent)."""
    return TermValue(losses.nll_loss(step.logp[step.tok_push]), -o.forget_weight, T.FORGET_TOKENS)


# ----------------------------------------------------------------------------- the methods
@register(
    "npo_rt_div",
    terms=(T.NPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=_npo_needs,
    summary="NPO on forget + NLL on retain + divergence to the reference on retain (Clausen 2025)",
)
def npo_rt_div(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if o.forget_weight > 0 and step.has_forget:
        out[T.NPO] = npo_term(step, o)
    if step.has_retain:
        out[T.RETAIN_NLL] = retain_nll_term(step, o)
        if _divergence_on(o):
            out[T.DIVERGENCE] = divergence_term(step, o)
    return out


@register(
    "npo",
    terms=(T.NPO,),
    needs=lambda o: ReferenceNeeds(forget="logp"),
    summary="NPO on forget only: no retain term (Zhang et al. 2024)",
)
def npo(step: Step, o) -> dict[str, TermValue]:
    return {T.NPO: npo_term(step, o)} if step.has_forget else {}


@register("gradient_ascent", terms=(T.FORGET_NLL,), summary="ascend the forget NLL")
def gradient_ascent(step: Step, o) -> dict[str, TermValue]:
    return {T.FORGET_NLL: forget_ascent_term(step, o)} if step.has_forget else {}


@register(
    "gradient_difference",
    terms=(T.FORGET_NLL, T.RETAIN_NLL),
    summary="ascend the forget NLL, descend the retain NLL",
)
def gradient_difference(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        out[T.FORGET_NLL] = forget_ascent_term(step, o)
    if step.has_retain:
        out[T.RETAIN_NLL] = retain_nll_term(step, o)
    return out


@register(
    "sugd",
    terms=(T.SUGD, T.FORGET_NLL, T.RETAIN_NLL),
    summary="AILS-NTUA: mean over rows of factor x per-row mean NLL (-1 forget, +0.5 retain)",
)
def sugd(step: Step, o) -> dict[str, TermValue]:
    per_row = losses.row_mean_nll(step.logp, step.pos.rows, step.n_rows)
    factor = per_row.new_full(per_row.shape, o.sugd_retain_factor)
    factor = factor.masked_fill(step.is_forget, o.sugd_forget_factor)
    factor = factor.masked_fill(step.is_forget & ~step.push, 0.0)  # rows the calibration gate switched off
    out = {T.SUGD: TermValue(losses.sugd_loss(per_row, factor), 1.0, T.ROWS)}
    if bool(step.tok_forget.any()):  # logged only
        out[T.FORGET_NLL] = TermValue(
            losses.nll_loss(step.logp[step.tok_forget]).detach(), None, T.FORGET_TOKENS
        )
    if step.has_retain:
        out[T.RETAIN_NLL] = TermValue(
            losses.nll_loss(step.logp[step.tok_retain]).detach(), None, T.RETAIN_TOKENS
        )
    return out


_load_methods()
