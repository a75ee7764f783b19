"""Forget / retain sets and MIA documents: the entry point of reading unlearning data.

``load_unlearning_data`` chooses the layout: TOFU directories are read by
:mod:`llm_unlearn.data.benchmarks`, every other directory or file by :mod:`llm_unlearn.data.layouts`.
Rows are read by :mod:`llm_unlearn.data.formats` and mapped to :class:`Record` by
:mod:`llm_unlearn.data.fields` (whose docstring gives the field mapping and the id rules);
``Record`` and ``DataBundle`` are defined there and re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from llm_unlearn.data.benchmarks import is_tofu_dir, tofu_training_bundle
from llm_unlearn.data.fields import DataBundle, Record, parse_rows, string_field
from llm_unlearn.data.formats import SUPPORTED_EXTENSIONS, read_text, rows_jsonl
from llm_unlearn.data.layouts import read_forget_retain
from llm_unlearn.errors import DataError, UserError

log = logging.getLogger(__name__)

__all__ = [
    "Record",
    "DataBundle",
    "SUPPORTED_EXTENSIONS",
    "read_records",
    "load_unlearning_data",
    "read_mia_documents",
    "record_kind",
]


def record_kind(record_id: str) -> str | None:
    """SemEval-2025 Task 4 kind of a record: ``"sc"`` (sentence completion), ``"qa"`` or None.

    This is exactly the organizers' rule: drop the id's last character, then look at the two characters
    that end what remains. Ids such as ``"\\"2ebb...\\"sc1"`` (literal quotes) work. An id whose number
    has two digits (``...sc10``) gives None under this rule; the released data has none.
    """
    if not isinstance(record_id, str):
        return None
    stem = record_id[:-1]
    if stem.endswith("sc"):
        return "sc"
    if stem.endswith("qa"):
        return "qa"
    return None


def read_records(path: str | os.PathLike, split: str | None = None) -> list[Record]:
    """Read and validate one data file (.jsonl, .json, .parquet, .csv) into Records.

    ``split`` ("forget" / "retain") is used for rows without a ``split`` field; a row whose ``split``
    field disagrees with it is an error. Without either, the split comes from the file name (containing
    "forget" or "retain"). Raises DataError (file, line, field) for malformed content, UserError for a
    missing file or an unsupported extension. Duplicate ids warn (UserWarning) but are kept.
    """
    return [rec for _, rec in parse_rows(Path(path), split)]


def load_unlearning_data(
    data: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    forget: str | os.PathLike | None = None,
    retain: str | os.PathLike | None = None,
    require_retain: bool = False,
) -> DataBundle:
    """Find, read and validate the forget and retain sets.

    ``data`` may be:

    * a directory with ``forget.<ext>`` and ``retain.<ext>`` (ext: jsonl, json, parquet, csv; the first
      present in that order is used);
    * a directory with ``<split>/forget.<ext>`` when ``split`` is given (e.g. ``split="train"``);
    * a directory with the organizers' parquet files ``forget_<split>-00000-of-00001.parquet`` /
      ``retain_<split>-...`` (``split`` picks train or validation; without it train is preferred);
    * a single data file whose rows carry a ``split`` field ("forget" / "retain");
    * a TOFU directory with ``split`` forgetNN / retainNN / full (see :mod:`llm_unlearn.data.benchmarks`).

    ``forget=`` / ``retain=`` name files explicitly and replace what ``data`` would give. Retain data is
    optional unless ``require_retain``. Raises UserError for a missing path or a directory without the
    expected files, DataError for malformed data, an empty forget set, or an id in both sets.

    This is the dispatch between the layouts: a TOFU directory goes to the TOFU reader
    (``benchmarks.tofu_training_bundle``), everything else to ``layouts.read_forget_retain``.
    """
    if data is None and forget is None:
        raise UserError("no data given: pass a data directory (or file), or forget=FILE")
    if data is not None and split is not None and forget is None and retain is None:
        if is_tofu_dir(data):  # TOFU layout: --split forgetNN (forget + retainNN), full, retainNN, ...
            return tofu_training_bundle(data, split)
    bundle = read_forget_retain(
        data, split=split, forget=forget, retain=retain, require_retain=require_retain
    )
    log.info(
        "loaded %d forget and %d retain records from %s",
        len(bundle.forget),
        len(bundle.retain),
        ", ".join(str(p) for p in bundle.files),
    )
    return bundle


# ------------------------------------------------------------------------------------------------ MIA


def _read_documents(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"MIA file not found: {path}")
    docs = []
    for line, row in rows_jsonl(path, read_text(path)):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
        rid = row.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            row = {**row, "id": str(rid)}
        doc = {
            "id": string_field(path, line, row, "id"),
            "document": string_field(path, line, row, "document"),
        }
        if not doc["document"].strip():  # no tokens: its loss (and every MIA statistic) would be NaN
            raise DataError(path, "the document is empty or blank", line=line, field="document")
        docs.append(doc)
    if not docs:
        raise DataError(path, "no documents (empty file)", field="document")
    return docs


def read_mia_documents(directory: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """``(members, nonmembers)`` from ``<directory>/member.jsonl`` and ``<directory>/nonmember.jsonl``.

    Each document is ``{"id": str, "document": str}``; other fields in the file are ignored.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"MIA directory not found: {directory} (expected member.jsonl and nonmember.jsonl)")
    return _read_documents(directory / "member.jsonl"), _read_documents(directory / "nonmember.jsonl")
