"""``llm-unlearn evaluate --benchmark tofu|muse``: flags and the command (SemEval: evaluate_command.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_unlearn.errors import UserError

__all__ = ["BENCHMARKS", "add_benchmark_flags", "run_benchmark", "benchmark_summary_text"]

BENCHMARKS = ("semeval", "tofu", "muse")
DEFAULT_MAX_NEW_TOKENS = {"semeval": 256, "tofu": 200, "muse": 128}


def add_benchmark_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark (TOFU / MUSE)")
    g.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        default="semeval",
        help="semeval (default); tofu: --data is a TOFU directory; muse: --data is MUSE's data/<corpus> "
        "directory (verbmem/, knowmem/, privleak/)",
    )
    g.add_argument(
        "--forget-split", default="forget10", help="TOFU: forget01 | forget05 | forget10 (default forget10)"
    )
    g.add_argument(
        "--retain-reference",
        default=None,
        help="the retain model's tofu_items.jsonl / muse_items.jsonl (forget quality; privleak's reference AUC)",
    )
    g.add_argument(
        "--prompt-format",
        choices=("auto", "chat", "qa", "raw"),
        default="auto",
        help="TOFU/MUSE QA prompts: auto = the chat template when the tokenizer has one, else qa "
        "('Question: {q}\\nAnswer: {a}'); raw = question + ' ' + answer",
    )
    g.add_argument(
        "--system-prompt",
        default=None,
        help="system message with --prompt-format chat (default 'You are a helpful assistant.'; '' for none)",
    )
    g.add_argument(
        "--reference-auc",
        type=float,
        default=None,
        help="MUSE: privleak's reference AUC without --retain-reference (default 0.5)",
    )


def _check_benchmark_args(args) -> None:
    """Refuse the SemEval-only flags and a missing ``--retain-reference`` file."""
    if args.official_compat:
        raise UserError("--official-compat is for --benchmark semeval only")
    for flag, value in (
        ("--mia-data", args.mia_data),
        ("--mmlu-data", args.mmlu_data),
        ("--mmlu-metrics", args.mmlu_metrics),
    ):
        if value:
            raise UserError(f"{flag} is for --benchmark semeval only")
    if args.retain_reference and not Path(args.retain_reference).is_file():
        raise UserError(f"--retain-reference file not found: {args.retain_reference}")


def _run_tofu(args, load, out: Path, max_new: int, config: dict) -> dict:
    """Load the TOFU data (and check the retain reference) before the model, then evaluate."""
    from llm_unlearn.data.benchmarks import load_tofu
    from llm_unlearn.evaluation.tofu import evaluate_tofu, read_retain_reference

    data = load_tofu(args.data, args.forget_split)
    if args.limit:
        for name in ("forget", "retain", "real_authors", "world_facts", "holdout"):
            setattr(data, name, getattr(data, name)[: args.limit])
    if args.retain_reference:
        read_retain_reference(args.retain_reference)  # a bad file fails before the model loads
    model, tokenizer = load(args)
    return evaluate_tofu(
        model,
        tokenizer,
        data,
        output_dir=out,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
        retain_reference=args.retain_reference,
        batch_size=args.batch_size,
        max_new_tokens=max_new,
        progress=not args.no_progress,
        config=config,
    )


def _run_muse(args, load, out: Path, max_new: int, config: dict) -> dict:
    """Load the MUSE data (and check the retain reference) before the model, then evaluate."""
    from llm_unlearn.data.benchmarks import load_muse
    from llm_unlearn.evaluation.muse import evaluate_muse, read_muse_reference

    data = load_muse(args.data)
    if args.limit:
        for name in (
            "verbmem",
            "knowmem_forget",
            "knowmem_retain",
            "privleak_forget",
            "privleak_holdout",
            "privleak_retain",
        ):
            setattr(data, name, getattr(data, name)[: args.limit])
    if args.retain_reference:
        read_muse_reference(args.retain_reference)
    model, tokenizer = load(args)
    return evaluate_muse(
        model,
        tokenizer,
        data,
        output_dir=out,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
        retain_reference=args.retain_reference,
        reference_auc=args.reference_auc,
        batch_size=args.batch_size,
        max_new_tokens=max_new,
        progress=not args.no_progress,
        config=config,
    )


def run_benchmark(args, load) -> int:
    """``evaluate`` for TOFU or MUSE. ``load(args)`` loads (model, tokenizer) as the other commands do."""
    _check_benchmark_args(args)
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[args.benchmark]
    config = {
        "model": args.model,
        "adapter": args.adapter,
        "tokenizer": args.tokenizer,
        "data": args.data,
        "limit": args.limit,
    }
    out = Path(args.output_dir)
    if args.benchmark == "tofu":
        summary = _run_tofu(args, load, out, max_new, config)
        files = "tofu_summary.json, tofu_items.jsonl"
    else:
        summary = _run_muse(args, load, out, max_new, config)
        files = "muse_summary.json, muse_items.jsonl"
    print(benchmark_summary_text(summary))
    print(f"results in {out}/ ({files}, report.md, plots/)")
    return 0


def benchmark_summary_text(summary: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    return "\n".join(f"{k:>22}: {f(v)}" for k, v in summary["headline"].items())
