"""Readers for the TOFU and MUSE benchmark files (local copies; nothing is downloaded).

Every file is read with its own field names and validated row by row: a bad file raises one
:class:`~llm_unlearn.errors.DataError` naming the file, the line (physical line for ``.jsonl``, 1-based
row number for a ``.json`` list) and the field.

TOFU (Maini et al. 2024; the layout of ``locuslab/TOFU`` converted to JSONL, one object per line):

* ``forgetNN.jsonl``, ``retainNN.jsonl``, ``holdoutNN.jsonl``, ``full.jsonl``: ``question``, ``answer``;
* ``forgetNN_perturbed.jsonl``, ``retain_perturbed.jsonl``: ``question``, ``answer``,
  ``paraphrased_answer`` (string), ``perturbed_answer`` (non-empty list of strings);
* ``real_authors_perturbed.jsonl``, ``world_facts_perturbed.jsonl``: ``question``, ``answer``,
  ``perturbed_answer``.

With the matching ``retainNN`` = full minus ``forgetNN`` (NN in 01, 05, 10: ``retain{100-NN}``).

MUSE (Shi et al. 2024; the layout of ``data/<corpus>/`` in the MUSE repository, ``.json`` lists or
``.jsonl``):

* ``verbmem/forget``: ``prompt``, ``gt`` (the true continuation);
* ``knowmem/forget_qa``, ``knowmem/retain_qa`` and optional ``knowmem/forget_qa_icl``,
  ``knowmem/retain_qa_icl``: ``question``, ``answer``;
* ``privleak/forget``, ``privleak/holdout`` (and optional ``privleak/retain``): strings, or objects with
  ``text``.

For training (``train`` / ``finetune``), a TOFU directory with ``--split forgetNN`` gives forget =
``forgetNN`` and retain = ``retainNN``; ``--split full`` / ``retainNN`` give that file as the only set.
The question becomes the input wrapped in the prompt template (default ``qa``:
``"Question: {question}\\nAnswer:"``, which with the default joiner " " gives exactly the text the
TOFU evaluator scores, ``Question: {q}\\nAnswer: {a}``), the answer becomes the output.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_unlearn.data.fields import DataBundle, Record
from llm_unlearn.data.formats import read_text
from llm_unlearn.errors import DataError, UserError

__all__ = [
    "TOFU_FORGET_SPLITS",
    "QA_TEMPLATE",
    "TofuItem",
    "TofuData",
    "MuseData",
    "read_objects",
    "read_tofu_qa",
    "read_tofu_perturbed",
    "load_tofu",
    "load_muse",
    "is_tofu_dir",
    "tofu_training_bundle",
    "qa_prompt",
]

TOFU_FORGET_SPLITS = ("forget01", "forget05", "forget10")
#: The framework's non-chat template (its Llama-2 base-model config): user tag, question, newline, assistant tag.
QA_TEMPLATE = "Question: {question}\nAnswer:"
_SPLIT_RE = re.compile(r"^(forget|retain|holdout)(\d\d)$")


def qa_prompt(question: str) -> str:
    return QA_TEMPLATE.format(question=question)


@dataclass(frozen=True)
class TofuItem:
    """One TOFU question; ``paraphrased_answer`` and ``perturbed_answers`` where the file has them."""

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()


@dataclass
class TofuData:
    """The sets the TOFU evaluation reads (``holdout`` may be empty when its file is absent)."""

    forget_split: str
    forget: list[TofuItem]
    retain: list[TofuItem]
    real_authors: list[TofuItem]
    world_facts: list[TofuItem]
    holdout: list[TofuItem]
    files: list[Path] = field(default_factory=list)


@dataclass
class MuseData:
    verbmem: list[tuple[str, str]]  # (prompt, ground-truth continuation)
    knowmem_forget: list[tuple[str, str]]  # (question, answer)
    knowmem_retain: list[tuple[str, str]]
    knowmem_forget_icl: list[tuple[str, str]]
    knowmem_retain_icl: list[tuple[str, str]]
    privleak_forget: list[str]
    privleak_holdout: list[str]
    privleak_retain: list[str]
    files: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading


def read_objects(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line, value)`` for every row of a ``.jsonl`` file (physical line; blank lines skipped) or a
    ``.json`` list (1-based row number; ``{"data": [...]}`` also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    text = read_text(path)
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=e.lineno) from e
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            obj = obj["data"]
        if not isinstance(obj, list):
            raise DataError(path, f"expected a JSON list of rows, got {type(obj).__name__}")
        return list(enumerate(obj, start=1))
    rows = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((lineno, json.loads(raw)))
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", line=lineno) from e
    return rows


def _obj(path: Path, line: int, row: Any) -> dict:
    if not isinstance(row, dict):
        raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
    return row


def _string(path: Path, line: int, row: dict, name: str) -> str:
    if name not in row:
        raise DataError(path, f"missing field '{name}'", line=line, field=name)
    value = row[name]
    if not isinstance(value, str):
        got = "null" if value is None else type(value).__name__
        raise DataError(path, f"expected a string, got {got}", line=line, field=name)
    return value


def _string_list(path: Path, line: int, row: dict, name: str) -> tuple[str, ...]:
    if name not in row:
        raise DataError(path, f"missing field '{name}'", line=line, field=name)
    value = row[name]
    if isinstance(value, str):  # some copies store a single perturbed answer as a string
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(path, "expected a non-empty list of strings", line=line, field=name)
    for v in value:
        if not isinstance(v, str):
            got = "null" if v is None else type(v).__name__
            raise DataError(path, f"expected a list of strings, found a {got}", line=line, field=name)
    return tuple(value)


def _nonempty(path: Path, rows: list) -> list:
    if not rows:
        raise DataError(path, "the file has no rows")
    return rows


def read_tofu_qa(path: str | os.PathLike) -> list[TofuItem]:
    """A TOFU question/answer file (``forgetNN``, ``retainNN``, ``holdoutNN``, ``full``)."""
    path = Path(path)
    items = []
    for line, row in read_objects(path):
        row = _obj(path, line, row)
        items.append(TofuItem(_string(path, line, row, "question"), _string(path, line, row, "answer")))
    return _nonempty(path, items)


def read_tofu_perturbed(path: str | os.PathLike, paraphrased: bool = True) -> list[TofuItem]:
    """A TOFU ``*_perturbed`` file; ``paraphrased=False`` for real_authors / world_facts."""
    path = Path(path)
    items = []
    for line, row in read_objects(path):
        row = _obj(path, line, row)
        items.append(
            TofuItem(
                question=_string(path, line, row, "question"),
                answer=_string(path, line, row, "answer"),
                paraphrased_answer=_string(path, line, row, "paraphrased_answer") if paraphrased else None,
                perturbed_answers=_string_list(path, line, row, "perturbed_answer"),
            )
        )
    return _nonempty(path, items)


def _tofu_file(directory: Path, stem: str) -> Path:
    for ext in (".jsonl", ".json"):
        if (directory / f"{stem}{ext}").is_file():
            return directory / f"{stem}{ext}"
    raise UserError(f"TOFU file not found: {directory / stem}.jsonl")


def load_tofu(directory: str | os.PathLike, forget_split: str = "forget10") -> TofuData:
    """Read every set the TOFU evaluation needs for ``forget_split`` (forget01 / forget05 / forget10)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"TOFU data directory not found: {directory}")
    m = _SPLIT_RE.match(forget_split)
    if not m or m.group(1) != "forget":
        raise UserError(f"--forget-split must look like forget01, forget05 or forget10, got {forget_split!r}")
    files = {
        "forget": _tofu_file(directory, f"{forget_split}_perturbed"),
        "retain": _tofu_file(directory, "retain_perturbed"),
        "real_authors": _tofu_file(directory, "real_authors_perturbed"),
        "world_facts": _tofu_file(directory, "world_facts_perturbed"),
    }
    holdout_stem = f"holdout{m.group(2)}"
    holdout_path = next(
        (
            directory / f"{holdout_stem}{e}"
            for e in (".jsonl", ".json")
            if (directory / f"{holdout_stem}{e}").is_file()
        ),
        None,
    )
    data = TofuData(
        forget_split=forget_split,
        forget=read_tofu_perturbed(files["forget"]),
        retain=read_tofu_perturbed(files["retain"]),
        real_authors=read_tofu_perturbed(files["real_authors"], paraphrased=False),
        world_facts=read_tofu_perturbed(files["world_facts"], paraphrased=False),
        holdout=read_tofu_qa(holdout_path) if holdout_path else [],
        files=list(files.values()) + ([holdout_path] if holdout_path else []),
    )
    return data


