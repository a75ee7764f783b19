"""MMLU accuracy as Open-Instruct's MMLU evaluation computes it (the number SemEval-2025 Task 4 uses).

Prompt (k-shot, k = ``ntrain`` dev examples)::

    The following are multiple choice questions (with answers) about  <subject words>.\\n\\n
    <dev question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: <letter>\\n\\n      (k times)
    <test question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

(the subject is joined as ``" " + word`` per word, hence the double space after "about", exactly as
Open-Instruct's ``format_subject``). k shrinks one by one while the prompt is longer than 2048 tokens
(counted without special tokens). The prediction is the argmax of the next-token distribution restricted
to the LAST token id of ``tokenizer.encode(" A" | " B" | " C" | " D", add_special_tokens=False)``; the
prompt is encoded with the tokenizer's default special tokens and scored in left-padded batches.
``average_acc`` is the micro average over all questions; ``subcat_acc`` and ``cat_acc`` pool the
questions of the subjects in each subcategory / category.

Shared prefix (default; ``prefix_cache=False`` / ``--no-prefix-cache`` scores every prompt whole): all
prompts of one subject with the same k start with the same header and k dev examples. That prefix is run
through the model once, and the questions are scored in batches from its key/value cache (expanded to the
batch). The split point is a TOKEN boundary of the real encodings: the longest run of tokens that every
prompt's own encoding (``tokenizer(prompt).input_ids``) shares with the prefix's encoding. A BPE merge across
the text boundary (``"\n\n" + "Who"`` encoding differently from the two parts) only moves the split to an
earlier token; the model always sees exactly the tokens of the uncached path, at the same positions.

Data layouts (a local directory; a hub id only when online, via ``datasets``):

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_unlearn.errors import DataError, UserError
from llm_unlearn.evaluation.batched import forward_last_logits
from llm_unlearn.evaluation.mmlu_categories import CATEGORIES, SUBJECT_SUBCATEGORIES, subject_categories
from llm_unlearn.evaluation.runtime import (
    accepts_position_ids,
    eval_mode,
    forward_params,
    length_batches,
    model_device,
    pad_token_id,
    position_ids,
)

log = logging.getLogger(__name__)

__all__ = [
    "CHOICES",
    "MAX_PROMPT_TOKENS",
    "MMLUQuestion",
    "format_subject",
    "format_example",
    "gen_prompt",
    "build_prompt",
    "answer_token_ids",
    "load_mmlu",
    "select_instances",
    "predict",
    "shared_prefix_length",
    "predict_with_prefix",
    "compute_metrics",
    "evaluate_mmlu",
    "read_mmlu_metrics",
    "run_lm_eval",
]

CHOICES = ("A", "B", "C", "D")
MAX_PROMPT_TOKENS = 2048
_HF_FILE = re.compile(r"^(test|dev)([-_.][^/]*)?\.(parquet|jsonl|json)$")


@dataclass(frozen=True)
class MMLUQuestion:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


# ------------------------------------------------------------------------------------------ prompts
def format_subject(subject: str) -> str:
    """``"abstract_algebra"`` -> ``" abstract algebra"`` (a space before every word, as Open-Instruct)."""
    return "".join(" " + word for word in subject.split("_"))


def format_example(q: MMLUQuestion, include_answer: bool = True) -> str:
    prompt = q.question
    for letter, choice in zip(CHOICES, q.choices):
        prompt += f"\n{letter}. {choice}"
    prompt += "\nAnswer:"
    if include_answer:
        prompt += f" {q.answer}\n\n"
    return prompt


def gen_prompt(dev: Sequence[MMLUQuestion], subject: str, k: int) -> str:
    """The header and the first ``k`` dev examples with their answers."""
    prompt = (
        f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    )
    for q in dev[:k]:
        prompt += format_example(q)
    return prompt


def build_prompt(
    tokenizer,
    dev: Sequence[MMLUQuestion],
    question: MMLUQuestion,
    ntrain: int = 5,
    max_tokens: int = MAX_PROMPT_TOKENS,
) -> tuple[str, int]:
    """``(prompt, k)``: the k-shot prompt for ``question`` with k = ``ntrain`` (at most the dev examples
    available), reduced one by one while it has more than ``max_tokens`` tokens (without special tokens)."""
    k = max(0, min(ntrain, len(dev)))
    end = format_example(question, include_answer=False)
    while True:
        prompt = gen_prompt(dev, question.subject, k) + end
        if k == 0 or len(tokenizer(prompt, add_special_tokens=False).input_ids) <= max_tokens:
            return prompt, k
        k -= 1


def answer_token_ids(tokenizer) -> list[int]:
    """The candidate ids: the last token of ``encode(" " + letter)`` for A, B, C, D."""
    ids = []
    for letter in CHOICES:
        enc = tokenizer.encode(" " + letter, add_special_tokens=False)
        if not enc:
            raise UserError(f"the tokenizer encodes {' ' + letter!r} to no tokens")
        if len(enc) > 1:
            log.warning("%r is %d tokens for this tokenizer; its last token is used", " " + letter, len(enc))
        ids.append(int(enc[-1]))
    if len(set(ids)) < len(ids):
        raise UserError(f"the answer letters do not map to distinct tokens ({ids}); MMLU cannot be scored")
    return ids


# ------------------------------------------------------------------------------------------ data
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


# ------------------------------------------------------------------------------------------ scoring
def predict(
    model, tokenizer, prompts: Sequence[str], batch_size: int = 8, candidate_ids: Sequence[int] | None = None
) -> tuple[list[int], list[list[float]]]:
    """``(predicted choice index, [p(A), p(B), p(C), p(D)])`` per prompt (probabilities from the softmax
    over the whole vocabulary, as Open-Instruct)."""
    candidate_ids = list(candidate_ids) if candidate_ids is not None else answer_token_ids(tokenizer)
    encoded = [list(tokenizer(p).input_ids) for p in prompts]
    logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
    return _probs_from_logits(logits, candidate_ids)


def _probs_from_logits(logits: Sequence[torch.Tensor], candidate_ids: Sequence[int]):
    preds, probs = [], []
    for row in logits:
        p = torch.softmax(row.float(), dim=-1)[list(candidate_ids)]
        preds.append(int(torch.argmax(p)))
        probs.append([float(x) for x in p])
    return preds, probs


def shared_prefix_length(encoded: Sequence[Sequence[int]], prefix_ids: Sequence[int]) -> int:
    """The number of leading tokens that ``prefix_ids`` and every sequence of ``encoded`` share, at most
    ``len(shortest) - 1`` (each sequence keeps at least one token of its own to score)."""
    n = len(prefix_ids)
    for seq in encoded:
        n = min(n, len(seq) - 1)
        i = 0
        while i < n and seq[i] == prefix_ids[i]:
            i += 1
        n = i
    return max(n, 0)


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``[(keys, values)]`` per layer of a transformers key/value cache ([1, heads, T, head_dim] each),
    or None for a cache this module cannot expand exactly (sliding windows, other layouts)."""
    from transformers import DynamicCache

    if type(cache) is not DynamicCache:
        return None
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    out = []
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer":
            return None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None:
            return None
        out.append((keys, values))
    return out


