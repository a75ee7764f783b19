"""The unlearning methods of the main peer framework (locuslab/open-unlearning), registered in the
objective registry next to the built-in ones (``objectives.py``). Formulas: ``llm_unlearn.losses``;
defaults and sources: ``config/presets.py`` (METHOD_DEFAULTS) and ``docs/methods.md``.

Every method's retain side is the same block: a retain NLL weighted by ``retain_weight``, plus the
divergence to the reference (``retain_divergence``) when ``divergence_weight > 0`` (off by default for
these methods, as in their papers). RMU replaces the NLL by its own retain term, PDU weights the NLL by
its dual multiplier.
"""

from __future__ import annotations

import torch

from llm_unlearn import losses
from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import answer_logits, decoder_layers
from llm_unlearn.train.objectives import divergence_term, register, retain_nll_term
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue, answer_positions

SIMNPO, DPO, RMU_FORGET, RMU_RETAIN = "simnpo", "dpo", "rmu_forget", "rmu_retain"
UNDIAL, WGA, SATIMP, CE_U, PDU_FORGET, PDU_DUAL = "undial", "wga", "satimp", "ce_u", "pdu_forget", "pdu_dual"


def _divergence_on(o) -> bool:
    return o.retain_divergence != "none" and o.divergence_weight > 0


def _retain_needs(o) -> str | None:
    if not _divergence_on(o):
        return None
    return "logp" if o.retain_divergence == "token_renyi_legacy" else "dist"


def retain_block(step: Step, o, nll_weight: float | None = None) -> dict[str, TermValue]:
    """Retain NLL (weight `nll_weight`, default retain_weight) and, when on, the divergence."""
    out: dict[str, TermValue] = {}
    if not step.has_retain:
        return out
    weight = o.retain_weight if nll_weight is None else nll_weight
    if weight > 0 or nll_weight is not None:
        term = retain_nll_term(step, o)
        out[T.RETAIN_NLL] = TermValue(term.value, weight, term.unit)
    if _divergence_on(o):
        out[T.DIVERGENCE] = divergence_term(step, o)
    return out


def _with_retain(o, forget: str | None = None) -> ReferenceNeeds:
    return ReferenceNeeds(forget=forget, retain=_retain_needs(o))


def _pushed_rows_logp(step: Step):
    """(model log p per pushed forget token, their rows)."""
    return step.logp[step.tok_push], step.pos.rows[step.tok_push]


