"""SemEval-2025 Task 4 evaluation, MMLU (Open-Instruct-compatible) and the CLI subcommands.

Modules: :mod:`.scoring` (official formulas, pure), :mod:`.mia` (membership-inference attacks, pure),
:mod:`.inference` (generation and NLL passes; :mod:`.batched` or :mod:`.official` runs them),
:mod:`.semeval` (:func:`evaluate_semeval`), :mod:`.report` (report.md, plots), :mod:`.mmlu`
(:func:`evaluate_mmlu`), :mod:`.sample` (``sample``), :mod:`.commands` (CLI subcommands).
"""

from __future__ import annotations

from llm_unlearn.evaluation.scoring import (
    final_aggregate,
    harmonic_aggregate,
    knowledge_score,
    mia_score,
    regurgitation_score,
    score_generation_rows,
    semeval_results,
)

__all__ = [
    "evaluate_semeval",
    "evaluate_mmlu",
    "mia_auc",
    "mia_score",
    "harmonic_aggregate",
    "final_aggregate",
    "knowledge_score",
    "regurgitation_score",
    "score_generation_rows",
    "semeval_results",
]

_LAZY = {
    "evaluate_semeval": "llm_unlearn.evaluation.semeval",
    "evaluate_mmlu": "llm_unlearn.evaluation.mmlu",
    "mia_auc": "llm_unlearn.evaluation.mia",
}


def __getattr__(name: str):  # torch-heavy parts are imported on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
