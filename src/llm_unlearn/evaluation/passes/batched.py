"""The fast implementation of the evaluation passes: length-bucketed, padded batches (the default mode).

Rows are sorted by length and grouped: at most ``batch_size`` rows, at most ``max_tokens_per_batch``
padded tokens (for the NLL passes None means the device's default, :data:`TOKENS_PER_BATCH`: small on a
CPU), and a row joins a batch only when padding it costs at most :data:`MAX_PADDING` of the batch's
longest row (length buckets). Generation uses LEFT padding, an attention mask and position ids from the
mask, greedy, one token per step from the key/value cache: each decoding group is prefilled per length
bucket and the buckets' caches merged into one left-padded batch (no prefill of padding between rows of
very different length; every step serves all rows), and a row that has produced EOS leaves the batch at
once (its cache rows are dropped), so a batch costs what its unfinished rows need, not
``batch x longest``. The NLL passes use RIGHT padding WITHOUT an attention mask (causal attention never
lets a real token see the padding after it; positions are unchanged) and the answer NLL computes logits
only from the batch's first scored position on. :mod:`.official` has the same interface, one example at
a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
from llm_unlearn.evaluation.passes.runtime import (
    accepts_position_ids,
    decode_new_tokens,
    eos_ids,
    eval_mode,
    forward_params,
    length_batches,
    model_device,
    pad_token_id,
    position_ids,
)
from llm_unlearn.evaluation.passes.token_stats import token_statistics

__all__ = [
    "generate",
    "plain_greedy",
    "answer_nll",
    "document_statistics",
    "forward_last_logits",
    "MAX_PADDING",
    "TOKENS_PER_BATCH",
    "token_budget",
]

# the most padding a row may add to its batch, as a fraction of the batch's longest row (length
# buckets): padded positions cost as much as real ones, and on a CPU (compute bound) batching rows of
# very different length costs more than it saves
MAX_PADDING = 0.25
# the default token budget of one forward batch of the NLL passes (``max_tokens_per_batch=None``): on an
# accelerator large batches fill the device; on a CPU the passes are compute bound already one sequence
# at a time (the matrix products have a row per token) and a batch whose activations outgrow the caches
# is SLOWER per token (measured, small shape, 1 thread: 256 tokens 2.2 s, 1024 3.1 s, 4096 3.9 s for the
# same 32 answers), so CPU batches stay small
TOKENS_PER_BATCH = {"cpu": 256, "default": 4096}


def token_budget(max_tokens_per_batch: int | None, device: torch.device) -> int:
    """``max_tokens_per_batch``, or the device's default (:data:`TOKENS_PER_BATCH`) when None."""
    if max_tokens_per_batch is not None:
        return max_tokens_per_batch
    return TOKENS_PER_BATCH.get(torch.device(device).type, TOKENS_PER_BATCH["default"])


