"""Fine-tuning data: records and plain documents gathered and sliced, texts tokenized, batches collated."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
from llm_unlearn.errors import DataError, UserError

log = logging.getLogger(__name__)

__all__ = ["collate", "gather", "read_documents", "texts_of", "tokenize_texts"]


def read_documents(path: str | Path) -> list[dict]:
    """Plain documents from a data file (.jsonl/.json/.parquet/.csv): each row's ``document`` or ``text``
    field; ``id`` kept when present. Raises UserError / DataError naming the file and line."""
    from llm_unlearn.data.formats import check_path, raw_rows

    path = Path(path)
    check_path(path)
    docs = []
    for line, row in raw_rows(path):
        if not isinstance(row, dict):
            raise DataError(path, f"expected an object, got {type(row).__name__}", line=line)
        key = "document" if "document" in row else "text" if "text" in row else None
        if key is None:
            raise DataError(
                path,
                f"a document needs a 'document' or 'text' field; found {sorted(map(str, row))}",
                line=line,
                field="document",
            )
        if not isinstance(row[key], str):
            raise DataError(path, f"expected a string, got {type(row[key]).__name__}", line=line, field=key)
        rid = row.get("id")
        docs.append({"id": None if rid is None else str(rid), "document": row[key]})
    if not docs:
        raise DataError(path, "no documents (empty file)", field="document")
    return docs


def _read_record_file(path: str | Path) -> list:
    from llm_unlearn.data.records import read_records

    try:
        return read_records(path)
    except UserError as exc:
        if "cannot tell whether" not in str(exc):
            raise
        return read_records(path, split="forget")  # the split means nothing to fine-tuning


def _gather_records(data, split, forget, retain, records, limit) -> tuple[list, set[str], set[str]]:
    """(sliced records, unit keys of all records, unit keys of the records taken)."""
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.data.slices import slice_records, unit_key

    recs: list = []
    all_units: set[str] = set()
    taken_units: set[str] = set()
    parts: list[list] = []
    if data is not None or forget is not None:
        bundle = load_unlearning_data(data, split=split, forget=forget, retain=retain)
        parts = [bundle.forget, bundle.retain]
    elif retain is not None:
        raise UserError("--retain needs --forget (or use --records FILE)")
    parts += [_read_record_file(path) for path in records or []]
    for part in parts:
        all_units |= {unit_key(r.id) for r in part}
        part = slice_records(part, limit)
        taken_units |= {unit_key(r.id) for r in part}
        recs += part
    return recs, all_units, taken_units


def _gather_documents(documents, limit, all_units: set[str], taken_units: set[str]) -> list[dict]:
    """Documents tied to a record unit go with it; of the others the first ``limit`` are kept."""
    from llm_unlearn.data.slices import unit_key

    docs: list[dict] = []
    for path in documents or []:
        part = read_documents(path)
        if limit:
            tied = [d for d in part if d["id"] is not None and unit_key(d["id"]) in all_units]
            free = [d for d in part if not (d["id"] is not None and unit_key(d["id"]) in all_units)]
            part = [d for d in tied if unit_key(d["id"]) in taken_units] + free[:limit]
        docs += part
    return docs


def gather(data, split, forget, retain, records, documents, limit) -> tuple[list, list[dict]]:
    """(records, documents) after slicing."""
    recs, all_units, taken_units = _gather_records(data, split, forget, retain, records, limit)
    docs = _gather_documents(documents, limit, all_units, taken_units)
    if not recs and not docs:
        raise UserError("no data given (use --data DIR, --forget FILE, --records FILE or --documents FILE)")
    return recs, docs


def texts_of(recs: Sequence, docs: Sequence[dict], joiner: str) -> list[str]:
    """One text per item: prompt + joiner + answer for a record (the answer alone without a prompt), the
    document for a document."""
    return [(r.input + joiner + r.output) if r.input else r.output for r in recs] + [
        d["document"] for d in docs
    ]


def tokenize_texts(tok, texts: Sequence[str], max_length: int | None) -> tuple[list[list[int]], int]:
    """(token ids of each text, EOS appended when missing, cut to ``max_length`` (None: not cut); number
    cut)."""
    eos = tok.eos_token_id
    examples, n_truncated = [], 0
    for t in texts:
        ids = list(tok(t).input_ids)
        if not ids or ids[-1] != eos:
            ids.append(eos)
        if max_length is not None and len(ids) > max_length:
            ids, n_truncated = ids[:max_length], n_truncated + 1
        examples.append(ids)
    if n_truncated:
        log.warning(
            "%d of %d text(s) were longer than --max-length %d tokens and were cut from the right",
            n_truncated,
            len(examples),
            max_length,
        )
    return examples, n_truncated


def collate(
    examples: Sequence[list[int]],
    pad_id: int,
    device,
    *,
    width: int | None = None,
    starts: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded batch (to ``width`` when given, else the longest example); the loss is on every real
    token (padding is IGNORE_INDEX), or from ``starts[i]`` on in row i."""
    ids, mask = pad_batch(examples, pad_id, side="right", width=width)
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    for row, start in enumerate(starts or []):
        labels[row, :start] = IGNORE_INDEX
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
