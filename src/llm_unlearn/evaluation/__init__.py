"""Evaluation as a library: benchmarks behind one interface, run by one runner.

- :mod:`.benchmark`: the ``Benchmark`` protocol and the registry (``register_benchmark``,
  ``get_benchmark``, ``benchmark_names``);
- :mod:`.run`: the one runner (``run_evaluation``: inputs checked, output directory prepared and
  locked, model loaded, benchmark run) and ``evaluate(...)``, its library form; ``ModelSource``;
- :mod:`.passes`: model passes with no benchmark knowledge (greedy generation, answer NLL, document
  statistics, per-answer-token statistics; batched or one at a time);
- :mod:`.metrics`: pure formulas (SemEval scores, MIA attacks, TOFU/MUSE metrics), no model;
- :mod:`.benchmarks`: ``semeval/``, ``tofu``, ``muse``, ``mmlu/``; each registers itself;
- :mod:`.report`: the one summary shape, the common report.md and plots;
- :mod:`.sample`: ``llm-unlearn sample`` (a few generations, unlearned beside base);
- :mod:`.monitor`: training-time evaluation (used by train/calibrated.py).
"""

from __future__ import annotations

from llm_unlearn.evaluation.metrics.semeval import (
    final_aggregate,
    harmonic_aggregate,
    knowledge_score,
    mia_score,
    regurgitation_score,
    score_generation_rows,
    semeval_results,
)

__all__ = [
    "evaluate",
    "run_evaluation",
    "ModelSource",
    "get_benchmark",
    "benchmark_names",
    "register_benchmark",
    "evaluate_semeval",
    "evaluate_mmlu",
    "evaluate_tofu",
    "evaluate_muse",
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
    "evaluate": "llm_unlearn.evaluation.run",
    "run_evaluation": "llm_unlearn.evaluation.run",
    "ModelSource": "llm_unlearn.evaluation.run",
    "get_benchmark": "llm_unlearn.evaluation.benchmark",
    "benchmark_names": "llm_unlearn.evaluation.benchmark",
    "register_benchmark": "llm_unlearn.evaluation.benchmark",
    "evaluate_semeval": "llm_unlearn.evaluation.benchmarks.semeval.evaluate",
    "evaluate_mmlu": "llm_unlearn.evaluation.benchmarks.mmlu.evaluate",
    "evaluate_tofu": "llm_unlearn.evaluation.benchmarks.tofu",
    "evaluate_muse": "llm_unlearn.evaluation.benchmarks.muse",
    "mia_auc": "llm_unlearn.evaluation.metrics.mia",
}


def __getattr__(name: str):  # torch-heavy parts are imported on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
