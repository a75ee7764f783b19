"""Alternative answers for the preference objectives (IdkDPO, AltPO): the preferred answer ``y_w``
that a forget answer ``y_l`` is trained against.

The package ships ``refusals.txt``: short "I don't know"-style answers written for this project.
A user file may replace it: ``.txt`` (one answer per line) or ``.jsonl`` (one object per line with a
string field ``text`` or ``answer``). Blank lines are skipped; a file without any answer, a bad JSON
line or a line without a usable field is a :class:`~llm_unlearn.errors.DataError` naming the file and
the line.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from llm_unlearn.data.formats import read_text
from llm_unlearn.errors import DataError, UserError

_FIELDS = ("text", "answer")


def _packaged_text() -> tuple[str, str]:
    ref = resources.files("llm_unlearn.data").joinpath("refusals.txt")
    return str(ref), ref.read_text(encoding="utf-8")


def _parse_jsonl(where: str, text: str) -> list[str]:
    answers = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(where, f"malformed JSON: {e.msg} (column {e.colno})", line=lineno) from e
        if not isinstance(obj, dict):
            raise DataError(where, "expected a JSON object", line=lineno)
        field = next((f for f in _FIELDS if f in obj), None)
        if field is None:
            raise DataError(where, 'missing field "text" (or "answer")', line=lineno)
        value = obj[field]
        if not isinstance(value, str) or not value.strip():
            raise DataError(where, "expected a non-empty string", line=lineno, field=field)
        answers.append(value.strip())
    return answers


def load_refusals(path: str | Path | None = None) -> list[str]:
    """The alternative answers: the packaged refusals (``path`` None) or a user ``.txt`` / ``.jsonl``.

    Returns the answers in file order, stripped, blank lines skipped. Raises
    :class:`~llm_unlearn.errors.UserError` (``DataError`` with file and line) for an unreadable,
    undecodable, malformed or empty file, or an unknown extension.
    """
    if path is None:
        where, text = _packaged_text()
        suffix = ".txt"
    else:
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".txt", ".jsonl"):
            raise UserError(f"{p}: alternative answers must be a .txt (one per line) or .jsonl file")
        where, text = str(p), read_text(p)
    if suffix == ".jsonl":
        answers = _parse_jsonl(where, text)
    else:
        answers = [line.strip() for line in text.split("\n") if line.strip()]
    if not answers:
        raise DataError(where, "no alternative answers in the file (it is empty or all blank)", line=1)
    return answers


def pick_alternative(record_id: str | int, answers: list[str] | tuple[str, ...], seed: int = 0) -> str:
    """One answer for ``record_id``, the same in every process and run for the same ``seed``.

    The index is ``sha256(f"{seed}:{record_id}") mod len(answers)``: independent of Python's hash
    randomization, of the order records are seen and of the number of workers. ``answers`` empty ->
    ValueError.
    """
    if not answers:
        raise ValueError("pick_alternative needs at least one answer")
    digest = hashlib.sha256(f"{int(seed)}:{record_id}".encode()).digest()
    return answers[int.from_bytes(digest[:8], "big") % len(answers)]


def load_alternatives_by_id(path: str | Path) -> dict[str, list[str]]:
    """Per-record alternative answers from a ``.jsonl`` file whose rows carry an ``id`` (the forget
    record's id) and ``text`` / ``answer``: {id: [answers in file order]}. Rows without ``id`` are
    ignored here (they are the generic answers :func:`load_refusals` reads); {} for a ``.txt``."""
    p = Path(path)
    if p.suffix.lower() != ".jsonl":
        return {}
    by_id: dict[str, list[str]] = {}
    for lineno, raw in enumerate(read_text(p).split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        obj = json.loads(line)  # load_refusals has already reported malformed lines
        if isinstance(obj, dict) and "id" in obj:
            field = next((f for f in _FIELDS if f in obj), None)
            if field is None or not isinstance(obj[field], str) or not obj[field].strip():
                raise DataError(p, 'expected a non-empty "text" (or "answer")', line=lineno)
            by_id.setdefault(str(obj["id"]), []).append(obj[field].strip())
    return by_id


def alternative_for(record_id, generic: list[str], by_id: dict[str, list[str]], seed: int = 0) -> str:
    """The record's own alternative when the file has one for its id, else a generic one (seeded)."""
    own = by_id.get(str(record_id))
    return pick_alternative(record_id, own if own else generic, seed)
