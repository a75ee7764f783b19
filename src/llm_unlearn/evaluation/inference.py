"""Model passes of the evaluation: greedy generation, answer NLL, per-document token statistics.

Every function has two modes:

* default (fast): prompts sorted by length and batched (at most ``batch_size`` rows and, for the
  forward passes, ``max_tokens_per_batch`` padded tokens: rows of similar length together); generation
  with LEFT padding, an attention mask and position ids from the mask, greedy, one token per step from
  the key/value cache, and a row that has produced EOS leaves the batch at once (its cache rows are
  dropped), so a batch costs what its unfinished rows need, not ``batch x longest``; NLL passes with
  RIGHT padding (positions of the real tokens are unchanged);
* ``official_compat=True``: one example at a time, no padding, exactly as the SemEval-2025 Task 4
  organizers' script (``model.generate(input_ids, max_new_tokens, do_sample=False, use_cache=True,
  pad_token_id=eos)``; ``model(ids, labels=...).loss``).

Prompts are tokenized as the tokenizer does by default (``tokenizer(text).input_ids``: special tokens
added as configured), generations are the decoded NEW tokens (``skip_special_tokens=True,
clean_up_tokenization_spaces=True`` as the organizers decode, see :func:`clean_up_tokenization`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from llm_unlearn.evaluation.mia import token_statistics

log = logging.getLogger(__name__)

__all__ = [
    "model_device",
    "eval_mode",
    "encode",
    "clean_up_tokenization",
    "decode_new_tokens",
    "greedy_generate",
    "answer_nll",
    "document_statistics",
    "forward_last_logits",
    "length_batches",
]


# ------------------------------------------------------------------------------------------ helpers
def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model):
    """``model.eval()`` for the duration (dropout off), restoring the training flag afterwards."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def encode(tokenizer, text: str) -> list[int]:
    """``tokenizer(text).input_ids`` (special tokens as the tokenizer adds them by default)."""
    return list(tokenizer(text).input_ids)


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _eos_ids(model, tokenizer) -> set[int]:
    """The ids ``generate`` stops at (the generation config's EOS), falling back to the tokenizer's."""
    ids: set[int] = set()
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    return ids


def _left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def _right_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest first; with ``max_tokens`` a batch
    also stops growing when ``len(batch) * longest`` would exceed it (a single item always fits)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (
            len(batch) >= batch_size
            or (max_tokens is not None and (len(batch) + 1) * max(longest, 1) > max_tokens)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _accepts_position_ids(model) -> bool:
    target = model
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        target = get_base()
    try:
        return "position_ids" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False, dynamic_ncols=True)