# ----------------------------------------------------------------------------- SimNPO
@register(
    "simnpo",
    terms=(SIMNPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=_with_retain,
    summary="SimNPO: reference-free, length-normalized NPO (Fan et al. 2024)",
)
def simnpo(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        logp, rows = _pushed_rows_logp(step)
        value = losses.simnpo_loss(logp, rows, step.n_rows, o.simnpo_beta, o.simnpo_delta)
        out[SIMNPO] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
    return {**out, **retain_block(step, o)}


# ----------------------------------------------------------------------------- DPO with alternatives
def _alt_sums(step: Step):
    """Per pushed forget row: the model's and the reference's log-probability of its alternative answer
    (sums over the alternative's answer tokens)."""
    b, push = step.batch, step.push
    ids, labels, mask = b["alt_input_ids"][push], b["alt_labels"][push], b["alt_attention_mask"][push]
    pos = answer_positions(labels)
    logits = answer_logits(step.model, step.selector, ids, mask, pos)
    win = losses.row_sums(losses.token_log_probs(logits, pos.targets), pos.rows, ids.shape[0])
    ref_logits, ref_pos, _ = step.source.forward(step.model, ids, mask, labels)
    win_ref = losses.row_sums(losses.token_log_probs(ref_logits, ref_pos.targets), ref_pos.rows, ids.shape[0])
    return win, win_ref


def _dpo(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        logp, rows = _pushed_rows_logp(step)
        ref = step.pushed_forget(step.reference().forget_logp).to(logp.dtype)
        lose = losses.row_sums(logp, rows, step.n_rows)[step.push]
        lose_ref = losses.row_sums(ref, rows, step.n_rows)[step.push]
        win, win_ref = _alt_sums(step)
        value = losses.dpo_loss(win, win_ref.to(win.dtype), lose, lose_ref, o.dpo_beta)
        out[DPO] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
    return {**out, **retain_block(step, o)}


@register(
    "idk_dpo",
    terms=(DPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=lambda o: _with_retain(o, "logp"),
    alternatives=True,
    summary="DPO preferring an 'I don't know' answer to the forget answer (IdkDPO)",
)
def idk_dpo(step: Step, o) -> dict[str, TermValue]:
    return _dpo(step, o)


@register(
    "altpo",
    terms=(DPO, T.RETAIN_NLL, T.DIVERGENCE),
    needs=lambda o: _with_retain(o, "logp"),
    alternatives=True,
    summary="AltPO: DPO preferring a plausible alternative answer (Mekala et al. 2024)",
)
def altpo(step: Step, o) -> dict[str, TermValue]:
    return _dpo(step, o)


# ----------------------------------------------------------------------------- RMU
def rmu_layer(o, model) -> int:
    """The steered layer: `rmu_layer`, or 7, or the middle layer ((n - 1) // 2) of a model with fewer than 8 layers."""
    if o.rmu_layer is not None:
        return int(o.rmu_layer)
    n = len(decoder_layers(model))
    return 7 if n > 7 else (n - 1) // 2


def rmu_train_layers(o, model) -> list[int]:
    """RMU trains the steered layer and the two below it (WMDP: layers 5, 6, 7 for layer 7)."""
    layer = rmu_layer(o, model)
    return list(range(max(0, layer - 2), layer + 1))


def _label_positions(labels: torch.Tensor, rows_mask: torch.Tensor):
    """(flat indices into [B*T], their rows) of the labelled positions of the rows in `rows_mask`."""
    valid = labels.ne(IGNORE_INDEX) & rows_mask[:, None]
    flat = valid.reshape(-1).nonzero(as_tuple=True)[0]
    return flat, torch.div(flat, labels.shape[1], rounding_mode="floor")


@register(
    "rmu",
    terms=(RMU_FORGET, RMU_RETAIN),
    capture_layer=rmu_layer,
    train_layers=rmu_train_layers,
    needs=lambda o: ReferenceNeeds(hidden=o.retain_weight > 0),
    summary="RMU: steer a layer's forget activations to a random direction, keep retain ones (Li et al. 2024)",
)
def rmu(step: Step, o) -> dict[str, TermValue]:
    hidden, labels, out = step.hidden, step.batch["labels"], {}
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    if step.has_forget:
        if "rmu_control" not in step.state:  # drawn once per run (seeded: the same on resume)
            vec = losses.rmu_control_vector(hidden.shape[-1], o.rmu_steering, seed=0)
            step.state["rmu_control"] = vec.tolist()
        control = torch.tensor(step.state["rmu_control"], dtype=hidden.dtype, device=hidden.device)
        flat, rows = _label_positions(labels, step.push)
        value = losses.rmu_forget_loss(flat_h.index_select(0, flat), control, rows, step.n_rows)
        out[RMU_FORGET] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
    retain = ~step.is_forget
    if bool(retain.any()) and o.retain_weight > 0:
        b = step.batch
        _, _, frozen = step.source.forward(
            step.model, b["input_ids"], b["attention_mask"], labels, rmu_layer(o, step.model)
        )
        flat, rows = _label_positions(labels, retain)
        frozen_flat = frozen.reshape(-1, frozen.shape[-1]).index_select(0, flat)
        value = losses.rmu_retain_loss(flat_h.index_select(0, flat), frozen_flat, rows, step.n_rows)
        out[RMU_RETAIN] = TermValue(value, o.retain_weight, T.RETAIN_ROWS)
    return out


# ----------------------------------------------------------------------------- distillation-style
@register(
    "undial",
    terms=(UNDIAL, T.RETAIN_NLL, T.DIVERGENCE),
    needs=lambda o: _with_retain(o, "dist"),
    summary="UNDIAL: distill towards the reference with the true token's logit lowered (Dong et al. 2025)",
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


@register(
    "ce_u",
    terms=(CE_U, T.RETAIN_NLL, T.DIVERGENCE),
    needs=_with_retain,
    summary="CE-U: cross-entropy towards the model's own distribution without the true token (Yang 2025)",
)
def ce_u(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    rows = step.pos.rows
    first = torch.ones_like(rows, dtype=torch.bool)  # the first answer token of each row is not trained
    first[1:] = rows[1:] != rows[:-1]
    keep = step.tok_push & ~first
    if bool(keep.any()):
        value = losses.ce_u_loss(step.logits[keep], step.pos.targets[keep])
        out[CE_U] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    return {**out, **retain_block(step, o)}


# ----------------------------------------------------------------------------- weighted ascent
@register(
    "wga",
    terms=(WGA, T.RETAIN_NLL, T.DIVERGENCE),
    needs=_with_retain,
    summary="WGA: gradient ascent weighted by p^beta (Wang et al. 2025)",
)
def wga(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        out[WGA] = TermValue(
            losses.wga_loss(step.logp[step.tok_push], o.wga_beta), o.forget_weight, T.FORGET_TOKENS
        )
    return {**out, **retain_block(step, o)}


@register(
    "satimp",
    terms=(SATIMP, T.RETAIN_NLL, T.DIVERGENCE),
    needs=_with_retain,
    summary="SatImp: ascent weighted by p^b1 (1-p)^b2 (saturation x importance)",
)
def satimp(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    if step.has_forget:
        value = losses.satimp_loss(step.logp[step.tok_push], o.satimp_beta1, o.satimp_beta2)
        out[SATIMP] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    return {**out, **retain_block(step, o)}


# ----------------------------------------------------------------------------- PDU
def _global_retain_nll(step: Step, out: dict[str, TermValue]) -> float | None:
    """This step's retain NLL for the dual update: under data parallelism the mean over every
    process's retain tokens (one all-reduce, on every process every step, so every process keeps the
    same multiplier); None when no process has retain tokens."""
    import torch.distributed as dist

    nll = float(out[T.RETAIN_NLL].value.detach()) if T.RETAIN_NLL in out else None
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return nll
    n = float(step.tok_retain.sum()) if nll is not None else 0.0
    t = torch.tensor([(nll or 0.0) * n, n], dtype=torch.float64, device=step.logp.device)
    dist.all_reduce(t)
    return float(t[0]) / float(t[1]) if float(t[1]) > 0 else None


@register(
    "pdu",
    terms=(PDU_FORGET, T.RETAIN_NLL, PDU_DUAL),
    needs=_with_retain,
    summary="PDU: forget term + a dual multiplier on the retain NLL (constraint NLL <= eps)",
)
def pdu(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    dual = step.state.setdefault("pdu_dual", float(o.retain_weight))  # the multiplier starts at alpha
    if step.has_forget:
        value = losses.pdu_forget_loss(step.logits[step.tok_push])
        out[PDU_FORGET] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    out.update(retain_block(step, o, nll_weight=dual))
    retain_nll = _global_retain_nll(step, out)
    if retain_nll is not None:
        eps = step.state.setdefault(
            "pdu_eps", o.pdu_retain_eps if o.pdu_retain_eps is not None else retain_nll
        )
        step.state["pdu_dual"] = losses.pdu_dual_update(dual, retain_nll, eps, o.pdu_dual_step)
    out[PDU_DUAL] = TermValue(torch.tensor(dual, dtype=step.logp.dtype), None, T.ROWS)
    return out
