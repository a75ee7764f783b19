"""The loss of one batch: answer positions -> model logits -> calibration gate -> the objective's terms
(``train/methods/``, looked up in ``train/registry.py``) -> weighted total, every term checked for NaN / inf.

    total = sum over the objective's terms of  weight x scale(unit) x [retain_scale] x value

``scale`` is 1 on one process; under data parallelism it re-weights each term to the mean over the
global batch (``trainer.global_term_scale``). ``retain_scale`` multiplies the retain-side terms (unit:
retain tokens or rows): calibration.retain_guard's multiplier (``train/retain_guard.py``), else 1.
"""

from __future__ import annotations

import torch

from llm_unlearn import losses
from llm_unlearn.train import methods
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import AnswerHeadSelector, answer_logits, capture_layer_output
from llm_unlearn.train.process import world_size
from llm_unlearn.train.reference import LiveReference, as_reference
from llm_unlearn.train.step import Step, answer_positions

_RETAIN_UNITS = (T.RETAIN_TOKENS, T.RETAIN_ROWS)


def pushed_rows(batch, is_forget: torch.Tensor) -> torch.Tensor:
    """[B] bool: the forget rows that the forget term pushes (all forget rows without a gate)."""
    active = batch.get("forget_active")
    return is_forget if active is None else is_forget & active.bool().to(is_forget.device)


def unlearning_loss(
    model,
    batch,
    obj,
    selector: AnswerHeadSelector | None = None,
    reference=None,
    term_scale=None,
    row_nll_out: dict | None = None,
    state: dict | None = None,
    epoch: float = 0.0,
    pull_weight: float = 0.0,
    retain_scale: float = 1.0,
):
    """The loss of one batch and its terms (detached floats for logging).

    batch: input_ids [B, T], attention_mask [B, T], labels [B, T] (IGNORE_INDEX on prompt and padding),
    is_forget [B] bool. `obj` is the ObjectiveOptions. `reference`: a reference source
    (``train/reference.py``: live or cached), precomputed ReferenceOutputs, or None (live: the same
    model with its adapter disabled, computed only if the objective asks for it).

    `term_scale` multiplies each term where it enters the total (not the logged values): a dict
    {unit: scale}, or a function of the pushed forget rows [B] returning it (see
    `trainer.global_term_scale`).

    Calibration (train/calibration.py): `forget_active` [B] bool drops forget rows from the forget term;
    `forget_nll_cap` [B] float drops a forget row whose mean answer NLL in this very forward pass is
    already >= its cap (inf: no cap), so a row stops being pushed at the step it reaches the holdout's
    typical loss, not only at the next evaluation. `row_nll_out["row_nll"]` receives those row NLLs,
    `row_nll_out["units"]` the unit of each term, `row_nll_out["push"]` the pushed forget rows [B].
    `forget_pull_cap` [B] (calibration.pull): rows above it get ``pull_weight x`` their NLL (`_pull_back`).
    `state`: the objective's state across steps; `epoch`: epochs of the chunk completed before this
    step (PDU's warm-up reads it).
    A term whose rows are absent from the batch is exactly 0 (absent from the terms).
    """
    labels, is_forget = batch["labels"], batch["is_forget"].bool()
    batch = {**batch, "is_forget": is_forget}
    pos = answer_positions(labels)
    objective = methods.get(obj.method)
    layer = objective.capture_layer(obj, model) if objective.capture_layer else None
    with capture_layer_output(model, layer) as captured:
        split = _may_split(model, layer)
        logits = answer_logits(model, selector, batch["input_ids"], batch["attention_mask"], pos, split)
    logp = losses.token_log_probs(logits, pos.targets)
    push = _gate(batch, is_forget, logp, pos, row_nll_out)
    if callable(term_scale):
        term_scale = term_scale(push)
    source = as_reference(reference) if reference is not None else LiveReference(selector)
    needs = methods.needs_of(obj)
    step = Step(
        model=model,
        batch=batch,
        pos=pos,
        logits=logits,
        logp=logp,
        is_forget=is_forget,
        push=push,
        get_reference=lambda: source.outputs(model, batch, needs, pos),
        source=source,
        selector=selector,
        hidden=captured.get("hidden"),
        state=state if state is not None else {},
        epoch=float(epoch),
    )
    found = objective.compute(step, obj)
    total = _weighted_total(found, logits, term_scale, retain_scale)
    values = {name: term.value for name, term in found.items()}
    if (pull := _pull_back(batch, is_forget, logp, pos, pull_weight)) is not None:
        total, values[T.FORGET_PULL] = total + pull_weight * pull, pull
    if row_nll_out is not None:  # what each logged term is a mean over (global_terms)
        row_nll_out["units"] = {name: term.unit for name, term in found.items()}
        row_nll_out["push"] = push
    if ("forget_active" in batch or "forget_nll_cap" in batch) and bool(is_forget.any()):
        values[T.FORGET_ACTIVE] = (push.sum() / is_forget.sum()).detach().to(logp.dtype)
    for name, value in values.items():
        losses.check_finite(name, value)
    losses.check_finite("loss", total)
    return total, {k: float(v.detach()) for k, v in values.items()}


def _weighted_total(found, logits, term_scale, retain_scale: float) -> torch.Tensor:
    """sum of weight x scale(unit) x [retain_scale on the retain-side units] x value (module docstring)."""
    total = logits.sum() * 0.0  # keeps the graph connected when every term is absent
    for term in found.values():
        if term.weight is not None:
            scale = term_scale.get(term.unit, 1.0) if term_scale else 1.0
            if retain_scale != 1.0 and term.unit in _RETAIN_UNITS:
                scale = scale * retain_scale
            total = total + (term.weight * scale) * term.value
    return total


def _may_split(model, layer) -> bool:
    """One forward per length group (head.answer_logits) only where the model takes several forwards
    before its backward (one process, no wrapper) and no layer's output is captured (one a forward)."""
    return layer is None and world_size() == 1 and not hasattr(model, "module")


def _gate(batch, is_forget, logp, pos, row_nll_out) -> torch.Tensor:
    """The pushed forget rows: the evaluation's gate (`forget_active`), then the per-step caps."""
    push = pushed_rows(batch, is_forget)
    caps = batch.get("forget_nll_cap")
    if caps is None:
        return push
    row_nll = losses.row_mean_nll(logp.detach(), pos.rows, is_forget.shape[0], empty=float("inf"))
    if row_nll_out is not None:  # the caller follows the units' losses between evaluations
        row_nll_out["row_nll"] = row_nll
    return push & (row_nll < caps.to(logp.device, logp.dtype))


def _pull_back(batch, is_forget, logp, pos, weight: float) -> torch.Tensor | None:
    """calibration.pull: the mean, over the forget rows whose mean answer NLL is above their
    ``forget_pull_cap``, of that NLL (with its gradient: minimizing it draws them back toward the
    holdout); None when no row is above (or no pull is asked for)."""
    caps = batch.get("forget_pull_cap")
    if caps is None or weight <= 0:
        return None
    row_nll = losses.row_mean_nll(logp, pos.rows, is_forget.shape[0], empty=0.0)
    over = is_forget & (row_nll.detach() > caps.to(logp.device, logp.dtype))
    if not bool(over.any()):
        return None
    return row_nll[over].mean()