def clean_up_tokenization(text: str) -> str:
    """The classic ``clean_up_tokenization_spaces`` post-processing (no space before ``. ? ! ,`` and
    English contractions). The organizers decode with ``clean_up_tokenization_spaces=True`` under
    transformers 4.x, which applied it to every tokenizer; transformers 5 ignores the flag for BPE
    tokenizers, so it is applied here explicitly to give the same text on every version."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def decode_new_tokens(tokenizer, ids: Sequence[int]) -> str:
    """Decode generated token ids as the organizers do (special tokens skipped, spaces cleaned up)."""
    text = tokenizer.decode(
        [int(i) for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return clean_up_tokenization(text)


# ------------------------------------------------------------------------------------------ generation
def _forward_params(model) -> set[str]:
    target = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        return set(inspect.signature(target.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return set()


def _plain_greedy(model) -> bool:
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


def _greedy_batch(
    model, seqs: Sequence[Sequence[int]], max_new_tokens: int, eos: set[int], pad_id: int, device
) -> list[list[int]] | None:
    """Greedy decoding of one left-padded batch, one token per step from the key/value cache; a row
    that emits an EOS id (kept as its last token) or reaches ``max_new_tokens`` leaves the batch: its
    rows of the cache, mask and positions are dropped. Returns the new tokens per row, or None when the
    model's cache cannot be pruned this way (the caller then uses ``model.generate``)."""
    params = _forward_params(model)
    cache_arg = "cache" if "cache" in params else "past_key_values"
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    ids, mask = _left_pad(seqs, pad_id, device)
    pos = _position_ids(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if cache is None or not _prunable_cache(cache):
        return None
    generated: list[list[int]] = [[] for _ in seqs]
    rows = torch.arange(len(seqs), device=device)  # the original row of each live row
    last_pos = pos[:, -1]
    eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=device) if eos else None
    nxt = out.logits[:, -1, :].argmax(-1)
    for step in range(max_new_tokens):
        for r, t in zip(rows.tolist(), nxt.tolist()):
            generated[r].append(int(t))
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


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    official_compat: bool = False,
    progress: bool = True,
    desc: str = "generate",
    prompt_ids: Sequence[Sequence[int]] | None = None,
    max_tokens_per_batch: int | None = 8192,
    early_stop: bool = True,
) -> list[str]:
    """Greedy continuation of every prompt (the decoded new tokens), in the order of ``prompts``.
    ``prompt_ids`` (token ids, e.g. a rendered chat template) replaces encoding ``prompts``.
    ``early_stop``: finished rows leave their batch (:func:`_greedy_batch`); False runs
    ``model.generate`` on the whole batch until its last row finishes."""
    device = model_device(model)
    if prompt_ids is not None:
        prompts = [""] * len(prompt_ids)
        encoded = [list(e) for e in prompt_ids]
    else:
        encoded = [encode(tokenizer, p) for p in prompts]
    # a prompt that encodes to nothing (empty input, tokenizer without BOS) starts from BOS/EOS
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = [e if e else ([start] if start is not None else []) for e in encoded]
    outputs: list[str] = [""] * len(prompts)
    eos = _eos_ids(model, tokenizer)
    bar = _progress(len(prompts), desc, progress)
    with eval_mode(model), bar:
        if official_compat:
            for i, ids in enumerate(encoded):
                if ids:
                    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                    out = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        use_cache=True,
                        pad_token_id=tokenizer.eos_token_id,
                    )
                    outputs[i] = decode_new_tokens(tokenizer, out[0, input_ids.shape[1] :].tolist())
                bar.update(1)
            return outputs
        pad_id = _pad_id(tokenizer)
        todo = [i for i, e in enumerate(encoded) if e]
        bar.update(len(prompts) - len(todo))
        own_loop = early_stop and _accepts_position_ids(model) and _plain_greedy(model)
        for batch in length_batches([len(encoded[i]) for i in todo], batch_size, max_tokens_per_batch):
            idx = [todo[b] for b in batch]
            new = None
            if own_loop:
                new = _greedy_batch(model, [encoded[i] for i in idx], max_new_tokens, eos, pad_id, device)
                own_loop = new is not None  # a model whose cache this loop cannot prune: generate()
            if new is None:
                input_ids, mask = _left_pad([encoded[i] for i in idx], pad_id, device)
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=pad_id,
                )
                new = out[:, input_ids.shape[1] :].tolist()
            for row, i in zip(new, idx):
                for pos, tid in enumerate(row):  # everything after the first EOS is padding
                    if tid in eos:
                        row = row[: pos + 1]
                        break
                outputs[i] = decode_new_tokens(tokenizer, row)
            bar.update(len(idx))
    return outputs


