"""The ``evaluate``, ``mmlu`` and ``sample`` subcommands (wired into ``llm-unlearn`` by ``cli.py``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.scoring import MMLU_THRESHOLD
from llm_unlearn.io_utils import path_fingerprint

log = logging.getLogger(__name__)

__all__ = ["add_subcommands", "cmd_evaluate", "cmd_mmlu", "cmd_sample"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _model_flags(
    p: argparse.ArgumentParser, adapter_help: str = "PEFT adapter directory, attached without merging"
) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="model directory or hub id (hub ids need network)")
    g.add_argument("--adapter", default=None, help=adapter_help)
    g.add_argument("--tokenizer", default=None, help="tokenizer directory or hub id (default: the model's)")
    g.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on capable GPUs, else fp32) | float32 | bfloat16 | float16",
    )
    g.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)"
    )
    g.add_argument("--trust-remote-code", action="store_true", help="allow the model repository's own code")
    g.add_argument("--allow-pickle", action="store_true", help="load pickle weights (.bin) if no safetensors")
    g.add_argument("--gguf-file", default=None, help="GGUF file inside --model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load(args, name: str | None = None, adapter: str | None = None):
    from llm_unlearn.modeling import load_model_and_tokenizer

    return load_model_and_tokenizer(
        name or args.model,
        adapter=adapter,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=getattr(args, "allow_pickle", False),
        gguf_file=args.gguf_file,
    )


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
MMLU_OWN_NAMES = ("metrics.json", "predictions.jsonl")
SAMPLE_SIGNATURE = (
    "# Sample generations\n\nGreedy generations for randomly drawn items"  # sampling.render_markdown
)


def _inputs(args) -> list:
    return [
        getattr(args, k, None)
        for k in (
            "model",
            "adapter",
            "tokenizer",
            "base_model",
            "data",
            "mia_data",
            "mmlu_data",
            "mmlu_metrics",
        )
    ]


@contextlib.contextmanager
def _output_dir(args, kind: str, own_names):
    """The output-directory policy (io_utils.prepare_output_dir) and its lock, for evaluate / mmlu;
    temporary files of killed writes are removed once the lock is held."""
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    prepare_output_dir(args.output_dir, kind, _inputs(args), overwrite=args.overwrite, own_names=own_names)
    with DirectoryLock(args.output_dir):
        remove_stale_tmp(args.output_dir)
        yield Path(args.output_dir)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output path holding other files (they are kept; ours are replaced)",
    )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


# ------------------------------------------------------------------------------------------ evaluate
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="SemEval-2025 Task 4 evaluation (regurgitation, knowledge, MIA, MMLU, aggregate)",
        description="Evaluate a model exactly as the SemEval-2025 Task 4 organizers score it. Writes "
        "evaluation_results.json(l), generations.jsonl, mia.jsonl, report.md and plots/ to --output-dir.",
    )
    _model_flags(p)
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
        type=_positive_int,
        default=None,
        help="at most N forget and N retain records in whole units, the member documents of the taken "
        "forget units and as many non-members (see README)",
    )
    o = p.add_argument_group("evaluation")
    o.add_argument("--output-dir", required=True)
    _add_overwrite(o)
    o.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=None,
        help="generation length (default 256; TOFU 200, MUSE VerbMem 128)",
    )
    o.add_argument(
        "--batch-size", type=_positive_int, default=16, help="batch size of the fast mode (default 16)"
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
        "--mmlu-ntrain", type=_non_negative_int, default=5, help="MMLU shots with --mmlu-data (default 5)"
    )
    o.add_argument(
        "--mmlu-n-instances",
        type=_positive_int,
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

        return run_benchmark(args, lambda a: _load(a, adapter=a.adapter))
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
        from llm_unlearn.evaluation.semeval import check_mia_sets

        check_mia_sets(*mia)  # before the model loads
    mmlu_average = read_mmlu_metrics(args.mmlu_metrics) if args.mmlu_metrics else None
    mmlu_loaded = load_mmlu(args.mmlu_data) if args.mmlu_data else None

    with _output_dir(args, "evaluate", EVALUATE_OWN_NAMES):
        return _evaluate(args, bundle, mia, mmlu_average, mmlu_loaded, progress)


def _evaluate(args, bundle, mia, mmlu_average, mmlu_loaded, progress) -> int:
    from llm_unlearn.evaluation.mmlu import evaluate_mmlu
    from llm_unlearn.evaluation.semeval import evaluate_semeval

    model, tokenizer = _load(args, adapter=args.adapter)
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
                f"{split:>6}: regurgitation (ROUGE-L recall) {_fmt(s.get('overall-regurgitation-score'))}, "
                f"knowledge (exact match) {_fmt(s.get('overall-knowledge-score'))}"
            )
    lines.append(f"task aggregate (harmonic mean): {_fmt(results.get('harmonic-mean-task-aggregate'))}")
    if "mia_loss_acc" in results:
        lines.append(
            f"MIA loss AUC {_fmt(results['mia_loss_acc'])} -> MIA score {_fmt(results.get('mia_final_score'))}"
        )
    if "mmlu_average" in results:
        lines.append(f"MMLU average {_fmt(results['mmlu_average'])}")
    lines.append(f"aggregate score: {_fmt(results.get('aggregate-score'))}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ mmlu
def add_mmlu_parser(sub) -> None:
    p = sub.add_parser(
        "mmlu",
        help="MMLU accuracy, Open-Instruct-compatible (offline)",
        description="k-shot MMLU as Open-Instruct's evaluation computes it; writes metrics.json "
        "(average_acc, subcat_acc, cat_acc, subject_acc) and predictions.jsonl to --output-dir.",
    )
    _model_flags(p)
    p.add_argument(
        "--data",
        default=None,
        help="MMLU directory: dev/ + test/ CSVs (Hendrycks) or cais/mmlu parquet/jsonl; a hub id only online",
    )
    p.add_argument("--output-dir", required=True)
    _add_overwrite(p)
    p.add_argument(
        "--ntrain", type=_non_negative_int, default=5, help="dev examples in the prompt (default 5)"
    )
    p.add_argument("--subjects", nargs="+", default=None, help="only these subjects")
    p.add_argument(
        "--n-instances", type=_positive_int, default=None, help="at most N test questions per subject"
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="batch size (default 8)")
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
    with _output_dir(args, "mmlu", MMLU_OWN_NAMES):
        return _mmlu(args, loaded)


def _mmlu(args, loaded) -> int:
    from llm_unlearn.evaluation.mmlu import evaluate_mmlu, run_lm_eval

    model, tokenizer = _load(args, adapter=args.adapter)
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


# ------------------------------------------------------------------------------------------ sample
def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="qualitative check: a few greedy generations, unlearned beside base model",
        description="For every split and task, N seeded random items; writes OUT.md and OUT.jsonl and prints a table.",
    )
    _model_flags(p, adapter_help="adapter of the unlearned model (attached to --model)")
    p.add_argument(
        "--base-model",
        default=None,
        help="base model to show side by side (the same path as --model with --adapter: adapter disabled)",
    )
    p.add_argument("--data", required=True, help="forget/retain data (same layouts as train)")
    p.add_argument("--split", default=None, help="sub-directory / parquet split of --data, e.g. train")
    p.add_argument("--n", type=_positive_int, default=1, help="items per split and task (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=_positive_int, default=512)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--output", required=True, help="Markdown file to write (OUT.jsonl is written beside it)")
    _add_overwrite(p)
    p.set_defaults(func=cmd_sample)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:  # pragma: no cover
        return a == b


def cmd_sample(args) -> int:
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.outputs import check_output_file
    from llm_unlearn.sampling import jsonl_path_for, render_text_table, run_sample

    # never over an input, nor over a user's file: OUT.md is ours when it starts with our header, and
    # OUT.jsonl is replaced only beside an OUT.md of ours
    check_output_file(args.output, _inputs(args), overwrite=args.overwrite, signature=SAMPLE_SIGNATURE)
    ours = Path(args.output).is_file()
    check_output_file(jsonl_path_for(args.output), _inputs(args), overwrite=args.overwrite or ours)
    bundle = load_unlearning_data(args.data, split=args.split)
    model, tokenizer = _load(args, adapter=args.adapter)
    base_model = base_tokenizer = None
    if args.base_model:
        if args.adapter and _same_path(args.base_model, args.model):
            base_model, base_tokenizer = model, tokenizer  # the adapter is disabled for the base outputs
        else:
            base_model, base_tokenizer = _load(args, name=args.base_model)
    rows = run_sample(
        model,
        tokenizer,
        bundle,
        base_model=base_model,
        base_tokenizer=base_tokenizer,
        n=args.n,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        output=args.output,
        progress=not args.no_progress,
    )
    print(render_text_table(rows))
    print(f"written: {args.output}, {jsonl_path_for(args.output)}")
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``evaluate``, ``mmlu`` and ``sample`` to an argparse subparsers object."""
    add_evaluate_parser(subparsers)
    add_mmlu_parser(subparsers)
    add_sample_parser(subparsers)