# ------------------------------------------------------------------------------------------ generation
def token_ticker(bar, max_new_tokens: int, rows: int, every_s: float = 1.0):
    """A callback for the decoding loop that shows, at most once a ``every_s`` seconds, which token of
    the batch is being decoded: a bar that moves once per batch would stand still for minutes on a
    large model. None when the bar is disabled."""
    import time

    if bar is None or getattr(bar, "disable", True):
        return None
    last = [time.monotonic()]

    def tick(step: int, live: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            bar.set_postfix_str(f"batch of {rows}: token {step + 1}/{max_new_tokens}, {live} decoding")

    return tick


def plain_greedy(model) -> bool:
    """True when ``model.generate(do_sample=False)`` is a plain argmax: the generation config adds no
    logits processor (repetition penalty, n-gram ban, forced or suppressed tokens, minimum length)."""
    cfg = getattr(model, "generation_config", None)
    if cfg is None:
        return True
    neutral = {
        "repetition_penalty": (None, 1.0),
        "encoder_repetition_penalty": (None, 1.0),
        "no_repeat_ngram_size": (None, 0),
        "bad_words_ids": (None,),
        "forced_bos_token_id": (None,),
        "forced_eos_token_id": (None,),
        "suppress_tokens": (None,),
        "begin_suppress_tokens": (None,),
        "sequence_bias": (None,),
        "min_new_tokens": (None, 0),
        "min_length": (None, 0),
        "renormalize_logits": (None, False),
    }
    return all(getattr(cfg, k, None) in v for k, v in neutral.items())


def _prunable_cache(cache) -> bool:
    """True for a transformers cache whose rows can be dropped exactly (plain dynamic layers)."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    return (
        type(cache) is DynamicCache
        and layers is not None
        and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
    )


def _prefill(model, seqs, pad_id: int, device, keep: dict):
    """One left-padded forward with the cache on: ``(cache, mask, last positions, next tokens)``, or
    None when the model returns no cache this loop can prune."""
    ids, mask = pad_batch(seqs, pad_id, side="left", device=device)
    pos = position_ids(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not _prunable_cache(cache):
        return None
    return cache, mask, pos[:, -1], out.logits[:, -1, :].argmax(-1)


def _merge_prefills(parts: list[tuple]) -> tuple:
    """The prefills of several length buckets as one left-padded batch: every layer's keys and values
    (and the attention mask) padded on the left to the longest bucket and concatenated over the batch;
    the padded positions are masked out, so each row attends to exactly its own tokens, as before."""
    if len(parts) == 1:
        return parts[0]
    width = max(p[1].shape[1] for p in parts)
    cache = parts[0][0]

    def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = width - t.shape[dim]
        if n == 0:
            return t
        shape = list(t.shape)
        shape[dim] = n
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for li, layer in enumerate(cache.layers):
        layer.keys = torch.cat([left_pad(p[0].layers[li].keys, -2) for p in parts], dim=0)
        layer.values = torch.cat([left_pad(p[0].layers[li].values, -2) for p in parts], dim=0)
    mask = torch.cat([left_pad(p[1], 1) for p in parts], dim=0)
    return cache, mask, torch.cat([p[2] for p in parts]), torch.cat([p[3] for p in parts])


def _greedy_batch(
    model,
    seqs: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos: set[int],
    pad_id: int,
    device,
    buckets: Sequence[Sequence[int]] | None = None,
    on_step=None,
) -> list[list[int]] | None:
    """Greedy decoding of one batch, one token per step from the key/value cache. The prompts are
    prefilled per length bucket (``buckets``: lists of row indices; default one bucket), left-padded,
    and the buckets' caches merged into one left-padded batch, so that the prefill does not pay for
    padding rows of very different length to each other while every decoding step serves all rows. A
    row that emits an EOS id (kept as its last token) or reaches ``max_new_tokens`` leaves the batch:
    its rows of the cache, mask and positions are dropped. Returns the new tokens per row, or None when
    the model's cache cannot be pruned this way (the caller then uses ``model.generate``)."""
    params = forward_params(model)
    cache_arg = "cache" if "cache" in params else "past_key_values"
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    buckets = [list(b) for b in buckets] if buckets else [list(range(len(seqs)))]
    parts = []
    for bucket in buckets:
        part = _prefill(model, [seqs[i] for i in bucket], pad_id, device, keep)
        if part is None:
            return None
        parts.append(part)
    cache, mask, last_pos, nxt = _merge_prefills(parts)
    generated: list[list[int]] = [[] for _ in seqs]
    # the original row of each live row
    rows = torch.tensor([i for b in buckets for i in b], dtype=torch.long, device=device)
    eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=device) if eos else None
    for step in range(max_new_tokens):
        for r, t in zip(rows.tolist(), nxt.tolist()):
            generated[r].append(int(t))
        if on_step is not None:
            on_step(step, len(rows))
        if step == max_new_tokens - 1:
            break
        live = ~torch.isin(nxt, eos_t) if eos_t is not None else torch.ones_like(nxt, dtype=torch.bool)
        if not bool(live.any()):
            break
        if not bool(live.all()):
            sel = live.nonzero().flatten()
            cache.batch_select_indices(sel)
            rows, nxt, mask, last_pos = rows[sel], nxt[sel], mask[sel], last_pos[sel]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=last_pos[:, None],
            use_cache=True,
            **{cache_arg: cache},
            **keep,
        )
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None) or cache
        nxt = out.logits[:, -1, :].argmax(-1)
    return generated


