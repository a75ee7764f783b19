"""The reference model's outputs for a batch, behind one interface: ``source.outputs(model, batch,
needs, pos)``. The trainer asks; whether they are computed now or read from the cache is the
source's business.

* :class:`LiveReference`: the same model with its adapter disabled, under ``torch.no_grad()``, on only
  the rows that need it (forget rows, retain rows or both, as the objective's
  :class:`~llm_unlearn.train.step.ReferenceNeeds` say).
* :class:`CachedReference`: read from a :class:`~llm_unlearn.train.cache.ReferenceCache`, computed
  once per run (rows carry a ``row_key``).

:func:`for_run` decides which one a run uses (``train.reference_cache``: ``auto`` = the cache when
the exact distributions fit the budget, else live; ``full`` / ``topk`` / ``off`` on request) and says
why in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from llm_unlearn import losses
from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
from llm_unlearn.train.head import AnswerHeadSelector, answer_logits, unwrap_model, vocab_size
from llm_unlearn.train.step import (
    AnswerPositions,
    ReferenceNeeds,
    ReferenceOutputs,
    answer_positions,
    answer_token_count,
    as_needs,
)

log = logging.getLogger(__name__)

CACHE_DIRNAME = "reference_cache"
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


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


# ----------------------------------------------------------------------------- which one a run uses
def resolve_mode(mode: str, n_dist_tokens: int, vocab: int, dtype: str, budget_gib: float) -> str:
    """'auto' -> 'full' when n_dist_tokens * vocab * itemsize <= budget, else 'off' (no cache: the
    top-k approximation changes the loss, so it is never chosen for the user)."""
    if mode not in ("auto", "full", "topk"):
        raise ValueError(f"reference cache mode must be auto, full or topk, got {mode!r}")
    if dtype not in ITEMSIZE:
        raise ValueError(f"reference cache dtype must be one of {', '.join(ITEMSIZE)}, got {dtype!r}")
    if mode != "auto":
        return mode
    return "full" if n_dist_tokens * vocab * ITEMSIZE[dtype] <= budget_gib * 2**30 else "off"


def dist_tokens(needs: ReferenceNeeds, rows: Sequence[Mapping[str, Any]]) -> int:
    """Answer tokens whose full reference distribution the objective needs."""
    n = 0
    for r in rows:
        side = needs.forget if bool(r.get("is_forget", False)) else needs.retain
        if side == "dist":
            n += answer_token_count(r["labels"])
    return n


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def choose_mode(mode: str, obj, rows, vocab: int, dtype: str, budget_gib: float) -> tuple[str, str]:
    """``(mode, reason)`` for a run: ``off`` (no cache), ``full`` or ``topk``; ``reason`` is one line
    for the user. ``auto`` gives ``full`` when the needed full reference distributions (answer tokens x
    V x itemsize of ``dtype``) fit ``budget_gib`` or none are needed, else ``off``."""
    needs = as_needs(obj)
    if not needs.any:
        return "off", "the objective uses no reference model"
    if not needs.cacheable:
        return (
            "off",
            "the objective uses the reference's hidden states, computed live (the cache holds log-probs)",
        )
    if mode == "off":
        return "off", "train.reference_cache = off: the reference runs on every step"
    if mode in ("full", "topk"):
        return mode, f"train.reference_cache = {mode}"
    if "dist" not in (needs.forget, needs.retain):
        return "full", "auto: the objective needs no vocabulary distributions (one float per answer token)"
    n = dist_tokens(needs, rows)
    sides = " and ".join(s for s in ("forget", "retain") if getattr(needs, s) == "dist")
    size = f"{n} {sides} answer tokens x V {vocab} x {dtype} = {_gib(n * vocab * ITEMSIZE[dtype])}"
    if resolve_mode("auto", n, vocab, dtype, budget_gib) == "full":
        return "full", f"auto: the exact distributions fit the budget ({size} <= {budget_gib:g} GiB)"
    return "off", (
        f"auto: the exact distributions do not fit the budget ({size} > {budget_gib:g} GiB); the reference "
        "runs on every step (raise train.reference_cache_budget_gib, or opt into the approximate "
        "train.reference_cache = topk)"
    )


def for_run(cfg, model, rows, out_dir, *, selector, pad_token_id: int, data_files=(), frozen=None):
    """The reference source of a run: cached in DIR/reference_cache/ (reused on resume when its
    fingerprint matches) or live. Prints one line saying which and why.

    The cache fingerprint covers the model path and base weights, the data files' sha256, the
    tokenization options and the token ids themselves, the objective's needs, mode, dtype, top-k and
    budget. Under full fine-tuning `frozen` (the starting model) is the reference.
    """
    from llm_unlearn.io_utils import sha256_file
    from llm_unlearn.train.cache_build import open_or_build

    t, needs = cfg.train, as_needs(cfg.objective)
    mode, reason = choose_mode(
        t.reference_cache,
        needs,
        rows,
        vocab_size(model),
        t.reference_cache_dtype,
        t.reference_cache_budget_gib,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one line, on stdout like the run's summary
        print(f"reference cache: {mode} ({reason})", flush=True)
    if mode == "off":
        return LiveReference(selector, frozen)
    d = cfg.data
    extra = {
        "model_path": cfg.model.name_or_path,
        "data_files": {str(p): sha256_file(p) for p in data_files},
        "tokenization": {
            "joiner": d.joiner,
            "add_eos": d.add_eos,
            "max_length": d.max_length,
            "limit": d.limit,
        },
    }
    cache, built = open_or_build(
        frozen if frozen is not None else model,
        rows,
        needs,
        Path(out_dir) / CACHE_DIRNAME,
        mode=mode,
        dtype=t.reference_cache_dtype,
        budget_gib=t.reference_cache_budget_gib,
        topk=t.reference_cache_topk,
        extra=extra,
        selector=selector if frozen is None else None,
        pad_token_id=pad_token_id,
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )
    log.info("%s the reference cache: %s", "built" if built else "reused", cache)
    return CachedReference(cache, selector, frozen)


def remove_cache_dirs(out_dir) -> None:
    """Delete DIR/reference_cache and its per-rank siblings (a finished run does not need them)."""
    import shutil

    for p in Path(out_dir).glob(f"{CACHE_DIRNAME}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
