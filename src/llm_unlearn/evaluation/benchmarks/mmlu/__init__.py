"""MMLU (Open-Instruct-compatible), registered as the benchmark ``mmlu`` (the ``mmlu`` subcommand).

Modules: :mod:`.evaluate` (:func:`evaluate_mmlu`, lm-evaluation-harness tasks; the public MMLU API),
:mod:`.prompts` (prompt building, k-shot fallback), :mod:`.data` (readers), :mod:`.prefix_scoring`
(answer-letter logits, the shared few-shot prefix scored once from its KV cache), :mod:`.categories`.
This package's ``__init__`` holds only the declarations and the wiring (no torch import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.benchmark import register_benchmark

__all__ = ["MmluOptions", "MmluBenchmark", "OUTPUTS"]

OUTPUTS = ("metrics.json", "predictions.jsonl")


@dataclass
class MmluOptions:
    data: str | None = opt(
        None,
        "MMLU directory: dev/ + test/ CSVs (Hendrycks) or cais/mmlu parquet/jsonl; a hub id only online",
        flag="--data",
        path=True,
    )
    ntrain: int = opt(5, "dev examples in the prompt", flag="--ntrain", range=(0, None, False, False))
    subjects: list[str] | None = opt(None, "only these subjects", flag="--subjects")
    n_instances: int | None = opt(
        None, "at most N test questions per subject", flag="--n-instances", range=(1, None, False, False)
    )
    batch_size: int = opt(8, "batch size", flag="--batch-size", range=(1, None, False, False))
    prefix_cache: bool = opt(
        True,
        "score every prompt whole (the previous path) instead of running each subject's shared "
        "few-shot prefix once and scoring the questions from its key/value cache",
        switch=("--no-prefix-cache", False),
    )
    lm_eval_tasks: list[str] | None = opt(
        None,
        "also run these lm-evaluation-harness tasks (needs pip install llm-unlearn[lm-eval])",
        flag="--lm-eval-tasks",
    )


class MmluBenchmark:
    name = "mmlu"
    summary = "MMLU accuracy, Open-Instruct-compatible (offline)"
    options = MmluOptions
    required = ()
    exclusive = ()
    outputs = OUTPUTS

    def inputs(self, opts: MmluOptions) -> list[str | None]:
        return [opts.data]

    def check(self, opts: MmluOptions):
        """The MMLU questions (None with only --lm-eval-tasks); lm-eval importable when asked for."""
        from llm_unlearn.evaluation.benchmarks.mmlu.data import load_mmlu

        if not opts.data and not opts.lm_eval_tasks:
            raise UserError("no MMLU data given (use --data DIR)")
        if opts.lm_eval_tasks:
            try:
                import lm_eval  # noqa: F401
            except ImportError:
                raise UserError(
                    "--lm-eval-tasks needs lm-evaluation-harness, which is not installed: pip install llm-unlearn[lm-eval]"
                ) from None
        return load_mmlu(opts.data, opts.subjects) if opts.data else None

    def run(self, model, tokenizer, data, opts: MmluOptions, out_dir, progress, *, source=None):
        from llm_unlearn.evaluation.benchmarks.mmlu import evaluate as mmlu
        from llm_unlearn.evaluation.report import make_summary

        out = Path(out_dir)
        if data is None:
            from llm_unlearn.io_utils import atomic_write_json

            metrics = {
                "lm_eval": mmlu.run_lm_eval(model, tokenizer, opts.lm_eval_tasks, batch_size=opts.batch_size)
            }
            atomic_write_json(out / "metrics.json", metrics)
            return make_summary("mmlu", {}, metrics, {})
        metrics = mmlu.evaluate_mmlu(
            model,
            tokenizer,
            data,
            ntrain=opts.ntrain,
            n_instances=opts.n_instances,
            batch_size=opts.batch_size,
            output_dir=out,
            progress=progress,
            lm_eval_tasks=opts.lm_eval_tasks,
            prefix_cache=opts.prefix_cache,
        )
        n_items = {"questions": metrics["n_questions"], "subjects": len(metrics["subject_acc"])}
        return make_summary("mmlu", {"average_acc": metrics["average_acc"]}, metrics, n_items)

    def text(self, summary: dict, out_dir) -> str:
        metrics = summary["metrics"]
        if "average_acc" not in metrics:
            return f"lm-eval results in {Path(out_dir) / 'metrics.json'}"
        lines = [f"{acc:.4f}  {cat}" for cat, acc in metrics["cat_acc"].items()]
        lines.append(
            f"MMLU average accuracy: {metrics['average_acc']:.4f} over {metrics['n_questions']} questions "
            f"({summary['n_items']['subjects']} subjects) -> {Path(out_dir) / 'metrics.json'}"
        )
        return "\n".join(lines)


register_benchmark(MmluBenchmark())
