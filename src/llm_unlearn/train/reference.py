"""The reference model's outputs for a batch, behind one interface: ``source.outputs(model, batch,
needs, pos)``. The trainer asks; whether they are computed now or read from the cache is the
source's business.

* :class:`LiveReference`: the same model with its adapter disabled, under ``torch.no_grad()``, on only
  the rows that need it (forget rows, retain rows or both, as the objective's
  :class:`~llm_unlearn.train.step.ReferenceNeeds` say).
* :class:`CachedReference`: read from a :class:`~llm_unlearn.train.cache.ReferenceCache`, computed
  once per run (rows carry a ``row_key``).
* :class:`FixedReference`: outputs computed beforehand (tests, benchmarks).

Which one a run uses: ``train/cache_mode.py`` (the policy, ``choose_mode``) and
``train/reference_source.py`` (``for_run``: the run's source, building or reusing the cache).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llm_unlearn import losses
from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
from llm_unlearn.train.head import AnswerHeadSelector, answer_logits, unwrap_model
from llm_unlearn.train.methods import as_needs
from llm_unlearn.train.step import AnswerPositions, ReferenceOutputs, answer_positions


# ----------------------------------------------------------------------------- computing it
@contextlib.contextmanager
def reference_mode(model):
    """Eval mode, no autograd, adapter disabled; the training flag is restored afterwards."""
    peft = unwrap_model(model)
    was_training = peft.training
    peft.eval()
    try:
        with torch.no_grad(), adapter_off(model):
            yield
    finally:
        peft.train(was_training)


def compute_reference(model, selector, batch, needs, pos: AnswerPositions | None = None) -> ReferenceOutputs:
    """The reference's outputs for `batch` (live): the model with its adapter disabled, no autograd, on
    the rows `needs` asks for. `needs` is a ReferenceNeeds or the objective's options. Dropout is left
    as the model has it (the trainer's forward and this one see the same mode)."""
    needs = as_needs(needs)
    is_forget = batch["is_forget"].bool()
    rows = torch.zeros_like(is_forget)
    if needs.forget:
        rows |= is_forget
    if needs.retain:
        rows |= ~is_forget
    out = ReferenceOutputs()
    if not bool(rows.any()):
        return out
    idx = rows.nonzero(as_tuple=True)[0]
    sub_pos = answer_positions(batch["labels"].index_select(0, idx))
    with torch.no_grad(), adapter_off(model):
        logits = answer_logits(
            model,
            selector,
            batch["input_ids"].index_select(0, idx),
            batch["attention_mask"].index_select(0, idx),
            sub_pos,
        )
    tok_forget = is_forget.index_select(0, idx).index_select(0, sub_pos.rows)
    for side, mask in (("forget", tok_forget), ("retain", ~tok_forget)):
        kind = getattr(needs, side)
        if kind is None:
            continue
        side_logits = logits[mask]
        setattr(out, f"{side}_logp", losses.token_log_probs(side_logits, sub_pos.targets[mask]))
        if kind == "dist":
            setattr(out, f"{side}_logits", side_logits)
    return out


def reference_logits(model, selector, rows: Sequence[Mapping[str, Any]], pad_token_id: int):
    """Reference logits [N, V] at the answer positions of tokenized `rows` (row-major), the targets [N],
    and the answer tokens of each row. The caller holds :func:`reference_mode`."""
    device = next(unwrap_model(model).parameters()).device
    ids, _ = pad_batch([r["input_ids"] for r in rows], pad_token_id, device=device)
    labels, _ = pad_batch([r["labels"] for r in rows], IGNORE_INDEX, device=device)
    attention = [r.get("attention_mask", [1] * len(r["input_ids"])) for r in rows]
    mask, _ = pad_batch(attention, 0, device=device)
    pos = answer_positions(labels)
    logits = answer_logits(model, selector, ids, mask, pos)
    return logits, pos.targets, labels[:, 1:].ne(IGNORE_INDEX).sum(1).tolist()


# ----------------------------------------------------------------------------- the sources
def adapter_off(model):
    """The context in which `model` is its own reference: adapter disabled (a plain model: as is)."""
    peft = unwrap_model(model)
    return peft.disable_adapter() if hasattr(peft, "disable_adapter") else contextlib.nullcontext()


class LiveReference:
    """Computes the reference on every call: the trained model with its adapter disabled, or, under
    full fine-tuning, `frozen` (a frozen copy of the starting model)."""

    kind = "live"

    def __init__(self, selector: AnswerHeadSelector | None = None, frozen=None):
        self.selector = selector
        self.frozen = frozen
        self.frozen_selector = AnswerHeadSelector(frozen) if frozen is not None else None

    def _target(self, model):
        return (self.frozen, self.frozen_selector) if self.frozen is not None else (model, self.selector)

    def outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        target, selector = self._target(model)
        return compute_reference(target, selector, batch, needs, pos)

    def live_outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        """Computed now, whatever the source (e.g. a full distribution a top-k cache does not hold)."""
        return self.outputs(model, batch, needs, pos)

    def forward(self, model, input_ids, attention_mask, labels, layer: int | None = None):
        """The reference on any sequences (e.g. alternative answers): (logits [N, V] at the answer
        positions of `labels`, those positions, the output of decoder layer `layer` or None)."""
        from llm_unlearn.train.head import capture_layer_output

        target, selector = self._target(model)
        pos = answer_positions(labels)
        with torch.no_grad(), adapter_off(target), capture_layer_output(target, layer) as captured:
            logits = answer_logits(target, selector, input_ids, attention_mask, pos)
        return logits, pos, captured.get("hidden")


class CachedReference:
    """Reads the reference from a ReferenceCache; what the cache does not hold (a batch without
    ``row_key``, other sequences, hidden states) is computed live."""

    kind = "cached"

    def __init__(self, cache, selector: AnswerHeadSelector | None = None, frozen=None):
        self.cache = cache
        self.live = LiveReference(selector, frozen)

    def outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        if "row_key" not in batch:
            return self.live.outputs(model, batch, needs, pos)
        return self.cache.lookup(batch, needs)

    def live_outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        return self.live.outputs(model, batch, needs, pos)

    def forward(self, model, input_ids, attention_mask, labels, layer: int | None = None):
        return self.live.forward(model, input_ids, attention_mask, labels, layer)


class FixedReference:
    """Outputs computed beforehand (tests, benchmarks); anything else is computed live."""

    kind = "fixed"

    def __init__(self, outputs: ReferenceOutputs):
        self.fixed = outputs
        self.live = LiveReference()

    def outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        return self.fixed

    def live_outputs(self, model, batch, needs, pos=None) -> ReferenceOutputs:
        return self.live.outputs(model, batch, needs, pos)

    def forward(self, model, input_ids, attention_mask, labels, layer: int | None = None):
        return self.live.forward(model, input_ids, attention_mask, labels, layer)


def as_reference(x):
    """A reference source from a source, a ReferenceOutputs, or a ReferenceCache."""
    if isinstance(x, ReferenceOutputs):
        return FixedReference(x)
    if hasattr(x, "outputs"):
        return x
    if hasattr(x, "lookup"):
        return CachedReference(x)
    raise TypeError(f"not a reference source: {type(x).__name__}")
