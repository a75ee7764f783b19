"""``llm-unlearn merge``: a LoRA adapter merged into its base model, saved as one model directory. Its
flags are generated from :class:`MergeOptions` (``config/declare.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from llm_unlearn.config.options import DTYPES, opt

__all__ = ["MergeOptions", "add_parser", "cmd_merge"]


@dataclass
class MergeOptions:
    model: str | None = opt(None, "base model directory or hub id", flag="--model", path=True)
    adapter: str | None = opt(
        None, "adapter directory (DIR/adapter of a train run)", flag="--adapter", path=True
    )
    output_dir: str | None = opt(None, "directory of the merged model", flag="--output-dir", path=True)
    dtype: str = opt("auto", "weights: auto | float32 | bfloat16 | float16", flag="--dtype", choices=DTYPES)
    trust_remote_code: bool = opt(
        False, "allow the model repository's own code", switch=("--trust-remote-code", True)
    )
    allow_pickle: bool = opt(
        False, "load pickle weights (.bin) if no safetensors", switch=("--allow-pickle", True)
    )
    overwrite: bool = opt(
        False,
        "write into a directory holding other files (they are kept; only this tool's earlier outputs "
        "are replaced)",
        switch=("--overwrite", True),
    )
    force: bool = opt(
        False,
        "merge an adapter that records another base model (adapter/llm_unlearn_base.json) anyway",
        switch=("--force", True),
    )


def add_parser(sub) -> None:
    from llm_unlearn.config.declare import add_flags

    p = sub.add_parser("merge", help="merge a LoRA adapter into its base model and save it")
    add_flags(p, MergeOptions, required=("model", "adapter", "output_dir"), declared_defaults=True)
    p.set_defaults(func=cmd_merge)


def cmd_merge(args) -> int:
    from pathlib import Path

    from llm_unlearn.config.declare import read_flags
    from llm_unlearn.modeling import (
        MODEL_OUTPUT_NAMES,
        attach_adapter,
        check_tokenizer_fits,
        load_model,
        load_tokenizer,
        merge_and_save,
    )
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir

    o = read_flags(args, MergeOptions)
    out = Path(o.output_dir)
    inputs = [o.model, o.adapter]
    policy = dict(overwrite=o.overwrite, own_names=MODEL_OUTPUT_NAMES, create=False)
    prepare_output_dir(out, "merge", inputs, **policy)
    # the lock lives beside the directory: a new one is written whole beside it and renamed into place
    with DirectoryLock(out, sibling=True):
        prepare_output_dir(out, "merge", inputs, **policy)
        tok = load_tokenizer(o.model, trust_remote_code=o.trust_remote_code)
        model = load_model(
            o.model, dtype=o.dtype, trust_remote_code=o.trust_remote_code, allow_pickle=o.allow_pickle
        )
        check_tokenizer_fits(model, tok)
        merge_and_save(
            attach_adapter(model, o.adapter, allow_pickle=o.allow_pickle, force=o.force),
            tok,
            out,
            marker_kind="merge",
        )
    print(f"merged model written to {o.output_dir}")
    return 0
