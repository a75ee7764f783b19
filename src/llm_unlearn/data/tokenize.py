"""Turn prompt/answer records into token ids whose labels cover only the answer.

As in the SemEval-2025 Task 4 baseline: the text is ``input + joiner + output`` tokenized as a whole
(with the tokenizer's special tokens), the prompt (``input``) is tokenized alone, and the first
``prompt_len`` positions get label -100 so the loss sees only answer tokens. Labels are *not* shifted
(the model shifts them).

Special tokens are handled so the mask never slips by one: a probe encoding finds how many special
tokens the tokenizer puts at the start (e.g. BOS) and at the end (e.g. EOS / SEP) of every encoding.
Start tokens are in both the full and the prompt encoding, so they count towards ``prompt_len``; end
tokens of the prompt encoding are not in front of the answer, so they are not counted.

An empty prompt (e.g. a ``text``-only record) is not joined: the text is just the answer.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
from llm_unlearn.errors import ConfigError, UserError

log = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "tokenize_example", "tokenize_records", "ensure_pad_token", "UnlearnCollator"]

_PROBE = "a"


def _encode(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]


def _special_layout(tokenizer) -> tuple[int, int]:
    """(number of special tokens the tokenizer adds at the start, number it adds at the end)."""
    with_sp, without = _encode(tokenizer, [_PROBE], True)[0], _encode(tokenizer, [_PROBE], False)[0]
    n = len(without)
    if n:
        for start in range(len(with_sp) - n + 1):
            if with_sp[start : start + n] == without:
                return start, len(with_sp) - start - n
    # fall back on the tokenizer's own list of special ids
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    lead = 0
    while lead < len(with_sp) and with_sp[lead] in special:
        lead += 1
    trail = 0
    while trail < len(with_sp) - lead and with_sp[len(with_sp) - 1 - trail] in special:
        trail += 1
    return lead, trail


def _join(prompt: str, answer: str, joiner: str) -> str:
    return answer if prompt == "" else prompt + joiner + answer


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0
    ):
        raise ConfigError(f"max_length must be a positive integer or None, got {max_length!r}")


def _eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise UserError("add_eos=True but the tokenizer has no EOS token")
    return int(eos)


def _build(
    full_ids: list[int],
    prompt_ids: list[int],
    n_end: int,
    eos_id: int | None,
    max_length: int | None,
) -> dict[str, Any]:
    ids = list(full_ids)
    prompt_len = min(max(len(prompt_ids) - n_end, 0), len(ids))
    if eos_id is not None and (not ids or ids[-1] != eos_id):
        ids.append(eos_id)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids = ids[:max_length]
        prompt_len = min(prompt_len, len(ids))
    labels = [IGNORE_INDEX] * prompt_len + ids[prompt_len:]
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": [1] * len(ids),
        "truncated": truncated,
        "prompt_len": prompt_len,
    }


def _truncation_message(n_truncated: int, n_total: int, n_no_answer: int, max_length: int | None) -> str:
    return (
        f"{n_truncated} of {n_total} example(s) were longer than max_length={max_length} and were cut from "
        f"the right; in {n_no_answer} of them the prompt alone fills max_length, so no answer token is left "
        "(they add nothing to the loss)"
    )


def tokenize_example(
    tokenizer,
    prompt: str,
    answer: str,
    *,
    joiner: str = " ",
    add_eos: bool = False,
    max_length: int | None = None,
) -> dict:
    """Token ids of ``prompt + joiner + answer`` with labels on the answer only.

    Returns ``{"input_ids", "labels", "attention_mask", "truncated", "prompt_len"}`` (lists of int, a
    bool, an int). ``labels`` equals ``input_ids`` with the first ``prompt_len`` positions set to -100.
    ``add_eos`` appends ``tokenizer.eos_token_id`` (labelled) unless the encoding already ends with it.
    ``max_length`` cuts from the right and warns.
    """
    _check_max_length(max_length)
    eos = _eos_id(tokenizer) if add_eos else None
    _, n_end = _special_layout(tokenizer)
    full_ids, prompt_ids = _encode(tokenizer, [_join(prompt, answer, joiner), prompt], True)
    out = _build(full_ids, prompt_ids, n_end, eos, max_length)
    if out["truncated"]:
        no_answer = int(out["prompt_len"] >= len(out["input_ids"]))
        warnings.warn(_truncation_message(1, 1, no_answer, max_length), UserWarning, stacklevel=2)
    return out


def _field(record, name: str):
    return record[name] if isinstance(record, dict) else getattr(record, name)


def tokenize_records(
    tokenizer,
    records: Iterable,
    *,
    joiner: str = " ",
    add_eos: bool = False,
    max_length: int | None = None,
) -> list[dict]:
    """:func:`tokenize_example` for every record (a Record, or a dict with id/input/output/split).

    Each result also has ``"id"`` and ``"is_forget"`` (``split == "forget"``). Warns once with the
    number of truncated rows and of rows whose answer was cut away entirely.
    """
    _check_max_length(max_length)
    records = list(records)
    if not records:
        return []
    eos = _eos_id(tokenizer) if add_eos else None
    _, n_end = _special_layout(tokenizer)
    prompts = [_field(r, "input") for r in records]
    texts = [_join(p, _field(r, "output"), joiner) for p, r in zip(prompts, records)]
    full = _encode(tokenizer, texts, True)
    prompt_ids = _encode(tokenizer, prompts, True)
    out = []
    n_truncated = n_no_answer = 0
    for rec, f_ids, p_ids in zip(records, full, prompt_ids):
        ex = _build(f_ids, p_ids, n_end, eos, max_length)
        if ex["truncated"]:
            n_truncated += 1
            n_no_answer += ex["prompt_len"] >= len(ex["input_ids"])
        ex["id"] = _field(rec, "id")
        ex["is_forget"] = _field(rec, "split") == "forget"
        out.append(ex)
    if n_truncated:
        msg = _truncation_message(n_truncated, len(records), n_no_answer, max_length)
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return out


def ensure_pad_token(tokenizer):
    """Give ``tokenizer`` a pad token: its EOS token when it has none (logged). UserError if neither."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return tokenizer
    eos = getattr(tokenizer, "eos_token", None)
    if eos is None:
        raise UserError(
            "the tokenizer has neither a pad token nor an EOS token to pad with; give it a pad token"
        )
    tokenizer.pad_token = eos
    log.info("tokenizer has no pad token; padding with the EOS token %r (id %s)", eos, tokenizer.pad_token_id)
    return tokenizer