# ------------------------------------------------------------------------------------------ training
def is_tofu_dir(directory: str | os.PathLike) -> bool:
    """A directory in TOFU's layout: it has ``forgetNN`` and ``retainNN`` files (or ``full``)."""
    d = Path(directory)
    if not d.is_dir():
        return False
    names = {p.stem for p in d.iterdir() if p.suffix in (".jsonl", ".json")}
    return "full" in names or any(
        n.startswith("forget") and f"retain{100 - int(n[6:8]):02d}" in names
        for n in names
        if _SPLIT_RE.match(n)
    )


def tofu_training_bundle(directory: str | os.PathLike, split: str, template: str = "qa"):
    """A DataBundle from a TOFU directory: ``forgetNN`` -> forget = forgetNN, retain = retain{100-NN};
    ``full`` / ``retainNN`` / ``holdoutNN`` -> that file as the forget set alone (a finetune set).
    ``template`` "qa" wraps the question as ``Question: {q}\\nAnswer:``; "raw" keeps it as is."""
    if template not in ("qa", "raw"):
        raise UserError(f"unknown TOFU template {template!r} (qa or raw)")
    directory = Path(directory)
    m = _SPLIT_RE.match(split)
    if split == "full" or (m and m.group(1) != "forget"):
        stems = [(split, "forget")]
    elif m:
        stems = [(split, "forget"), (f"retain{100 - int(m.group(2)):02d}", "retain")]
    else:
        raise UserError(f"unknown TOFU split {split!r} (forget01/05/10, retain99/95/90, holdoutNN or full)")
    sets: dict[str, list] = {"forget": [], "retain": []}
    files = []
    for stem, which in stems:
        path = _tofu_file(directory, stem)
        files.append(path)
        for i, item in enumerate(read_tofu_qa(path)):
            prompt = qa_prompt(item.question) if template == "qa" else item.question
            sets[which].append(
                Record(id=f"{stem}-{i}", input=prompt, output=item.answer, task=None, split=which)
            )
    return DataBundle(forget=sets["forget"], retain=sets["retain"], files=files)


