"""``llm-unlearn mmlu``: the runner with the MMLU benchmark (Open-Instruct-compatible accuracy, optional
lm-evaluation-harness tasks). Its output directory keeps the marker kind ``mmlu``."""

from __future__ import annotations

from pathlib import Path

from llm_unlearn.cli.common import add_model_flags, add_output_flags, read_model, read_output
from llm_unlearn.config.declare import add_flags, read_flags

__all__ = ["add_parser", "cmd_mmlu"]


def add_parser(sub) -> None:
    from llm_unlearn.evaluation.benchmarks.mmlu import MmluOptions

    p = sub.add_parser(
        "mmlu",
        help="MMLU accuracy, Open-Instruct-compatible (offline)",
        description="k-shot MMLU as Open-Instruct's evaluation computes it; writes metrics.json "
        "(average_acc, subcat_acc, cat_acc, subject_acc) and predictions.jsonl to --output-dir.",
    )
    add_model_flags(p)
    add_flags(p, MmluOptions, only=("data",))
    add_output_flags(p)
    add_flags(p, MmluOptions, exclude=("data",))
    p.set_defaults(func=cmd_mmlu)


def cmd_mmlu(args) -> int:
    from llm_unlearn.evaluation.benchmark import get_benchmark
    from llm_unlearn.evaluation.run import run_evaluation

    bench = get_benchmark("mmlu")
    out = read_output(args)
    summary = run_evaluation(
        "mmlu",
        read_model(args),
        read_flags(args, bench.options),
        out.output_dir,
        overwrite=out.overwrite,
        progress=out.progress,
        kind="mmlu",
    )
    print(bench.text(summary, Path(out.output_dir)))
    return 0
