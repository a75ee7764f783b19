"""The evaluation subcommands ``evaluate``, ``mmlu`` and ``sample``, added to ``llm-unlearn`` by ``cli.py``.

Each subcommand lives in its own module (:mod:`.evaluate_command`, :mod:`.mmlu_command`,
:mod:`.sample_command`); their shared flags and helpers are in :mod:`.cli_common`.
"""

from __future__ import annotations

from llm_unlearn.evaluation.evaluate_command import add_evaluate_parser, cmd_evaluate
from llm_unlearn.evaluation.mmlu_command import add_mmlu_parser, cmd_mmlu
from llm_unlearn.evaluation.sample_command import add_sample_parser, cmd_sample

__all__ = ["add_subcommands", "cmd_evaluate", "cmd_mmlu", "cmd_sample"]


def add_subcommands(subparsers) -> None:
    """Add ``evaluate``, ``mmlu`` and ``sample`` to an argparse subparsers object."""
    add_evaluate_parser(subparsers)
    add_mmlu_parser(subparsers)
    add_sample_parser(subparsers)
