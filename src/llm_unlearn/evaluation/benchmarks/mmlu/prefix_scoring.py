"""MMLU scoring: next-token answer probabilities (whole prompts or from a shared few-shot prefix) and accuracies.

The prediction is the argmax of the next-token distribution (softmax over the whole vocabulary, as
Open-Instruct) restricted to the answer-letter ids; prompts are encoded with the tokenizer's default
special tokens and scored in left-padded batches. ``average_acc`` is the micro average over all
questions; ``subcat_acc`` and ``cat_acc`` pool the questions of the subjects in each subcategory /
category.

Shared prefix: all prompts of one subject with the same k start with the same header and k dev
examples. That prefix is run through the model once, and the questions are scored in batches from its
key/value cache (expanded to the batch). The split point is a TOKEN boundary of the real encodings: the
longest run of tokens that every prompt's own encoding (``tokenizer(prompt).input_ids``) shares with the
prefix's encoding. A BPE merge across the text boundary (``"\\n\\n" + "Who"`` encoding differently from
the two parts) only moves the split to an earlier token; the model always sees exactly the tokens of the
uncached path, at the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm_unlearn.data.batching import pad_batch
from llm_unlearn.evaluation.benchmarks.mmlu.categories import CATEGORIES, subject_categories
from llm_unlearn.evaluation.benchmarks.mmlu.prompts import answer_token_ids
from llm_unlearn.evaluation.passes.batched import forward_last_logits
from llm_unlearn.evaluation.passes.runtime import (
    accepts_position_ids,
    eval_mode,
    forward_params,
    length_batches,
    model_device,
    pad_token_id,
    position_ids,
)

__all__ = ["predict", "shared_prefix_length", "predict_with_prefix", "compute_metrics"]


def predict(
    model, tokenizer, prompts: Sequence[str], batch_size: int = 8, candidate_ids: Sequence[int] | None = None
) -> tuple[list[int], list[list[float]]]:
    """``(predicted choice index, [p(A), p(B), p(C), p(D)])`` per prompt (probabilities from the softmax
    over the whole vocabulary, as Open-Instruct)."""
    candidate_ids = list(candidate_ids) if candidate_ids is not None else answer_token_ids(tokenizer)
    encoded = [list(tokenizer(p).input_ids) for p in prompts]
    logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
    return _probs_from_logits(logits, candidate_ids)


def _probs_from_logits(logits: Sequence[torch.Tensor], candidate_ids: Sequence[int]):
    preds, probs = [], []
    for row in logits:
        p = torch.softmax(row.float(), dim=-1)[list(candidate_ids)]
        preds.append(int(torch.argmax(p)))
        probs.append([float(x) for x in p])
    return preds, probs


def shared_prefix_length(encoded: Sequence[Sequence[int]], prefix_ids: Sequence[int]) -> int:
    """The number of leading tokens that ``prefix_ids`` and every sequence of ``encoded`` share, at most
    ``len(shortest) - 1`` (each sequence keeps at least one token of its own to score)."""
    n = len(prefix_ids)
    for seq in encoded:
        n = min(n, len(seq) - 1)
        i = 0
        while i < n and seq[i] == prefix_ids[i]:
            i += 1
        n = i
    return max(n, 0)


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``[(keys, values)]`` per layer of a transformers key/value cache ([1, heads, T, head_dim] each),
    or None for a cache this module cannot expand exactly (sliding windows, other layouts)."""
    from transformers import DynamicCache

    if type(cache) is not DynamicCache:
        return None
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    out = []
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer":
            return None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None:
            return None
        out.append((keys, values))
    return out


