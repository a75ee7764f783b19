"""The ``evaluate`` subcommand: SemEval-2025 Task 4 evaluation (TOFU / MUSE via :mod:`.bench_commands`)."""

from __future__ import annotations

from pathlib import Path

from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.cli_common import (
    add_model_flags,
    add_overwrite_flag,
    fmt_value,
    load_model,
    locked_output_dir,
    non_negative_int,
    positive_int,
)
from llm_unlearn.evaluation.scoring import MMLU_THRESHOLD
from llm_unlearn.io_utils import path_fingerprint

__all__ = ["EVALUATE_OWN_NAMES", "add_evaluate_parser", "cmd_evaluate", "summary_text"]

EVALUATE_OWN_NAMES = (
    "evaluation_results.json",
    "evaluation_results.jsonl",
    "generations.jsonl",
    "mia.jsonl",
    "report.md",
    "plots",
    "mmlu",
    ".stages",
)


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="SemEval-2025 Task 4 evaluation (regurgitation, knowledge, MIA, MMLU, aggregate)",
        description="Evaluate a model exactly as the SemEval-2025 Task 4 organizers score it. Writes "
        "evaluation_results.json(l), generations.jsonl, mia.jsonl, report.md and plots/ to --output-dir.",
    )
    add_model_flags(p)
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, help="forget/retain data (same layouts as train)")
    d.add_argument("--split", default=None, help="sub-directory / parquet split of --data, e.g. train")
    d.add_argument("--mia-data", default=None, help="directory with member.jsonl and nonmember.jsonl")
    m = d.add_mutually_exclusive_group()
    m.add_argument(
        "--mmlu-data", default=None, help="MMLU data to compute the MMLU average (see `llm-unlearn mmlu`)"
    )
    m.add_argument(
        "--mmlu-metrics", default=None, help="metrics.json with average_acc from an earlier MMLU run"
    )
    d.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="at most N forget and N retain records in whole units, the member documents of the taken "
        "forget units and as many non-members (see README)",
    )
    o = p.add_argument_group("evaluation")
    o.add_argument("--output-dir", required=True)
    add_overwrite_flag(o)
    o.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        help="generation length (default 256; TOFU 200, MUSE VerbMem 128)",
    )
    o.add_argument(
        "--batch-size", type=positive_int, default=16, help="batch size of the fast mode (default 16)"
    )
    o.add_argument(
        "--official-compat",
        action="store_true",
        help="one example at a time without padding, exactly like the organizers' script (slow)",
    )
    o.add_argument(
        "--mmlu-threshold",
        type=float,
        default=MMLU_THRESHOLD,
        help=f"warn when the MMLU average is below this (default {MMLU_THRESHOLD})",
    )
    o.add_argument(
        "--mmlu-ntrain", type=non_negative_int, default=5, help="MMLU shots with --mmlu-data (default 5)"
    )
    o.add_argument(
        "--mmlu-n-instances",
        type=positive_int,
        default=None,
        help="at most N MMLU test questions per subject with --mmlu-data",
    )
    o.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        help="MMLU: score every prompt whole instead of from its subject's shared few-shot prefix",
    )
    o.add_argument(
        "--min-k-percent", type=float, default=20, help="k of the Min-K%% and Min-K%%++ attacks (default 20)"
    )
    from llm_unlearn.evaluation.bench_commands import add_benchmark_flags

    add_benchmark_flags(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents
    from llm_unlearn.data.slices import slice_data
    from llm_unlearn.evaluation.mmlu import load_mmlu, read_mmlu_metrics

    if getattr(args, "benchmark", "semeval") != "semeval":  # TOFU / MUSE: evaluation/bench_commands.py
        from llm_unlearn.evaluation.bench_commands import run_benchmark

        return run_benchmark(args, lambda a: load_model(a, adapter=a.adapter))
    args.max_new_tokens = args.max_new_tokens or 256
    if not 0 < args.min_k_percent <= 100:
        raise UserError(f"--min-k-percent must be in (0, 100], got {args.min_k_percent}")
    progress = not args.no_progress
    # everything that can fail on the user's input is checked before the model is loaded
    bundle = load_unlearning_data(args.data, split=args.split)
    members, nonmembers = read_mia_documents(args.mia_data) if args.mia_data else ([], [])
    # --limit: whole SemEval units, members with their forget records (data/slices.py)
    part = slice_data(bundle.forget, bundle.retain, args.limit, members, nonmembers)
    bundle.forget, bundle.retain = part.forget, part.retain
    mia = (part.members, part.nonmembers) if args.mia_data else None
    if mia is not None:
        from llm_unlearn.evaluation.semeval_checks import check_mia_sets

        check_mia_sets(*mia)  # before the model loads
    mmlu_average = read_mmlu_metrics(args.mmlu_metrics) if args.mmlu_metrics else None
    mmlu_loaded = load_mmlu(args.mmlu_data) if args.mmlu_data else None

    with locked_output_dir(args, "evaluate", EVALUATE_OWN_NAMES):
        return _evaluate(args, bundle, mia, mmlu_average, mmlu_loaded, progress)


def _evaluate(args, bundle, mia, mmlu_average, mmlu_loaded, progress) -> int:
    from llm_unlearn.evaluation.mmlu import evaluate_mmlu
    from llm_unlearn.evaluation.semeval import evaluate_semeval

    model, tokenizer = load_model(args, adapter=args.adapter)
    out = Path(args.output_dir)
    stages = _evaluation_stages(args, bundle, out)  # finished stages are reused when nothing changed
    if mmlu_loaded is not None:
        mmlu_average = stages.cached(
            "mmlu",
            lambda: evaluate_mmlu(
                model,
                tokenizer,
                mmlu_loaded,
                ntrain=args.mmlu_ntrain,
                n_instances=args.mmlu_n_instances,
                batch_size=args.batch_size,
                output_dir=out / "mmlu",
                progress=progress,
                prefix_cache=args.prefix_cache,
            )["average_acc"],
            data=path_fingerprint(args.mmlu_data),
            ntrain=args.mmlu_ntrain,
            n_instances=args.mmlu_n_instances,
            batch_size=args.batch_size,
        )
    config = {
        "model": args.model,
        "adapter": args.adapter,
        "tokenizer": args.tokenizer,
        "data": args.data,
        "split": args.split,
        "mia_data": args.mia_data,
        "mmlu_data": args.mmlu_data,
        "mmlu_metrics": args.mmlu_metrics,
        "limit": args.limit,
    }
    results = evaluate_semeval(
        model,
        tokenizer,
        bundle,
        mia=mia,
        mmlu_average=mmlu_average,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        official_compat=args.official_compat,
        output_dir=out,
        progress=progress,
        mmlu_threshold=args.mmlu_threshold,
        min_k_percent=args.min_k_percent,
        config=config,
        stages=stages,
    )
    from llm_unlearn.evaluation.bench_report import semeval_summary, write_summary

    n_items = {"forget": len(bundle.forget), "retain": len(bundle.retain)}
    if mia is not None:
        n_items.update(member=len(mia[0]), nonmember=len(mia[1]))
    write_summary(out, semeval_summary(results, n_items))  # the summary shape shared with TOFU and MUSE
    print(summary_text(results))
    print(f"results in {out}/ (evaluation_results.json, report.md, generations.jsonl, plots/)")
    return 0


def _evaluation_stages(args, bundle, out: Path):
    """OUT/.stages: generations, answer NLLs, MIA statistics and the MMLU average, each kept once
    computed and reused by a later `evaluate` with the same model, data and options (a rerun after
    an interruption, e.g. a requeued Slurm job, only does what is missing). Delete it to recompute."""
    from llm_unlearn.io_utils import StageCache, sha256_file

    mia_files = sorted(Path(args.mia_data).glob("*member.jsonl")) if args.mia_data else []
    inputs = {
        "model": path_fingerprint(args.model),
        "adapter": path_fingerprint(args.adapter),
        "tokenizer": path_fingerprint(args.tokenizer),
        "gguf_file": args.gguf_file,
        "dtype": args.dtype,
        "data": {p.name: sha256_file(p) for p in bundle.files},
        "mia": {p.name: sha256_file(p) for p in mia_files},
    }
    return StageCache(out / ".stages", inputs)


def summary_text(results: dict) -> str:
    """A few lines with the headline numbers of an evaluation."""
    lines = []
    for split in ("forget", "retain"):
        s = results.get(f"{split}-set")
        if s:
            lines.append(
                f"{split:>6}: regurgitation (ROUGE-L recall) {fmt_value(s.get('overall-regurgitation-score'))}, "
                f"knowledge (exact match) {fmt_value(s.get('overall-knowledge-score'))}"
            )
    lines.append(f"task aggregate (harmonic mean): {fmt_value(results.get('harmonic-mean-task-aggregate'))}")
    if "mia_loss_acc" in results:
        lines.append(
            f"MIA loss AUC {fmt_value(results['mia_loss_acc'])} -> MIA score {fmt_value(results.get('mia_final_score'))}"
        )
    if "mmlu_average" in results:
        lines.append(f"MMLU average {fmt_value(results['mmlu_average'])}")
    lines.append(f"aggregate score: {fmt_value(results.get('aggregate-score'))}")
    return "\n".join(lines)