@torch.no_grad()
def predict_with_prefix(
    model,
    tokenizer,
    prefix: str,
    prompts: Sequence[str],
    batch_size: int = 8,
    candidate_ids: Sequence[int] | None = None,
    min_shared_tokens: int = 1,
) -> tuple[list[int], list[list[float]], int]:
    """:func:`predict` for prompts that all start with the text ``prefix``, running the shared tokens
    once: ``(predictions, probabilities, shared tokens)``.

    Each prompt is encoded whole, as :func:`predict` does; the shared part is the longest token prefix
    common to every encoding and to ``tokenizer(prefix).input_ids`` (see :func:`shared_prefix_length`),
    so a merge across the text boundary moves the split, never the tokens. Its key/value cache is
    computed once (batch 1) and expanded to each batch; each batch holds the rest of the prompts,
    left-padded after the prefix (attention mask ``[1]*L + [0]*pad + [1]*n``, positions continuing from
    L), so every row's last position is its next-token prediction. With fewer than ``min_shared_tokens``
    shared tokens, or a cache layout that cannot be expanded exactly, the prompts are scored whole."""
    from transformers import DynamicCache

    candidate_ids = list(candidate_ids) if candidate_ids is not None else answer_token_ids(tokenizer)
    encoded = [list(tokenizer(p).input_ids) for p in prompts]
    if not encoded:
        return [], [], 0
    shared = shared_prefix_length(encoded, list(tokenizer(prefix).input_ids))
    with_pos = accepts_position_ids(model)
    if shared < max(min_shared_tokens, 1) or not with_pos:
        logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
        return (*_probs_from_logits(logits, candidate_ids), 0)
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    params = forward_params(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2x: "cache"
    out: list[torch.Tensor | None] = [None] * len(encoded)
    with eval_mode(model):
        prefix_ids = torch.tensor([encoded[0][:shared]], dtype=torch.long, device=device)
        first = model(input_ids=prefix_ids, use_cache=True, **keep)
        cache = getattr(first, "cache", None) or getattr(first, "past_key_values", None)
        layers = _cache_layers(cache) if cache is not None else None
        if layers is None:
            logits = forward_last_logits(model, tokenizer, encoded, batch_size=batch_size)
            return (*_probs_from_logits(logits, candidate_ids), 0)
        rests = [e[shared:] for e in encoded]
        for batch in length_batches([len(r) for r in rests], batch_size):
            b, width = len(batch), max(len(rests[i]) for i in batch)
            ids = torch.full((b, width), pad_id, dtype=torch.long)
            mask = torch.zeros((b, shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for r, i in enumerate(batch):
                n = len(rests[i])
                ids[r, width - n :] = torch.tensor(rests[i], dtype=torch.long)
                mask[r, shared + width - n :] = 1
            mask = mask.to(device)
            expanded = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in layers])
            logits = (
                model(
                    input_ids=ids.to(device),
                    attention_mask=mask,
                    position_ids=position_ids(mask)[:, shared:],
                    use_cache=True,
                    **{cache_arg: expanded},
                    **keep,
                )
                .logits[:, -1, :]
                .float()
                .cpu()
            )
            for r, i in enumerate(batch):
                out[i] = logits[r]
    return (*_probs_from_logits(out, candidate_ids), shared)  # type: ignore[arg-type]


def compute_metrics(correct: dict[str, Sequence[bool]]) -> dict[str, Any]:
    """``average_acc`` (micro average), ``subcat_acc``, ``cat_acc`` (pooled over subjects; only those
    with questions) and ``subject_acc`` from ``{subject: [correct?]}``."""
    all_c = [bool(c) for cs in correct.values() for c in cs]
    if not all_c:
        raise ValueError("no MMLU questions were scored")
    subcat: dict[str, list[bool]] = {s: [] for cats in CATEGORIES.values() for s in cats}
    cat: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for subject, cs in correct.items():
        subcats, cats = subject_categories(subject)
        for s in subcats:
            subcat[s].extend(bool(c) for c in cs)
        for c in cats:
            cat[c].extend(bool(x) for x in cs)

    def acc(values: Sequence[bool]) -> float:
        return sum(values) / len(values)

    return {
        "average_acc": acc(all_c),
        "subcat_acc": {s: acc(v) for s, v in subcat.items() if v},
        "cat_acc": {c: acc(v) for c, v in cat.items() if v},
        "subject_acc": {s: acc(list(cs)) for s, cs in correct.items() if len(cs)},
        "n_questions": len(all_c),
    }


def evaluate_mmlu(
    model,
    tokenizer,
    data: str | os.PathLike | dict,
    *,
    ntrain: int = 5,
    subjects: Sequence[str] | None = None,
    n_instances: int | None = None,
    batch_size: int = 8,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    lm_eval_tasks: Sequence[str] | None = None,
    prefix_cache: bool = True,
) -> dict[str, Any]:
    """Run the MMLU evaluation; returns the ``metrics.json`` object (written, with
    ``predictions.jsonl``, to ``output_dir`` when given). ``data``: a directory / hub id, or what
    :func:`load_mmlu` returns. ``prefix_cache``: score each subject's questions with the same k from the
    key/value cache of their shared prefix (:func:`predict_with_prefix`); False scores every prompt whole
    (:func:`predict`). Both give the same predictions up to floating-point rounding."""
    import time

    from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl

    if ntrain < 0:
        raise UserError(f"--ntrain must be >= 0, got {ntrain}")
    t0 = time.perf_counter()
    loaded = data if isinstance(data, dict) else load_mmlu(data, subjects)
    candidate_ids = answer_token_ids(tokenizer)
    correct: dict[str, list[bool]] = {}
    pred_rows: list[dict] = []
    k_used: dict[str, list[int]] = {}
    shared_tokens = 0
    for subject in tqdm(
        list(loaded), desc="MMLU subjects", disable=not progress, leave=False, dynamic_ncols=True
    ):
        dev = loaded[subject]["dev"][:ntrain]
        test = select_instances(loaded[subject]["test"], n_instances)
        built = [build_prompt(tokenizer, dev, q, ntrain, max_prompt_tokens) for q in test]
        if prefix_cache:
            preds, probs = [0] * len(built), [[]] * len(built)
            for k in sorted({k for _, k in built}, reverse=True):
                idx = [i for i, (_, kk) in enumerate(built) if kk == k]
                pr, pb, shared = predict_with_prefix(
                    model,
                    tokenizer,
                    gen_prompt(dev, subject, k),
                    [built[i][0] for i in idx],
                    batch_size,
                    candidate_ids,
                )
                shared_tokens += shared * len(idx)
                for j, i in enumerate(idx):
                    preds[i], probs[i] = pr[j], pb[j]
        else:
            preds, probs = predict(model, tokenizer, [p for p, _ in built], batch_size, candidate_ids)
        correct[subject] = [CHOICES[p] == q.answer for p, q in zip(preds, test)]
        k_used[subject] = [k for _, k in built]
        for i, (q, (_, k), p, pr) in enumerate(zip(test, built, preds, probs)):
            pred_rows.append(
                {
                    "subject": subject,
                    "index": i,
                    "question": q.question,
                    "answer": q.answer,
                    "prediction": CHOICES[p],
                    "correct": CHOICES[p] == q.answer,
                    "k_shots": k,
                    "probs": dict(zip(CHOICES, pr)),
                }
            )
    metrics = compute_metrics(correct)
    metrics["subjects"] = {
        s: {
            "acc": metrics["subject_acc"][s],
            "n": len(correct[s]),
            "k_shots_min": min(k_used[s]),
            "k_shots_max": max(k_used[s]),
        }
        for s in correct
        if correct[s]
    }
    unknown = [s for s in correct if s not in SUBJECT_SUBCATEGORIES]
    if unknown:
        log.warning("subjects outside the standard 57 count only in average_acc and subject_acc: %s", unknown)
    if lm_eval_tasks:
        metrics["lm_eval"] = run_lm_eval(model, tokenizer, lm_eval_tasks, batch_size=batch_size)
    elapsed = time.perf_counter() - t0
    metrics["config"] = {
        "ntrain": ntrain,
        "n_instances": n_instances,
        "batch_size": batch_size,
        "max_prompt_tokens": max_prompt_tokens,
        "answer_token_ids": candidate_ids,
        "prefix_cache": prefix_cache,
        "mean_shared_prefix_tokens": round(shared_tokens / metrics["n_questions"], 1),
        "seconds": round(elapsed, 3),
        "questions_per_s": round(metrics["n_questions"] / elapsed, 3) if elapsed > 0 else None,
    }
    if output_dir is not None:
        out = Path(output_dir)
        atomic_write_jsonl(out / "predictions.jsonl", pred_rows)
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


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


def run_lm_eval(
    model, tokenizer, tasks: Sequence[str], batch_size: int = 8, limit: int | None = None
) -> dict:
    """Run lm-evaluation-harness ``tasks`` on the in-memory model; returns its per-task results."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError(
            "--lm-eval-tasks needs lm-evaluation-harness, which is not installed: pip install llm-unlearn[lm-eval]"
        ) from None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit)
    return json.loads(json.dumps((out or {}).get("results", {}), default=str))