@torch.no_grad()
def predict_with_prefix(
    model,
    tokenizer,
    prefix: str,
    prompts: Sequence[str],
    batch_size: int = 8,
    candidate_ids: Sequence[int] | None = None,
    min_shared_tokens: int = 1,
) -> tuple[list[int], list[list[float]], int]:
    """:func:`predict` for prompts that all start with the text ``prefix``, running the shared tokens
    once: ``(predictions, probabilities, shared tokens)``.

    Each prompt is encoded whole, as :func:`predict` does; the shared part is the longest token prefix
    common to every encoding and to ``tokenizer(prefix).input_ids`` (see :func:`shared_prefix_length`),
    so a merge across the text boundary moves the split, never the tokens. Its key/value cache is
    computed once (batch 1) and expanded to each batch; each batch holds the rest of the prompts,
    left-padded after the prefix (attention mask ``[1]*L + [0]*pad + [1]*n``, positions continuing from
    L), so every row's last position is its next-token prediction. With fewer than ``min_shared_tokens``
    shared tokens, or a cache layout that cannot be expanded exactly, the prompts are scored whole."""
    from transformers import DynamicCache

    candidate_ids = list(candidate_ids) if candidate_ids is not None else answer_token_ids(tokenizer)
    encoded = [list(tokenizer(p).input_ids) for p in prompts]
    if not encoded:
        return [], [], 0
    shared = shared_prefix_length(encoded, list(tokenizer(prefix).input_ids))
    with_pos = accepts_position_ids(model)
    if shared < max(min_shared_tokens, 1) or not with_pos:
        logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
        return (*_probs_from_logits(logits, candidate_ids), 0)
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    params = forward_params(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x: "cache"
    out: list[torch.Tensor | None] = [None] * len(encoded)
    with eval_mode(model):
        prefix_ids = torch.tensor([encoded[0][:shared]], dtype=torch.long, device=device)
        first = model(input_ids=prefix_ids, use_cache=True, **keep)
        cache = getattr(first, "cache", None) or getattr(first, "past_key_values", None)
        layers = _cache_layers(cache) if cache is not None else None
        if layers is None:
            logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
            return (*_probs_from_logits(logits, candidate_ids), 0)
        rests = [e[shared:] for e in encoded]
        for batch in length_batches([len(r) for r in rests], batch_size):
            b = len(batch)
            ids, rest_mask = pad_batch([rests[i] for i in batch], pad_id, side="left")
            mask = torch.cat([torch.ones((b, shared), dtype=torch.long), rest_mask], dim=1).to(device)
            expanded = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in layers])
            logits = (
                model(
                    input_ids=ids.to(device),
                    attention_mask=mask,
                    position_ids=position_ids(mask)[:, shared:],
                    use_cache=True,
                    **{cache_arg: expanded},
                    **keep,
                )
                .logits[:, -1, :]
                .float()
                .cpu()
            )
            for r, i in enumerate(batch):
                out[i] = logits[r]
    return (*_probs_from_logits(out, candidate_ids), shared)  # type: ignore[arg-type]


def compute_metrics(correct: dict[str, Sequence[bool]]) -> dict[str, Any]:
    """``average_acc`` (micro average), ``subcat_acc``, ``cat_acc`` (pooled over subjects; only those
    with questions) and ``subject_acc`` from ``{subject: [correct?]}``."""
    all_c = [bool(c) for cs in correct.values() for c in cs]
    if not all_c:
        raise ValueError("no MMLU questions were scored")
    subcat: dict[str, list[bool]] = {s: [] for cats in CATEGORIES.values() for s in cats}
    cat: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for subject, cs in correct.items():
        subcats, cats = subject_categories(subject)
        for s in subcats:
            subcat[s].extend(bool(c) for c in cs)
        for c in cats:
            cat[c].extend(bool(x) for x in cs)

    def acc(values: Sequence[bool]) -> float:
        return sum(values) / len(values)

    return {
        "average_acc": acc(all_c),
        "subcat_acc": {s: acc(v) for s, v in subcat.items() if v},
        "cat_acc": {c: acc(v) for c, v in cat.items() if v},
        "subject_acc": {s: acc(list(cs)) for s, cs in correct.items() if len(cs)},
        "n_questions": len(all_c),
    }
