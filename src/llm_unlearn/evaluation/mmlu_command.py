"""The ``mmlu`` subcommand: Open-Instruct-compatible MMLU accuracy (and optional lm-eval tasks)."""

from __future__ import annotations

from pathlib import Path

from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.cli_common import (
    add_model_flags,
    add_overwrite_flag,
    load_model,
    locked_output_dir,
    non_negative_int,
    positive_int,
)

__all__ = ["MMLU_OWN_NAMES", "add_mmlu_parser", "cmd_mmlu"]

MMLU_OWN_NAMES = ("metrics.json", "predictions.jsonl")


def add_mmlu_parser(sub) -> None:
    p = sub.add_parser(
        "mmlu",
        help="MMLU accuracy, Open-Instruct-compatible (offline)",
        description="k-shot MMLU as Open-Instruct's evaluation computes it; writes metrics.json "
        "(average_acc, subcat_acc, cat_acc, subject_acc) and predictions.jsonl to --output-dir.",
    )
    add_model_flags(p)
    p.add_argument(
        "--data",
        default=None,
        help="MMLU directory: dev/ + test/ CSVs (Hendrycks) or cais/mmlu parquet/jsonl; a hub id only online",
    )
    p.add_argument("--output-dir", required=True)
    add_overwrite_flag(p)
    p.add_argument(
        "--ntrain", type=non_negative_int, default=5, help="dev examples in the prompt (default 5)"
    )
    p.add_argument("--subjects", nargs="+", default=None, help="only these subjects")
    p.add_argument(
        "--n-instances", type=positive_int, default=None, help="at most N test questions per subject"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size (default 8)")
    p.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        help="score every prompt whole (the previous path) instead of running each subject's shared "
        "few-shot prefix once and scoring the questions from its key/value cache",
    )
    p.add_argument(
        "--lm-eval-tasks",
        nargs="+",
        default=None,
        help="also run these lm-evaluation-harness tasks (needs pip install llm-unlearn[lm-eval])",
    )
    p.set_defaults(func=cmd_mmlu)


def cmd_mmlu(args) -> int:
    from llm_unlearn.evaluation.mmlu import load_mmlu

    if not args.data and not args.lm_eval_tasks:
        raise UserError("no MMLU data given (use --data DIR)")
    if args.lm_eval_tasks:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise UserError(
                "--lm-eval-tasks needs lm-evaluation-harness, which is not installed: pip install llm-unlearn[lm-eval]"
            ) from None
    loaded = load_mmlu(args.data, args.subjects) if args.data else None
    with locked_output_dir(args, "mmlu", MMLU_OWN_NAMES):
        return _mmlu(args, loaded)


def _mmlu(args, loaded) -> int:
    from llm_unlearn.evaluation.mmlu import evaluate_mmlu, run_lm_eval

    model, tokenizer = load_model(args, adapter=args.adapter)
    out = Path(args.output_dir)
    if loaded is None:
        from llm_unlearn.io_utils import atomic_write_json

        metrics = {"lm_eval": run_lm_eval(model, tokenizer, args.lm_eval_tasks, batch_size=args.batch_size)}
        atomic_write_json(out / "metrics.json", metrics)
        print(f"lm-eval results in {out / 'metrics.json'}")
        return 0
    metrics = evaluate_mmlu(
        model,
        tokenizer,
        loaded,
        ntrain=args.ntrain,
        n_instances=args.n_instances,
        batch_size=args.batch_size,
        output_dir=out,
        progress=not args.no_progress,
        lm_eval_tasks=args.lm_eval_tasks,
        prefix_cache=args.prefix_cache,
    )
    for cat, acc in metrics["cat_acc"].items():
        print(f"{acc:.4f}  {cat}")
    print(
        f"MMLU average accuracy: {metrics['average_acc']:.4f} over {metrics['n_questions']} questions "
        f"({len(metrics['subject_acc'])} subjects) -> {out / 'metrics.json'}"
    )
    return 0