class UnlearnCollator:
    """Pad a list of tokenized examples into a batch (right padding).

    Returns ``input_ids``, ``attention_mask``, ``labels`` (long ``[B, L]``; labels padded with -100,
    attention 0 on padding) and ``is_forget`` (bool ``[B]``, False where an example lacks it), plus
    ``row_key`` (long ``[B]``) when every example has one. Other keys are dropped. With
    ``pad_to_multiple_of``, ``L`` is rounded up to a multiple of it.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise UserError("no pad token id: call ensure_pad_token(tokenizer) first")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool)
            or not isinstance(pad_to_multiple_of, int)
            or pad_to_multiple_of <= 0
        ):
            raise ConfigError(
                f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}"
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __repr__(self) -> str:
        return (
            f"UnlearnCollator(pad_token_id={self.pad_token_id}, pad_to_multiple_of={self.pad_to_multiple_of})"
        )

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        seqs = [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features]
        length = max(len(s) for s in seqs)
        m = self.pad_to_multiple_of
        if m:
            length = -(-length // m) * m
        batch = len(features)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        for i, (f, ids) in enumerate(zip(features, seqs)):
            n = len(ids)
            lab = torch.as_tensor(f.get("labels", ids), dtype=torch.long).reshape(-1)
            att = torch.as_tensor(f.get("attention_mask", [1] * n), dtype=torch.long).reshape(-1)
            if len(lab) != n or len(att) != n:
                raise ValueError(
                    f"example {i}: input_ids ({n}), labels ({len(lab)}) and attention_mask ({len(att)}) differ in length"
                )
            input_ids[i, :n] = ids
            labels[i, :n] = lab
            attention[i, :n] = att
        is_forget = torch.tensor([bool(f.get("is_forget", False)) for f in features], dtype=torch.bool)
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "is_forget": is_forget}
        if all("row_key" in f for f in features):  # the reference cache's row id (see train/cache_build.py)
            out["row_key"] = torch.tensor([int(f["row_key"]) for f in features], dtype=torch.long)
        return out


class AlternativesCollator:
    """The base collator, plus ``alt_input_ids`` / ``alt_labels`` / ``alt_attention_mask`` (right padded)
    when the rows carry alternative answers (train/prepare.py)."""

    def __init__(self, base, pad_token_id: int):
        self.base, self.pad_token_id = base, int(pad_token_id)

    def __call__(self, features):
        out = self.base(features)
        if features and all("alt_input_ids" in f for f in features):
            ids, mask = pad_batch([f["alt_input_ids"] for f in features], self.pad_token_id)
            labels, _ = pad_batch([f["alt_labels"] for f in features], IGNORE_INDEX)
            out.update(alt_input_ids=ids, alt_labels=labels, alt_attention_mask=mask)
        return out
