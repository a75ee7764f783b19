"""Data for calibrated unlearning: the holdout (never trained on) and the forget documents.

A holdout file is JSONL (or .json) whose rows may carry, in any mix:
- a document: ``document`` or ``text`` (e.g. SemEval's ``mia/nonmember.jsonl``);
- a record: ``input``/``output`` or ``question``/``answer``;
- SemEval's nested tasks: ``question_answering_task: {Question, Answer}`` and
  ``sentence_completion_task: {input, output}`` (both in ``mia/nonmember.jsonl``).

How to make one: take documents or records of the same kind as the forget data that the model has
never seen, e.g. SemEval's non-member documents, or a slice of records held out before fine-tuning
(`llm-unlearn finetune` trains only on what it is given). Do not use the set that the final
evaluation uses as non-members: a holdout that also grades the run would be chosen to please it.

Forget documents (``--forget-documents``) are read with the same reader (their documents only); a
forget record belongs to the document whose id is the record id less its ``sc<k>``/``qa<k>`` suffix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from llm_unlearn.data.fields import Record
from llm_unlearn.data.slices import unit_key
from llm_unlearn.errors import DataError, UserError


def base_id(record_id: str) -> str:
    """The unit a record id or a document id names, as records and documents are matched
    (``data/slices.unit_key``: every id convention of the organizers' files)."""
    return unit_key(record_id)


@dataclass
class Holdout:
    documents: list[dict] = field(default_factory=list)  # {"id", "document"}
    records: list[dict] = field(default_factory=list)  # {"id", "input", "output"}


def _text(path: Path, line: int, row: dict, name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", line=line, field=name)
    return value


def _rows(path: Path):
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from None
        if not isinstance(data, list):
            raise DataError(path, "expected a list of objects")
        yield from enumerate(data, start=1)
        return
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield n, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc.msg}", line=n) from None


def read_holdout(path: str | Path) -> Holdout:
    """Documents and records of a holdout file (see the module docstring); one-line errors name the
    file, the line and the field."""
    path = Path(path)
    out = Holdout()
    for line, row in _rows(path):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
        rid = str(row.get("id", f"line{line}"))
        doc = _text(path, line, row, "document") or _text(path, line, row, "text")
        if doc:
            out.documents.append({"id": rid, "document": doc})
        q = _text(path, line, row, "input") or _text(path, line, row, "question")
        a = _text(path, line, row, "output") or _text(path, line, row, "answer")
        if q is not None and a is not None:
            out.records.append({"id": rid, "input": q, "output": a})
        for key, qk, ak, suffix in (
            ("question_answering_task", "Question", "Answer", "qa0"),
            ("sentence_completion_task", "input", "output", "sc0"),
        ):
            task = row.get(key)
            if task is None:
                continue
            if (
                not isinstance(task, dict)
                or not isinstance(task.get(qk), str)
                or not isinstance(task.get(ak), str)
            ):
                raise DataError(
                    path, f"expected an object with string fields {qk!r} and {ak!r}", line=line, field=key
                )
            out.records.append({"id": rid + suffix, "input": task[qk], "output": task[ak]})
    if not out.documents and not out.records:
        raise DataError(path, "no documents (document/text) and no records (input/output, question/answer)")
    return out


def document_records(documents: list[dict], forget_records) -> list:
    """Forget rows for the forget documents (``--unlearn-documents``): one Record per document whose id
    is the unit id of a forget record (all of them when none matches, e.g. generic data without SemEval
    ids), with an empty prompt, so that the whole document is labelled."""
    units = {base_id(r.id) for r in forget_records}
    matched = [d for d in documents if base_id(d["id"]) in units]
    if not matched and documents:
        logging.getLogger(__name__).warning(
            "none of the %d forget documents names a forget unit (document %r is read as unit %r, record "
            "%r as %r): every document is unlearned after the records",
            len(documents),
            documents[0]["id"],
            base_id(documents[0]["id"]),
            forget_records[0].id if forget_records else None,
            base_id(forget_records[0].id) if forget_records else None,
        )
        matched = list(documents)
    return [Record(id=d["id"], input="", output=d["document"], task=None, split="forget") for d in matched]


def with_documents(forget_records: list, documents: list[dict]) -> tuple[list, set[int]]:
    """The forget records with the document rows of :func:`document_records` placed right after the last
    record of their unit (at the end when none matches), so that a chunk unlearns a unit's records and its
    document together; returns ``(rows, indices of the document rows)``."""
    docs = document_records(documents, forget_records)
    last = {base_id(r.id): i for i, r in enumerate(forget_records)}
    after: dict[int, list] = {}
    placed = set()
    for j, doc in enumerate(docs):  # several documents may name one unit (record-id convention)
        unit = base_id(doc.id)
        if unit in last:
            after.setdefault(last[unit], []).append(doc)
            placed.add(j)
    rows, doc_rows = [], set()
    for i, r in enumerate(forget_records):
        rows.append(r)
        for doc in after.get(i, []):
            doc_rows.add(len(rows))
            rows.append(doc)
    for j, doc in enumerate(docs):
        if j not in placed:
            doc_rows.add(len(rows))
            rows.append(doc)
    return rows, doc_rows


def read_forget_documents(path: str | Path) -> list[dict]:
    """The documents of a file read as a holdout is; at least one is required."""
    docs = read_holdout(path).documents
    if not docs:
        raise DataError(Path(path), "no documents (expected a document or text field)", field="document")
    return docs