# ------------------------------------------------------------------------------------------ MUSE
def _muse_file(directory: Path, sub: str, stem: str, required: bool = True) -> Path | None:
    for ext in (".json", ".jsonl"):
        p = directory / sub / f"{stem}{ext}"
        if p.is_file():
            return p
    if required:
        raise UserError(f"MUSE file not found: {directory / sub / stem}.json (or .jsonl)")
    return None


def _pairs(path: Path | None, a: str, b: str) -> list[tuple[str, str]]:
    if path is None:
        return []
    out = []
    for line, row in read_objects(path):
        row = _obj(path, line, row)
        out.append((_string(path, line, row, a), _string(path, line, row, b)))
    return out


def _texts(path: Path | None) -> list[str]:
    if path is None:
        return []
    out = []
    for line, row in read_objects(path):
        if isinstance(row, str):
            out.append(row)
        else:
            out.append(_string(path, line, _obj(path, line, row), "text"))
    return out


def load_muse(directory: str | os.PathLike) -> MuseData:
    """Read MUSE's ``verbmem/``, ``knowmem/`` and ``privleak/`` files under ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"MUSE data directory not found: {d}")
    paths = {
        "verbmem": _muse_file(d, "verbmem", "forget"),
        "kf": _muse_file(d, "knowmem", "forget_qa"),
        "kr": _muse_file(d, "knowmem", "retain_qa"),
        "kfi": _muse_file(d, "knowmem", "forget_qa_icl", required=False),
        "kri": _muse_file(d, "knowmem", "retain_qa_icl", required=False),
        "pf": _muse_file(d, "privleak", "forget"),
        "ph": _muse_file(d, "privleak", "holdout"),
        "pr": _muse_file(d, "privleak", "retain", required=False),
    }
    data = MuseData(
        verbmem=_pairs(paths["verbmem"], "prompt", "gt"),
        knowmem_forget=_pairs(paths["kf"], "question", "answer"),
        knowmem_retain=_pairs(paths["kr"], "question", "answer"),
        knowmem_forget_icl=_pairs(paths["kfi"], "question", "answer"),
        knowmem_retain_icl=_pairs(paths["kri"], "question", "answer"),
        privleak_forget=_texts(paths["pf"]),
        privleak_holdout=_texts(paths["ph"]),
        privleak_retain=_texts(paths["pr"]),
        files=[p for p in paths.values() if p is not None],
    )
    for key, path in (
        ("verbmem", "verbmem"),
        ("knowmem_forget", "kf"),
        ("knowmem_retain", "kr"),
        ("privleak_forget", "pf"),
        ("privleak_holdout", "ph"),
    ):
        if not getattr(data, key):
            raise DataError(paths[path], "the file has no rows")
    return data
