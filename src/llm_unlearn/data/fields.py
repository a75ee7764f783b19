"""The SemEval / generic field mapping: one data file's rows -> validated ``Record`` objects; and
``DataBundle``, the forget and retain sets that every layout's reader returns.

A record is one prompt/answer pair (SemEval-2025 Task 4 format: ``{id, input, output, task, split}``).
Files may be ``.jsonl``, ``.json`` (a list of objects, or ``{"data": [...]}``), ``.parquet`` or ``.csv``
(read by :mod:`llm_unlearn.data.formats`).

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
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llm_unlearn.data.formats import check_path, raw_rows
from llm_unlearn.errors import DataError, UserError

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "Record", "parse_rows", "string_field"]

SPLITS = ("forget", "retain")
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


def _split_from_name(path: Path) -> str | None:
    name = path.name.lower()
    hits = [s for s in SPLITS if s in name]
    return hits[0] if len(hits) == 1 else None


def string_field(path: Path, line: int, row: dict, name: str) -> str:
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
            return string_field(path, line, row, key_in), string_field(path, line, row, key_out)
    if "text" in row:
        return "", string_field(path, line, row, "text")
    raise DataError(
        path,
        "missing field 'output' (a row needs input/output, prompt/completion, question/answer or text); "
        f"found fields {sorted(map(str, row))}",
        line=line,
        field="output",
    )


def _row_id(path: Path, line: int, row: dict, index: int, has_ids: bool | None) -> tuple[str, bool]:
    """(the row's id, whether the file's rows have ids): ids on all rows or none; an int id becomes a
    string; a file without ids gets ``<file stem>-<row index>``."""
    row_has_id = row.get("id") is not None and row.get("id") != ""
    if has_ids is None:
        has_ids = row_has_id
    if has_ids and not row_has_id:
        raise DataError(path, "missing or empty field 'id' (earlier rows have ids)", line=line, field="id")
    if row_has_id and not has_ids:
        raise DataError(path, "earlier rows have no id: give every row an id or none", line=line, field="id")
    if not has_ids:
        return f"{path.stem}-{index}", has_ids
    rid = row["id"]
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str):
        raise DataError(path, f"expected a string, got {type(rid).__name__}", line=line, field="id")
    return rid, has_ids


def _row_task(path: Path, line: int, row: dict) -> str | None:
    task = row.get("task")
    if task is not None and not isinstance(task, str):
        raise DataError(
            path, f"expected a string or null, got {type(task).__name__}", line=line, field="task"
        )
    return task or None


def _row_split(path: Path, line: int, row: dict, split: str | None, default_split: str | None) -> str:
    """The row's ``split`` field, else the split given or read from the file name; a row that disagrees
    with the split given is an error."""
    row_split = row.get("split")
    if row_split in (None, ""):
        if default_split is None:
            raise UserError(
                f"{path}: cannot tell whether the records are forget or retain data: no 'split' field, "
                "the file name contains neither 'forget' nor 'retain', and no split was given"
            )
        return default_split
    if row_split not in SPLITS:
        raise DataError(
            path, f"must be 'forget' or 'retain', got {row_split!r:.40}", line=line, field="split"
        )
    if split is not None and row_split != split:
        raise DataError(
            path,
            f"row says {row_split!r} but the file was loaded as {split!r} data",
            line=line,
            field="split",
        )
    return row_split


def parse_rows(path: Path, split: str | None) -> list[tuple[int, Record]]:
    """(line, Record) pairs of one file; see the module docstring for the rules."""
    check_path(path)
    if split is not None and split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    default_split = split or _split_from_name(path)
    has_ids: bool | None = None
    out: list[tuple[int, Record]] = []
    for index, (line, row) in enumerate(raw_rows(path)):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
        rid, has_ids = _row_id(path, line, row, index, has_ids)
        prompt, answer = _prompt_answer(path, line, row)
        task = _row_task(path, line, row)
        row_split = _row_split(path, line, row, split, default_split)
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