def _generate_batch(model, seqs: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int, device):
    """``model.generate`` on one left-padded batch, until its last row finishes: new tokens per row."""
    input_ids, mask = pad_batch(seqs, pad_id, side="left", device=device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=pad_id,
    )
    return out[:, input_ids.shape[1] :].tolist()


def _until_eos(row: list[int], eos: set[int]) -> list[int]:
    """``row`` up to and including its first EOS id (everything after it is padding)."""
    for pos, tid in enumerate(row):
        if tid in eos:
            return row[: pos + 1]
    return row


@torch.no_grad()
def generate(
    model,
    tokenizer,
    encoded: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_tokens_per_batch: int | None,
    early_stop: bool,
    bar,
) -> list[str]:
    """Greedy continuation (decoded new tokens) of every non-empty token list of ``encoded``, in order.
    ``early_stop``: finished rows leave their batch (:func:`_greedy_batch`); False, a model that does
    not take position ids, or a generation config with logits processors runs ``model.generate`` on the
    whole batch until its last row finishes."""
    device = model_device(model)
    eos = eos_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer)
    outputs: list[str] = [""] * len(encoded)
    own_loop = early_stop and accepts_position_ids(model) and plain_greedy(model)
    lengths = [len(e) for e in encoded]
    # decoding groups: up to batch_size rows within the token budget; with the own loop each group is
    # prefilled per length bucket (MAX_PADDING) and decoded as one batch, else the buckets are the groups
    groups = length_batches(lengths, batch_size, max_tokens_per_batch, None if own_loop else MAX_PADDING)
    for idx in groups:
        seqs = [encoded[i] for i in idx]
        new = None
        if own_loop:
            buckets = list(length_batches([len(x) for x in seqs], batch_size, None, MAX_PADDING))
            tick = token_ticker(bar, max_new_tokens, len(idx))
            new = _greedy_batch(model, seqs, max_new_tokens, eos, pad_id, device, buckets, on_step=tick)
            own_loop = new is not None  # a model whose cache this loop cannot prune: generate()
        if new is None:
            new = []
            for bucket in length_batches([len(x) for x in seqs], batch_size, None, MAX_PADDING):
                rows = _generate_batch(model, [seqs[j] for j in bucket], max_new_tokens, pad_id, device)
                new.extend(zip(bucket, rows))
            new = [row for _, row in sorted(new, key=lambda x: x[0])]
        for row, i in zip(new, idx):
            outputs[i] = decode_new_tokens(tokenizer, _until_eos(row, eos))
        bar.update(len(idx))
    return outputs


# ------------------------------------------------------------------------------------------ NLL passes
def _row_mean_nll(logits: torch.Tensor, labels: torch.Tensor, offset: int = 0) -> list[float | None]:
    """Per-row mean NLL of ``labels`` (IGNORE_INDEX = ignored) under ``logits`` (shifted as a causal
    LM; ``logits[:, j]`` is the prediction made at position ``offset + j``), one row at a time in
    float32 (as transformers' causal-LM loss upcasts)."""
    out: list[float | None] = []
    for row_logits, row_labels in zip(logits, labels):
        targets = row_labels[offset + 1 :]
        valid = (targets != IGNORE_INDEX).nonzero().flatten()
        if valid.numel() == 0:
            out.append(None)
            continue
        last = int(valid[-1]) + 1  # right padding: nothing after the last label matters
        loss = torch.nn.functional.cross_entropy(
            row_logits[:last].float(), targets[:last], ignore_index=IGNORE_INDEX, reduction="sum"
        )
        out.append(float(loss.double() / valid.numel()))
    return out


