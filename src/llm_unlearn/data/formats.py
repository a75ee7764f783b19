"""Readers of the data file formats (.jsonl, .json, .parquet, .csv): rows as ``(line, object)`` pairs.

Where errors point: for ``.jsonl`` the line is the physical line of the file (blank lines are skipped but
counted); for ``.csv`` it is the physical line of the file (the header is line 1); for ``.json`` and
``.parquet`` it is the 1-based record number (a JSON syntax error gives the physical line instead).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_unlearn.errors import DataError, UserError

__all__ = ["SUPPORTED_EXTENSIONS", "check_path", "raw_rows", "read_text", "rows_jsonl"]

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
_BOM = b"\xef\xbb\xbf"
_CSV_FIELD_LIMIT = 1 << 30


def read_text(path: Path) -> str:
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


def rows_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
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


def raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    ext = path.suffix.lower()
    if ext == ".parquet":
        yield from _rows_parquet(path)
        return
    text = read_text(path)
    if ext == ".jsonl":
        yield from rows_jsonl(path, text)
    elif ext == ".json":
        yield from _rows_json(path, text)
    else:
        yield from _rows_csv(path, text)


def check_path(path: Path) -> None:
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a data file (load_unlearning_data reads directories)")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise UserError(
            f"unsupported data file type {path.suffix or '(no extension)'!r} for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )


def read_json_object(path: Path, what: str, required: tuple[str, ...] = ()) -> dict | None:
    """A local JSON file that must hold an object (with the `required` string fields): None when the
    file does not exist (a hub id, or transformers says what is missing); one UserError line naming the
    file otherwise."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (expected {what}, a JSON object)") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); expected {what}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {what} (a JSON object), got a JSON {type(data).__name__}")
    for key in required:
        if not isinstance(data.get(key), str):
            raise UserError(f"{path}: {what} without a {key!r} field (a string); is it complete?")
    return data