# ------------------------------------------------------------------------------------------ NLL passes
def _row_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> list[float | None]:
    """Per-row mean NLL of ``labels`` (-100 = ignored) under ``logits`` (shifted as a causal LM), one row
    at a time in float32 (as transformers' causal-LM loss upcasts)."""
    out: list[float | None] = []
    for row_logits, row_labels in zip(logits, labels):
        targets = row_labels[1:]
        valid = (targets != -100).nonzero().flatten()
        if valid.numel() == 0:
            out.append(None)
            continue
        last = int(valid[-1]) + 1  # right padding: nothing after the last label matters
        loss = torch.nn.functional.cross_entropy(
            row_logits[:last].float(), targets[:last], ignore_index=-100, reduction="sum"
        )
        out.append(float(loss.double() / valid.numel()))
    return out


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    batch_size: int = 16,
    official_compat: bool = False,
    progress: bool = True,
    max_tokens_per_batch: int = 4096,
    desc: str = "answer NLL",
) -> list[float | None]:
    """Mean NLL of each expected output given its input, as the organizers compute it: encode
    ``input + output`` (no separator) and score the tokens after the first ``len(encode(input))``.
    None where nothing is left to score."""
    device = model_device(model)
    seqs: list[list[int]] = []
    starts: list[int] = []
    for q, a in zip(inputs, outputs):
        seqs.append(encode(tokenizer, q + a))
        starts.append(len(encode(tokenizer, q)))
    result: list[float | None] = [None] * len(seqs)
    bar = _progress(len(seqs), desc, progress)
    with eval_mode(model), bar:
        if official_compat:
            for i, (ids, start) in enumerate(zip(seqs, starts)):
                if len(ids) > max(start, 1):
                    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                    labels = input_ids.clone()
                    labels[:, :start] = -100
                    loss = model(input_ids=input_ids, labels=labels).loss
                    result[i] = float(loss.item())
                bar.update(1)
            return result
        pad_id = _pad_id(tokenizer)
        todo = [i for i in range(len(seqs)) if len(seqs[i]) > max(starts[i], 1)]
        bar.update(len(seqs) - len(todo))
        for batch in length_batches([len(seqs[i]) for i in todo], batch_size, max_tokens_per_batch):
            idx = [todo[b] for b in batch]
            input_ids, mask = _right_pad([seqs[i] for i in idx], pad_id, device)
            labels = input_ids.masked_fill(mask == 0, -100)
            for r, i in enumerate(idx):
                labels[r, : starts[i]] = -100
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            for i, v in zip(idx, _row_mean_nll(logits, labels)):
                result[i] = v
            bar.update(len(idx))
    return result


@torch.no_grad()
def document_statistics(
    model,
    tokenizer,
    documents: Sequence[str],
    *,
    batch_size: int = 16,
    official_compat: bool = False,
    k_percent: float = 20,
    progress: bool = True,
    max_tokens_per_batch: int = 4096,
    desc: str = "MIA",
) -> list[dict]:
    """Per document: ``nll`` (mean token NLL of the whole document, labels = input ids, as the
    organizers' loss attack), ``n_tokens`` (predicted tokens), ``min_k``, ``min_k_plus_plus`` (see
    :mod:`llm_unlearn.evaluation.mia`), all from the same forward pass."""
    device = model_device(model)
    seqs = [encode(tokenizer, d) for d in documents]
    result: list[dict] = [{}] * len(seqs)
    nan_stats = token_statistics(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), k_percent)
    bar = _progress(len(seqs), desc, progress)
    with eval_mode(model), bar:
        if official_compat:
            for i, ids in enumerate(seqs):
                if len(ids) < 2:
                    result[i] = dict(nan_stats)
                else:
                    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
                    out = model(input_ids=input_ids, labels=input_ids.clone())
                    stats = token_statistics(out.logits[0], input_ids[0], k_percent)
                    stats["nll"] = float(out.loss.item())
                    result[i] = stats
                bar.update(1)
            return result
        pad_id = _pad_id(tokenizer)
        todo = [i for i in range(len(seqs)) if len(seqs[i]) >= 2]
        for i in range(len(seqs)):
            if len(seqs[i]) < 2:
                result[i] = dict(nan_stats)
        bar.update(len(seqs) - len(todo))
        for batch in length_batches([len(seqs[i]) for i in todo], batch_size, max_tokens_per_batch):
            idx = [todo[b] for b in batch]
            input_ids, mask = _right_pad([seqs[i] for i in idx], pad_id, device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
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
    pad_id = _pad_id(tokenizer)
    with_pos = _accepts_position_ids(model)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    with eval_mode(model):
        for batch in length_batches([len(e) for e in encoded], batch_size):
            input_ids, mask = _left_pad([encoded[i] for i in batch], pad_id, device)
            kwargs = {"position_ids": _position_ids(mask)} if with_pos else {}
            logits = model(input_ids=input_ids, attention_mask=mask, **kwargs).logits[:, -1, :].float().cpu()
            for r, i in enumerate(batch):
                out[i] = logits[r]
    return out  # type: ignore[return-value]
