"""The ``sample`` subcommand: flags, output-path checks and model loading around :mod:`.sample`."""

from __future__ import annotations

from pathlib import Path

from llm_unlearn.evaluation.cli_common import (
    add_model_flags,
    add_overwrite_flag,
    command_inputs,
    load_model,
    positive_int,
)

__all__ = ["add_sample_parser", "cmd_sample"]


def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="qualitative check: a few greedy generations, unlearned beside base model",
        description="For every split and task, N seeded random items; writes OUT.md and OUT.jsonl and prints a table.",
    )
    add_model_flags(p, adapter_help="adapter of the unlearned model (attached to --model)")
    p.add_argument(
        "--base-model",
        default=None,
        help="base model to show side by side (the same path as --model with --adapter: adapter disabled)",
    )
    p.add_argument("--data", required=True, help="forget/retain data (same layouts as train)")
    p.add_argument("--split", default=None, help="sub-directory / parquet split of --data, e.g. train")
    p.add_argument("--n", type=positive_int, default=1, help="items per split and task (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=positive_int, default=512)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--output", required=True, help="Markdown file to write (OUT.jsonl is written beside it)")
    add_overwrite_flag(p)
    p.set_defaults(func=cmd_sample)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:  # pragma: no cover
        return a == b


def cmd_sample(args) -> int:
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.evaluation.sample import MARKDOWN_HEADER, jsonl_path_for, render_text_table, run_sample
    from llm_unlearn.outputs import check_output_file

    # never over an input, nor over a user's file: OUT.md is ours when it starts with our header
    # (MARKDOWN_HEADER, what sample.render_markdown writes first), and
    # OUT.jsonl is replaced only beside an OUT.md of ours
    check_output_file(args.output, command_inputs(args), overwrite=args.overwrite, signature=MARKDOWN_HEADER)
    ours = Path(args.output).is_file()
    check_output_file(jsonl_path_for(args.output), command_inputs(args), overwrite=args.overwrite or ours)
    bundle = load_unlearning_data(args.data, split=args.split)
    model, tokenizer = load_model(args, adapter=args.adapter)
    base_model = base_tokenizer = None
    if args.base_model:
        if args.adapter and _same_path(args.base_model, args.model):
            base_model, base_tokenizer = model, tokenizer  # the adapter is disabled for the base outputs
        else:
            base_model, base_tokenizer = load_model(args, name=args.base_model)
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
