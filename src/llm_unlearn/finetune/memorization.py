"""The memorization check of ``finetune --until-em``: greedy generations scored by EM (qa) / ROUGE-L (sc)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

__all__ = ["criterion_met", "memorization_sample", "memorization_scores"]


def memorization_sample(recs: Sequence, eval_items: int, seed: int) -> list:
    """The seeded sample of at most ``eval_items`` records that memorization is measured on."""
    rng = random.Random(seed)
    return rng.sample(recs, min(eval_items, len(recs))) if recs else []


def memorization_scores(
    model, tokenizer, records: Sequence, *, batch_size: int = 16, max_new_tokens: int | None = None
) -> dict[str, Any]:
    """Greedy generations for ``records`` and their scores: ROUGE-L recall for sc items, exact match for
    all others (qa and records without a SemEval kind). Returns ``{"em", "rougeL", "n_em", "n_rouge"}``
    (a mean is None when no item of its kind was given)."""
    from llm_unlearn.data.records import record_kind
    from llm_unlearn.evaluation.metrics.semeval import knowledge_score, regurgitation_score
    from llm_unlearn.evaluation.passes.inference import greedy_generate

    records = list(records)
    if not records:
        return {"em": None, "rougeL": None, "n_em": 0, "n_rouge": 0}
    if max_new_tokens is None:
        longest = max(len(tokenizer(r.output, add_special_tokens=False).input_ids) for r in records)
        max_new_tokens = longest + 8
    outs = greedy_generate(
        model,
        tokenizer,
        [r.input for r in records],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=False,
        expected=[r.output for r in records],  # a memorized answer: one forward, not one step a token
    )
    em, rl = [], []
    for r, o in zip(records, outs):
        if record_kind(r.id) == "sc":
            rl.append(regurgitation_score(r.output, o))
        else:
            em.append(knowledge_score(r.output, o))
    return {
        "em": sum(em) / len(em) if em else None,
        "rougeL": sum(rl) / len(rl) if rl else None,
        "n_em": len(em),
        "n_rouge": len(rl),
    }


def criterion_met(scores: dict, threshold: float) -> bool:
    """Both means that were measured (EM, ROUGE-L) reach ``threshold``."""
    vals = [v for v in (scores["em"], scores["rougeL"]) if v is not None]
    return bool(vals) and all(v >= threshold for v in vals)
