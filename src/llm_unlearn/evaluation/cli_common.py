"""Flags and helpers shared by the ``evaluate``, ``mmlu`` and ``sample`` subcommands (model loading, output paths)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

__all__ = [
    "positive_int",
    "non_negative_int",
    "add_model_flags",
    "load_model",
    "command_inputs",
    "locked_output_dir",
    "add_overwrite_flag",
    "fmt_value",
]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_model_flags(
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


def load_model(args, name: str | None = None, adapter: str | None = None):
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


def command_inputs(args) -> list:
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
def locked_output_dir(args, kind: str, own_names):
    """The output-directory policy (io_utils.prepare_output_dir) and its lock, for evaluate / mmlu;
    temporary files of killed writes are removed once the lock is held."""
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    prepare_output_dir(
        args.output_dir, kind, command_inputs(args), overwrite=args.overwrite, own_names=own_names
    )
    with DirectoryLock(args.output_dir):
        remove_stale_tmp(args.output_dir)
        yield Path(args.output_dir)


def add_overwrite_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output path holding other files (they are kept; ours are replaced)",
    )


def fmt_value(value: Any) -> str:
    return "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