def _right_padded_forward(model, input_ids: torch.Tensor, mask: torch.Tensor, **kwargs):
    """The model on a RIGHT-padded batch. Causal attention never lets a real token see the padding after
    it and the positions of the real tokens are 0.. as without padding, so the attention mask is left
    out (SDPA's causal kernel instead of a materialized mask); models that are not plain causal
    decoders may need it: it is passed when the model has no ``logits_to_keep`` (an older or custom
    model) so that only models known to slice their logits that way skip it."""
    if "logits_to_keep" in forward_params(model):
        return model(input_ids=input_ids, use_cache=False, **kwargs)
    kwargs.pop("logits_to_keep", None)
    return model(input_ids=input_ids, attention_mask=mask, **kwargs)


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    seqs: Sequence[Sequence[int]],
    starts: Sequence[int],
    *,
    batch_size: int,
    max_tokens_per_batch: int | None,
    bar,
) -> list[float | None]:
    """Mean NLL of the tokens of each ``seqs[i]`` after its first ``starts[i]``, in right-padded
    length buckets (every sequence must have a token to score). Logits are computed only from the
    first scored position of the batch on (``logits_to_keep``), where the model takes it."""
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    slices = "logits_to_keep" in forward_params(model)
    result: list[float | None] = [None] * len(seqs)
    lengths = [len(s) for s in seqs]
    budget = token_budget(max_tokens_per_batch, device)
    for idx in length_batches(lengths, batch_size, budget, MAX_PADDING):
        input_ids, mask = pad_batch([seqs[i] for i in idx], pad_id, side="right", device=device)
        labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
        for r, i in enumerate(idx):
            labels[r, : starts[i]] = IGNORE_INDEX
        width = input_ids.shape[1]
        # logits at positions offset.. predict the tokens offset+1..; the first scored token of the
        # batch is min(starts) (>= 1)
        offset = max(min(starts[i] for i in idx) - 1, 0) if slices else 0
        kw = {"logits_to_keep": width - offset} if slices else {}
        logits = _right_padded_forward(model, input_ids, mask, **kw).logits
        for i, v in zip(idx, _row_mean_nll(logits, labels, offset)):
            result[i] = v
        bar.update(len(idx))
    return result


@torch.no_grad()
def document_statistics(
    model,
    tokenizer,
    seqs: Sequence[Sequence[int]],
    *,
    k_percent: float,
    batch_size: int,
    max_tokens_per_batch: int | None,
    bar,
) -> list[dict]:
    """:func:`~llm_unlearn.evaluation.passes.token_stats.token_statistics` of each token list (at least 2 tokens),
    from right-padded length buckets (each row's logits cut to its own length)."""
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    result: list[dict] = [{}] * len(seqs)
    lengths = [len(s) for s in seqs]
    budget = token_budget(max_tokens_per_batch, device)
    for idx in length_batches(lengths, batch_size, budget, MAX_PADDING):
        input_ids, mask = pad_batch([seqs[i] for i in idx], pad_id, side="right", device=device)
        logits = _right_padded_forward(model, input_ids, mask).logits
        for r, i in enumerate(idx):
            n = len(seqs[i])
            result[i] = token_statistics(logits[r, :n], input_ids[r, :n], k_percent)
        bar.update(len(idx))
    return result


@torch.no_grad()
def forward_last_logits(
    model, tokenizer, encoded: Sequence[Sequence[int]], batch_size: int = 8
) -> list[torch.Tensor]:
    """Next-token logits (float32, on CPU) after each token sequence, batched with LEFT padding (as
    Open-Instruct scores MMLU); position ids follow the attention mask when the model takes them."""
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    with_pos = accepts_position_ids(model)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    with eval_mode(model):
        for batch in length_batches([len(e) for e in encoded], batch_size):
            input_ids, mask = pad_batch([encoded[i] for i in batch], pad_id, side="left", device=device)
            kwargs = {"position_ids": position_ids(mask)} if with_pos else {}
            logits = model(input_ids=input_ids, attention_mask=mask, **kwargs).logits[:, -1, :].float().cpu()
            for r, i in enumerate(batch):
                out[i] = logits[r]
    return out  # type: ignore[return-value]
