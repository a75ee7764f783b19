"""MMLU data: reading the Hendrycks CSV and Hugging Face ``cais/mmlu`` layouts, question sampling, metrics files.

Layouts (a local directory; a hub id only when online, via ``datasets``):

* Hendrycks CSV: ``dev/<subject>_dev.csv`` and ``test/<subject>_test.csv`` (also under ``data/``), no
  header, columns question, A, B, C, D, answer letter;
* Hugging Face ``cais/mmlu``: ``test*.parquet|jsonl|json`` and ``dev*...`` files (in the directory, in
  ``all/``, or in per-subject folders) with question, subject, choices (4 strings), answer (0-3).

Cells are read as text (Open-Instruct reads the CSVs with pandas, which turns numeric-looking cells into
numbers: ``"1.50"`` would be printed ``1.5`` there; such cells are rare).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_unlearn.errors import DataError, UserError
from llm_unlearn.evaluation.benchmarks.mmlu.prompts import CHOICES, MMLUQuestion

log = logging.getLogger(__name__)

__all__ = ["load_mmlu", "select_instances", "read_mmlu_metrics"]

_HF_FILE = re.compile(r"^(test|dev)([-_.][^/]*)?\.(parquet|jsonl|json)$")


def _answer_letter(value: Any, path: Path, line: int) -> str:
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and 0 <= value < 4:
        return CHOICES[value]
    if isinstance(value, float) and value.is_integer() and 0 <= value < 4:
        return CHOICES[int(value)]
    if isinstance(value, str):
        v = value.strip()
        if v.upper() in CHOICES:
            return v.upper()
        if v.isdigit() and 0 <= int(v) < 4:
            return CHOICES[int(v)]
    raise DataError(
        path, f"row {line}: answer must be A-D (or 0-3), got {value!r:.40}", line=line, field="answer"
    )


def _read_csv(path: Path, subject: str) -> list[MMLUQuestion]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from e
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    row_no = 0
    try:
        for row in reader:
            row_no += 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 6:
                raise DataError(
                    path,
                    f"row {row_no}: expected 6 fields (question, A, B, C, D, answer), got {len(row)}",
                    line=reader.line_num,
                )
            answer = _answer_letter(row[5], path, reader.line_num)
            out.append(MMLUQuestion(subject, row[0], (row[1], row[2], row[3], row[4]), answer))
    except csv.Error as e:
        raise DataError(path, f"row {row_no + 1}: malformed CSV: {e}", line=reader.line_num) from e
    return out


def _hf_rows(path: Path) -> list[tuple[int, Any]]:
    ext = path.suffix.lower()
    if ext == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(enumerate(pq.read_table(path).to_pylist(), start=1))
        except (pa.ArrowException, OSError) as e:
            raise DataError(path, f"cannot read parquet: {e}") from e
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from e
    if ext == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(path, f"row {lineno}: malformed JSON: {e.msg}", line=lineno) from e
        return rows
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg}", line=e.lineno) from e
    if isinstance(obj, dict) and "data" in obj:
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(path, 'expected a JSON list of objects, or {"data": [...]}')
    return list(enumerate(obj, start=1))


def _hf_question(path: Path, line: int, row: Any, default_subject: str | None) -> MMLUQuestion:
    if not isinstance(row, dict):
        raise DataError(path, f"row {line}: expected an object, got {type(row).__name__}", line=line)
    question = row.get("question")
    if not isinstance(question, str):
        raise DataError(path, f"row {line}: 'question' must be a string", line=line, field="question")
    subject = row.get("subject") or default_subject
    if not isinstance(subject, str) or not subject:
        raise DataError(path, f"row {line}: missing 'subject'", line=line, field="subject")
    choices = row.get("choices")
    if hasattr(choices, "tolist"):
        choices = choices.tolist()
    if (
        not isinstance(choices, (list, tuple))
        or len(choices) != 4
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DataError(
            path, f"row {line}: 'choices' must be a list of 4 strings", line=line, field="choices"
        )
    answer = _answer_letter(row.get("answer"), path, line)
    return MMLUQuestion(subject, question, tuple(choices), answer)  # type: ignore[arg-type]


def _csv_dirs(root: Path) -> Path | None:
    for base in (root, root / "data"):
        if (base / "test").is_dir() and any((base / "test").glob("*_test.csv")):
            return base
    return None


def _hf_files(root: Path) -> tuple[list[Path], bool]:
    """HF-layout files (test and dev) and whether they sit in per-subject folders."""

    def matches(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and _HF_FILE.match(p.name)) if d.is_dir() else []

    for d in (root, root / "all", root / "data"):
        files = matches(d)
        if files:
            return files, False
    files = [p for sub in sorted(root.iterdir()) if sub.is_dir() for p in matches(sub)]
    return files, True


def _load_hub(name: str) -> dict[str, dict[str, list[MMLUQuestion]]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise UserError(f"loading MMLU from the hub ({name}) needs the 'datasets' package") from e
    data: dict[str, dict[str, list[MMLUQuestion]]] = {}
    for split in ("test", "dev"):
        try:
            ds = datasets.load_dataset(name, "all", split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown repo, ...: all user-facing
            raise UserError(
                f"cannot load MMLU {split} split from the hub id {name!r}: {str(e).splitlines()[0]}"
            ) from None
        for i, row in enumerate(ds, start=1):
            q = _hf_question(Path(f"{name}:{split}"), i, row, None)
            data.setdefault(q.subject, {"dev": [], "test": []})[split].append(q)
    return data


def load_mmlu(
    data: str | os.PathLike, subjects: Sequence[str] | None = None
) -> dict[str, dict[str, list[MMLUQuestion]]]:
    """``{subject: {"dev": [...], "test": [...]}}`` (subjects sorted) from a directory in either layout,
    or a hub id (online only). ``subjects`` restricts (and validates) the subjects."""
    root = Path(data)
    if not root.exists():
        name = str(data)
        if name.count("/") == 1 and not name.startswith((".", "/", "~")):
            out = _load_hub(name)
        else:
            raise UserError(f"MMLU data not found: {data}")
    elif not root.is_dir():
        raise UserError(f"MMLU data must be a directory (dev/ and test/ CSVs, or cais/mmlu files): {data}")
    elif (base := _csv_dirs(root)) is not None:
        out = {}
        for test_file in sorted((base / "test").glob("*_test.csv")):
            subject = test_file.name[: -len("_test.csv")]
            dev_file = base / "dev" / f"{subject}_dev.csv"
            out[subject] = {
                "test": _read_csv(test_file, subject),
                "dev": _read_csv(dev_file, subject) if dev_file.is_file() else [],
            }
    else:
        files, per_subject = _hf_files(root)
        if not files:
            raise UserError(
                f"no MMLU data in {root}: expected test/<subject>_test.csv (+ dev/<subject>_dev.csv), or "
                "test*/dev* .parquet/.jsonl/.json files with question, subject, choices, answer"
            )
        out = {}
        for path in files:
            split = _HF_FILE.match(path.name).group(1)  # type: ignore[union-attr]
            default_subject = path.parent.name if per_subject else None
            for line, row in _hf_rows(path):
                q = _hf_question(path, line, row, default_subject)
                out.setdefault(q.subject, {"dev": [], "test": []})[split].append(q)
    out = {s: out[s] for s in sorted(out) if out[s]["test"]}
    if not out:
        raise UserError(f"no MMLU test questions found in {data}")
    if subjects:
        unknown = [s for s in subjects if s not in out]
        if unknown:
            raise UserError(f"unknown MMLU subject(s) {unknown}; available: {', '.join(out)}")
        out = {s: out[s] for s in subjects}
    missing_dev = [s for s, v in out.items() if not v["dev"]]
    if missing_dev:
        log.warning(
            "no dev examples for %d subject(s) (0-shot there): %s", len(missing_dev), ", ".join(missing_dev)
        )
    return out


def select_instances(questions: Sequence[MMLUQuestion], n_instances: int | None) -> list[MMLUQuestion]:
    """At most ``n_instances`` questions, drawn as Open-Instruct does
    (``DataFrame.sample(n, random_state=42)`` = ``RandomState(42).choice(n_total, n, replace=False)``)."""
    if not n_instances or n_instances >= len(questions):
        return list(questions)
    import numpy as np

    idx = np.random.RandomState(42).choice(len(questions), size=n_instances, replace=False)
    return [questions[int(i)] for i in idx]


def read_mmlu_metrics(path: str | os.PathLike) -> float:
    """``average_acc`` from a ``metrics.json`` (ours or Open-Instruct's)."""
    p = Path(path)
    if not p.exists() or p.is_dir():
        raise UserError(f"MMLU metrics file not found: {p}")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(p, f"cannot read MMLU metrics: {e}") from e
    value = obj.get("average_acc") if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
        raise DataError(
            p, f"'average_acc' must be a number in [0, 1], got {value!r:.40}", field="average_acc"
        )
    return float(value)
