"""MMLU accuracy as Open-Instruct's MMLU evaluation computes it (the number SemEval-2025 Task 4 uses).

This module runs the evaluation (:func:`evaluate_mmlu`, optional lm-evaluation-harness tasks) and is the
public API of the MMLU parts: prompts in :mod:`.prompts`, data in :mod:`.data`, scoring (and the
shared-prefix key/value cache) in :mod:`.prefix_scoring`, categories in :mod:`.categories`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.benchmarks.mmlu.categories import SUBJECT_SUBCATEGORIES
from llm_unlearn.evaluation.benchmarks.mmlu.data import load_mmlu, read_mmlu_metrics, select_instances
from llm_unlearn.evaluation.benchmarks.mmlu.prefix_scoring import (
    compute_metrics,
    predict,
    predict_with_prefix,
    shared_prefix_length,
)
from llm_unlearn.evaluation.benchmarks.mmlu.prompts import (
    CHOICES,
    MAX_PROMPT_TOKENS,
    MMLUQuestion,
    answer_token_ids,
    build_prompt,
    format_example,
    format_subject,
    gen_prompt,
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


def _predict_subject(
    model,
    tokenizer,
    dev: Sequence[MMLUQuestion],
    subject: str,
    built: Sequence[tuple[str, int]],
    batch_size: int,
    candidate_ids: Sequence[int],
    prefix_cache: bool,
) -> tuple[list[int], list[list[float]], int]:
    """``(predictions, probabilities, shared prefix tokens summed over the questions)`` for the built
    ``(prompt, k)`` of one subject: from each k's shared prefix, or every prompt whole."""
    if not prefix_cache:
        preds, probs = predict(model, tokenizer, [p for p, _ in built], batch_size, candidate_ids)
        return preds, probs, 0
    preds, probs = [0] * len(built), [[]] * len(built)
    shared_tokens = 0
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
    return preds, probs, shared_tokens


def _prediction_rows(
    subject: str,
    test: Sequence[MMLUQuestion],
    built: Sequence[tuple[str, int]],
    preds: Sequence[int],
    probs: Sequence[Sequence[float]],
) -> list[dict]:
    """The ``predictions.jsonl`` rows of one subject."""
    return [
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
        for i, (q, (_, k), p, pr) in enumerate(zip(test, built, preds, probs))
    ]


def _subject_summaries(metrics: dict, correct: dict[str, list[bool]], k_used: dict[str, list[int]]) -> dict:
    """``metrics["subjects"]``: accuracy, question count and the range of shots per scored subject."""
    return {
        s: {
            "acc": metrics["subject_acc"][s],
            "n": len(correct[s]),
            "k_shots_min": min(k_used[s]),
            "k_shots_max": max(k_used[s]),
        }
        for s in correct
        if correct[s]
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
        preds, probs, shared = _predict_subject(
            model, tokenizer, dev, subject, built, batch_size, candidate_ids, prefix_cache
        )
        shared_tokens += shared
        correct[subject] = [CHOICES[p] == q.answer for p, q in zip(preds, test)]
        k_used[subject] = [k for _, k in built]
        pred_rows += _prediction_rows(subject, test, built, preds, probs)
    metrics = compute_metrics(correct)
    metrics["subjects"] = _subject_summaries(metrics, correct, k_used)
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
