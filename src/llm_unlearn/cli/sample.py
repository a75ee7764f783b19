"""``llm-unlearn sample``: flags, output-path checks and model loading around
:mod:`llm_unlearn.evaluation.sample` (it writes one file and its .jsonl, not a directory: the file
checks of :func:`llm_unlearn.outputs.check_output_file`, no runner)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from llm_unlearn.cli.common import OVERWRITE_HELP, add_model_flags, read_model
from llm_unlearn.config.declare import add_flags, read_flags
from llm_unlearn.config.options import opt

__all__ = ["SampleOptions", "add_parser", "cmd_sample"]

_POS = (1, None, False, False)


@dataclass
class SampleOptions:
    base_model: str | None = opt(
        None,
        "base model to show side by side (the same path as --model with --adapter: adapter disabled)",
        flag="--base-model",
        path=True,
    )
    data: str | None = opt(None, "forget/retain data (same layouts as train)", flag="--data", path=True)
    split: str | None = opt(None, "sub-directory / parquet split of --data, e.g. train", flag="--split")
    n: int = opt(1, "items per split and task", flag="--n", range=_POS)
    seed: int = opt(0, "random seed of the item choice", flag="--seed")
    max_new_tokens: int = opt(512, "generation length", flag="--max-new-tokens", range=_POS)
    batch_size: int = opt(8, "batch size", flag="--batch-size", range=_POS)
    output: str | None = opt(
        None, "Markdown file to write (OUT.jsonl is written beside it)", flag="--output", path=True
    )
    overwrite: bool = opt(False, OVERWRITE_HELP, switch=("--overwrite", True))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="qualitative check: a few greedy generations, unlearned beside base model",
        description="For every split and task, N seeded random items; writes OUT.md and OUT.jsonl and prints a table.",
    )
    add_model_flags(p, adapter_help="adapter of the unlearned model (attached to --model)")
    add_flags(p, SampleOptions, required=("data", "output"))
    p.set_defaults(func=cmd_sample)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:  # pragma: no cover
        return a == b


def cmd_sample(args) -> int:
    from llm_unlearn.cli.common import read_output
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.evaluation.sample import MARKDOWN_HEADER, jsonl_path_for, render_text_table, run_sample
    from llm_unlearn.outputs import check_output_file

    source = read_model(args)
    opts = read_flags(args, SampleOptions)
    progress = read_output(args).progress
    inputs = [*source.inputs(), opts.base_model, opts.data]
    # never over an input, nor over a user's file: OUT.md is ours when it starts with our header
    # (MARKDOWN_HEADER, what sample.render_markdown writes first), and
    # OUT.jsonl is replaced only beside an OUT.md of ours
    check_output_file(opts.output, inputs, overwrite=opts.overwrite, signature=MARKDOWN_HEADER)
    ours = Path(opts.output).is_file()
    check_output_file(jsonl_path_for(opts.output), inputs, overwrite=opts.overwrite or ours)
    bundle = load_unlearning_data(opts.data, split=opts.split)
    model, tokenizer = source.load()
    base_model = base_tokenizer = None
    if opts.base_model:
        if source.adapter and _same_path(opts.base_model, source.model):
            base_model, base_tokenizer = model, tokenizer  # the adapter is disabled for the base outputs
        else:
            base_model, base_tokenizer = dataclasses.replace(
                source, model=opts.base_model, adapter=None
            ).load()
    rows = run_sample(
        model,
        tokenizer,
        bundle,
        base_model=base_model,
        base_tokenizer=base_tokenizer,
        n=opts.n,
        seed=opts.seed,
        max_new_tokens=opts.max_new_tokens,
        batch_size=opts.batch_size,
        output=opts.output,
        progress=progress,
    )
    print(render_text_table(rows))
    print(f"written: {opts.output}, {jsonl_path_for(opts.output)}")
    return 0
