"""Flags and helpers shared by the evaluation subcommands (``evaluate``, ``mmlu``, ``sample``): the model
flags (:class:`~llm_unlearn.evaluation.run.ModelSource`) and the output flags, all generated from
declarations (:mod:`llm_unlearn.config.declare`). The output policy and the lock are the runner's
(:mod:`llm_unlearn.evaluation.run`), not the command line's.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llm_unlearn.config.declare import add_flags, read_flags
from llm_unlearn.config.options import opt
from llm_unlearn.evaluation.run import ModelSource

__all__ = ["OutputFlags", "add_model_flags", "read_model", "add_output_flags", "read_output"]

OVERWRITE_HELP = "write into an output path holding other files (they are kept; ours are replaced)"


@dataclass
class OutputFlags:
    output_dir: str | None = opt(None, "the output directory", flag="--output-dir", path=True)
    overwrite: bool = opt(False, OVERWRITE_HELP, switch=("--overwrite", True))
    progress: bool = opt(True, "no progress bars", switch=("--no-progress", False))


def add_model_flags(p: argparse.ArgumentParser, adapter_help: str | None = None) -> None:
    """The ``model`` argument group (``--model`` required) and ``--no-progress``."""
    g = p.add_argument_group("model")
    add_flags(g, ModelSource, required=("model",), helps={"adapter": adapter_help} if adapter_help else None)
    add_flags(p, OutputFlags, only=("progress",))


def read_model(args) -> ModelSource:
    return read_flags(args, ModelSource)


def add_output_flags(group) -> None:
    """``--output-dir`` (required) and ``--overwrite``."""
    add_flags(group, OutputFlags, required=("output_dir",), only=("output_dir", "overwrite"))


def read_output(args) -> OutputFlags:
    return read_flags(args, OutputFlags)


class RepeatableLists:
    """A parser wrapper for generated flags: a list flag (``nargs="+"``) both takes several values and
    repeats (``--x A --x B`` and ``--x A B`` give both)."""

    def __init__(self, parser) -> None:
        self._parser = parser

    def add_argument(self, *names, **kw):
        if kw.get("nargs") == "+":
            kw["action"] = "extend"
        return self._parser.add_argument(*names, **kw)
