"""Forget / retain sets: locating the files of a data directory, ``load_unlearning_data``, MIA documents.

Rows are read by :mod:`llm_unlearn.data.formats` and mapped to :class:`Record` by
:mod:`llm_unlearn.data.fields` (whose docstring gives the field mapping and the id rules).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_unlearn.data.fields import Record, parse_rows, string_field
from llm_unlearn.data.formats import SUPPORTED_EXTENSIONS, read_text, rows_jsonl
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


@dataclass
class DataBundle:
    """The forget and retain sets, and every file read to build them (in reading order)."""

    forget: list[Record]
    retain: list[Record]
    files: list[Path] = field(default_factory=list)


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


# ------------------------------------------------------------------------------------------- locating


def _find_plain(directory: Path, stem: str) -> list[Path]:
    """``<dir>/<stem>.<ext>`` for the first supported extension present (jsonl, json, parquet, csv)."""
    found = [
        directory / f"{stem}{ext}" for ext in SUPPORTED_EXTENSIONS if (directory / f"{stem}{ext}").is_file()
    ]
    if len(found) > 1:
        log.info("several %s files in %s; using %s", stem, directory, found[0].name)
    return found[:1]


def _find_shards(directory: Path, stem: str, split: str) -> list[Path]:
    """The organizers' parquet shards ``<stem>_<split>-00000-of-00001.parquet`` (all shards, sorted)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{stem}_{split}-*-of-*.parquet") if p.is_file())


def _locate(data: Path, split: str | None) -> tuple[list[Path], list[Path]]:
    """Forget and retain files in directory ``data`` for ``split`` (e.g. "train"); UserError if none."""
    tried: list[str] = []
    attempts: list[tuple[str, Any]] = []  # (description, finder(stem) -> list[Path])

    def plain(d: Path):
        tried.append(f"{d}/forget.{{jsonl,json,parquet,csv}}")
        return lambda stem: _find_plain(d, stem) if d.is_dir() else []

    def shards(d: Path, s: str):
        tried.append(f"{d}/forget_{s}-*-of-*.parquet")
        return lambda stem: _find_shards(d, stem, s)

    if split is None:
        attempts += [plain(data), shards(data, "train"), shards(data, "validation")]
        attempts += [plain(data / "train"), shards(data / "train", "train")]
    else:
        attempts += [plain(data / split), shards(data, split), shards(data / split, split)]
        if data.name == split:  # e.g. data=".../train", split="train"
            attempts.append(plain(data))
    for finder in attempts:
        forget = finder("forget")
        if forget:
            return forget, finder("retain")
    where = f" for split {split!r}" if split else ""
    raise UserError(f"no forget data found in {data}{where}; looked for: " + "; ".join(tried))


def _read_many(paths: list[Path], split: str) -> list[tuple[Path, int, Record]]:
    return [(p, line, rec) for p in paths for line, rec in parse_rows(p, split)]


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
    """
    if data is None and forget is None:
        raise UserError("no data given: pass a data directory (or file), or forget=FILE")
    if data is not None and split is not None and forget is None and retain is None:
        from llm_unlearn.data.benchmarks import is_tofu_dir, tofu_training_bundle

        if is_tofu_dir(data):  # TOFU layout: --split forgetNN (forget + retainNN), full, retainNN, ...
            return tofu_training_bundle(data, split)
    forget_paths, retain_paths, combined = _resolve_paths(data, split, forget, retain)
    forget_rows, retain_rows, files = _read_sets(forget_paths, retain_paths, combined)
    if not forget_rows:
        raise DataError(files[0], "no forget records (the forget set is empty)", field="split")
    if require_retain and not retain_rows:
        raise UserError(
            "retain data is required but none was found"
            + (f" (looked beside {forget_paths[0]})" if forget_paths else "")
            + "; pass retain=FILE"
        )
    _check_overlap(forget_rows, retain_rows)
    bundle = DataBundle(
        forget=[r for _, _, r in forget_rows], retain=[r for _, _, r in retain_rows], files=_unique(files)
    )
    log.info(
        "loaded %d forget and %d retain records from %s",
        len(bundle.forget),
        len(bundle.retain),
        ", ".join(str(p) for p in bundle.files),
    )
    return bundle


def _resolve_paths(data, split, forget, retain) -> tuple[list[Path], list[Path], Path | None]:
    """``(forget files, retain files, combined file)``: what ``data`` gives, replaced by ``forget=`` /
    ``retain=``; the combined file (rows with a ``split`` field) is ``data`` itself when it is a file."""
    forget_paths: list[Path] = []
    retain_paths: list[Path] = []
    combined: Path | None = None
    if data is not None:
        data = Path(data)
        if not data.exists():
            raise UserError(f"data path not found: {data}")
        if data.is_dir():
            forget_paths, retain_paths = _locate(data, split)
        else:
            combined = data
    if forget is not None:
        forget_paths, combined = [Path(forget)], None
        if not forget_paths[0].exists():
            raise UserError(f"forget file not found: {forget_paths[0]}")
    if retain is not None:
        retain_paths = [Path(retain)]
        if not retain_paths[0].exists():
            raise UserError(f"retain file not found: {retain_paths[0]}")
    return forget_paths, retain_paths, combined


def _read_sets(forget_paths: list[Path], retain_paths: list[Path], combined: Path | None):
    """``(forget rows, retain rows, files read)``, each row ``(path, line, Record)``; explicit retain files
    replace the retain rows of a combined file."""
    if combined is not None:
        rows = [(combined, line, rec) for line, rec in parse_rows(combined, None)]
        forget_rows = [r for r in rows if r[2].split == "forget"]
        retain_rows = [r for r in rows if r[2].split == "retain"] if not retain_paths else []
        files = [combined]
    else:
        forget_rows = _read_many(forget_paths, "forget")
        retain_rows = []
        files = list(forget_paths)
    if retain_paths:
        retain_rows = _read_many(retain_paths, "retain")
        files += retain_paths
    return forget_rows, retain_rows, files


def _unique(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _check_overlap(
    forget_rows: list[tuple[Path, int, Record]], retain_rows: list[tuple[Path, int, Record]]
) -> None:
    retain_at: dict[str, tuple[Path, int]] = {}
    for path, line, rec in retain_rows:
        retain_at.setdefault(rec.id, (path, line))
    shared: list[tuple[Path, int, str]] = []
    seen: set[str] = set()
    for path, line, rec in forget_rows:
        if rec.id in retain_at and rec.id not in seen:
            seen.add(rec.id)
            shared.append((path, line, rec.id))
    if not shared:
        return
    fpath, fline, first = shared[0]
    rpath, rline = retain_at[first]
    examples = ", ".join(repr(i) for _, _, i in shared[:3])
    raise DataError(
        fpath,
        f"{len(shared)} id(s) are in both the forget set ({fpath}) and the retain set ({rpath}), "
        f"e.g. {examples}; {first!r} is at line {rline} of {rpath}",
        line=fline,
        field="id",
    )


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
