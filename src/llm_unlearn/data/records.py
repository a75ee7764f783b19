"""Forget / retain records: reading, validating and locating them.

A record is one prompt/answer pair (SemEval-2025 Task 4 format: ``{id, input, output, task, split}``).
Files may be ``.jsonl``, ``.json`` (a list of objects, or ``{"data": [...]}``), ``.parquet`` or ``.csv``.

Field mapping, checked per row in this order:

* SemEval: ``input`` / ``output`` (plus ``id``, ``task``, ``split``);
* generic: ``prompt`` / ``completion``;
* generic: ``question`` / ``answer``;
* generic: a single ``text`` field. It becomes ``input = ""`` and ``output = text``: the whole text is
  the "answer", so every token of it is trained on (forgotten / retained). The tokenizer joins an empty
  input without the joiner, so no stray leading space is added.

``id`` is optional: a row without one gets ``"<file stem>-<row index from 0>"``. A file must either give
every row an id or none. Integer ids are accepted and turned into strings; every other field must be a
string (``task`` may also be null/absent).

Where errors point: for ``.jsonl`` the line is the physical line of the file (blank lines are skipped but
counted); for ``.csv`` it is the physical line of the file (the header is line 1); for ``.json`` and
``.parquet`` it is the 1-based record number (a JSON syntax error gives the physical line instead).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
SPLITS = ("forget", "retain")
_BOM = b"\xef\xbb\xbf"
_CSV_FIELD_LIMIT = 1 << 30
# (input field, output field) pairs, in the order they are tried.
_FIELD_PAIRS = (("input", "output"), ("prompt", "completion"), ("question", "answer"))


@dataclass(frozen=True)
class Record:
    """One prompt/answer pair. ``split`` is ``"forget"`` or ``"retain"``; ``task`` e.g. ``"Task1"``."""

    id: str
    input: str
    output: str
    task: str | None
    split: str


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


# --------------------------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, a leading BOM removed; undecodable bytes -> DataError with the line."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            path, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})", line=line
        ) from e


def _rows_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=lineno) from e


def _rows_json(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    if not text.strip():
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from e
    if isinstance(obj, dict) and "data" in obj:
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(path, 'expected a JSON list of objects, or {"data": [...]}', field="data")
    yield from enumerate(obj, start=1)


def _rows_csv(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:  # long documents exceed the 128 KiB default
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            row.pop(None, None)  # cells beyond the header
            # a short row gives None for the missing cells: treat them as absent
            yield reader.line_num, {k: v for k, v in row.items() if v is not None}
    except csv.Error as e:
        raise DataError(path, f"malformed CSV: {e}", line=reader.line_num) from e


def _rows_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(path, f"cannot read parquet: {e}") from e
    yield from enumerate(rows, start=1)


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    ext = path.suffix.lower()
    if ext == ".parquet":
        yield from _rows_parquet(path)
        return
    text = _read_text(path)
    if ext == ".jsonl":
        yield from _rows_jsonl(path, text)
    elif ext == ".json":
        yield from _rows_json(path, text)
    else:
        yield from _rows_csv(path, text)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a data file (load_unlearning_data reads directories)")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise UserError(
            f"unsupported data file type {path.suffix or '(no extension)'!r} for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )


def _split_from_name(path: Path) -> str | None:
    name = path.name.lower()
    hits = [s for s in SPLITS if s in name]
    return hits[0] if len(hits) == 1 else None


def _string_field(path: Path, line: int, row: dict, name: str) -> str:
    if name not in row:
        raise DataError(path, f"missing field '{name}'", line=line, field=name)
    value = row[name]
    if value is None:
        raise DataError(path, "value is null; expected a string", line=line, field=name)
    if not isinstance(value, str):
        raise DataError(
            path, f"expected a string, got {type(value).__name__} {value!r:.40}", line=line, field=name
        )
    return value


def _prompt_answer(path: Path, line: int, row: dict) -> tuple[str, str]:
    for key_in, key_out in _FIELD_PAIRS:
        if key_in in row or key_out in row:
            return _string_field(path, line, row, key_in), _string_field(path, line, row, key_out)
    if "text" in row:
        return "", _string_field(path, line, row, "text")
    raise DataError(
        path,
        "missing field 'output' (a row needs input/output, prompt/completion, question/answer or text); "
        f"found fields {sorted(map(str, row))}",
        line=line,
        field="output",
    )


def _parse_rows(path: Path, split: str | None) -> list[tuple[int, Record]]:
    """(line, Record) pairs of one file; see the module docstring for the rules."""
    _check_path(path)
    if split is not None and split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    default_split = split or _split_from_name(path)
    has_ids: bool | None = None
    out: list[tuple[int, Record]] = []
    for index, (line, row) in enumerate(_raw_rows(path)):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
        # ids: all rows or none
        row_has_id = row.get("id") is not None and row.get("id") != ""
        if has_ids is None:
            has_ids = row_has_id
        if has_ids and not row_has_id:
            raise DataError(
                path, "missing or empty field 'id' (earlier rows have ids)", line=line, field="id"
            )
        if row_has_id and not has_ids:
            raise DataError(
                path, "earlier rows have no id: give every row an id or none", line=line, field="id"
            )
        if has_ids:
            rid = row["id"]
            if isinstance(rid, int) and not isinstance(rid, bool):
                rid = str(rid)
            elif not isinstance(rid, str):
                raise DataError(path, f"expected a string, got {type(rid).__name__}", line=line, field="id")
        else:
            rid = f"{path.stem}-{index}"
        prompt, answer = _prompt_answer(path, line, row)
        task = row.get("task")
        if task is not None and not isinstance(task, str):
            raise DataError(
                path, f"expected a string or null, got {type(task).__name__}", line=line, field="task"
            )
        task = task or None
        row_split = row.get("split")
        if row_split in (None, ""):
            row_split = default_split
            if row_split is None:
                raise UserError(
                    f"{path}: cannot tell whether the records are forget or retain data: no 'split' field, "
                    "the file name contains neither 'forget' nor 'retain', and no split was given"
                )
        elif row_split not in SPLITS:
            raise DataError(
                path, f"must be 'forget' or 'retain', got {row_split!r:.40}", line=line, field="split"
            )
        elif split is not None and row_split != split:
            raise DataError(
                path,
                f"row says {row_split!r} but the file was loaded as {split!r} data",
                line=line,
                field="split",
            )
        out.append((line, Record(id=rid, input=prompt, output=answer, task=task, split=row_split)))
    if not out:
        raise DataError(path, "the file holds no records (empty file)")
    _warn_duplicates(path, [r.id for _, r in out])
    return out


def _warn_duplicates(path: Path, ids: list[str]) -> None:
    counts = Counter(ids)
    dups = {i: n for i, n in counts.items() if n > 1}
    if not dups:
        return
    extra = sum(n - 1 for n in dups.values())
    examples = ", ".join(repr(i) for i in list(dups)[:3])
    msg = f"{path}: {extra} duplicate id(s) ({len(dups)} distinct id(s) repeated, e.g. {examples}); all rows are kept"
    log.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def read_records(path: str | os.PathLike, split: str | None = None) -> list[Record]:
    """Read and validate one data file (.jsonl, .json, .parquet, .csv) into Records.

    ``split`` ("forget" / "retain") is used for rows without a ``split`` field; a row whose ``split``
    field disagrees with it is an error. Without either, the split comes from the file name (containing
    "forget" or "retain"). Raises DataError (file, line, field) for malformed content, UserError for a
    missing file or an unsupported extension. Duplicate ids warn (UserWarning) but are kept.
    """
    return [rec for _, rec in _parse_rows(Path(path), split)]


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
    return [(p, line, rec) for p in paths for line, rec in _parse_rows(p, split)]


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

    if combined is not None:
        rows = [(combined, line, rec) for line, rec in _parse_rows(combined, None)]
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
    for line, row in _rows_jsonl(path, _read_text(path)):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
        rid = row.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            row = {**row, "id": str(rid)}
        docs.append(
            {
                "id": _string_field(path, line, row, "id"),
                "document": _string_field(path, line, row, "document"),
            }
        )
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
