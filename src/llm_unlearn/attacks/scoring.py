"""The one scoring pass of every attack: the evaluation's batched passes on probes.

For each probe: the greedy generation (:func:`~llm_unlearn.evaluation.passes.inference.greedy_generate`,
batched, KV cache, early stop) scored by ROUGE-L recall against the answer
(:func:`~llm_unlearn.evaluation.metrics.tofu_muse.rouge_l_recall`), and the answer's mean token NLL given
the prompt (:func:`~llm_unlearn.evaluation.passes.inference.answer_nll`, answer-only logits) with its
probability ``exp(-NLL)``. The metrics of a set are the plain means over its items:
``<set>_rouge`` and ``<set>_prob`` (higher = more of the set known).

Results are cached per (model key, prompts, answers): an attack that scores a model a second time on
the same inputs (target and unlearned are scored once for all attacks) reads the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from llm_unlearn.evaluation.metrics.tofu_muse import mean, rouge_l_recall

__all__ = ["ScoreSettings", "Scorer", "set_metrics"]


@dataclass
class ScoreSettings:
    max_new_tokens: int = 32
    batch_size: int = 16
    progress: bool = True


@dataclass
class Scorer:
    """Scores (prompt, answer) pairs of a model; ``key`` names the model in the cache."""

    settings: ScoreSettings
    cache: dict = field(default_factory=dict)
    items_scored: int = 0

    def score(self, key: str, model, tokenizer, prompts: Sequence[str], answers: Sequence[str], desc: str):
        """Per item ``{"generation", "rouge", "nll", "prob"}`` in the order given."""
        from llm_unlearn.evaluation.passes.inference import answer_nll, greedy_generate

        todo = [i for i, pa in enumerate(zip(prompts, answers)) if (key, *pa) not in self.cache]
        if todo:
            s = self.settings
            gens = greedy_generate(
                model,
                tokenizer,
                [prompts[i] for i in todo],
                max_new_tokens=s.max_new_tokens,
                batch_size=s.batch_size,
                progress=s.progress,
                desc=f"{desc}: generate",
            )
            nlls = answer_nll(
                model,
                tokenizer,
                [prompts[i] for i in todo],
                [answers[i] for i in todo],
                batch_size=s.batch_size,
                progress=s.progress,
                desc=f"{desc}: answer NLL",
            )
            for i, g, n in zip(todo, gens, nlls):
                row = {
                    "generation": g,
                    "rouge": rouge_l_recall(answers[i], g),
                    "nll": n,
                    "prob": None if n is None else math.exp(-n),
                }
                self.cache[(key, prompts[i], answers[i])] = row
            self.items_scored += len(todo)
        return [dict(self.cache[(key, p, a)]) for p, a in zip(prompts, answers)]

    def probes(self, key: str, model, tokenizer, probes, desc: str):
        return self.score(key, model, tokenizer, [p.prompt for p in probes], [p.answer for p in probes], desc)


def set_metrics(name: str, rows: Sequence[dict]) -> dict[str, float | None]:
    """``{<name>_rouge, <name>_prob}``: the means over the rows (None for no rows)."""
    return {
        f"{name}_rouge": mean([r["rouge"] for r in rows]),
        f"{name}_prob": mean([r["prob"] for r in rows]),
    }
