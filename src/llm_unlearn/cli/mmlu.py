"""``llm-unlearn mmlu``: a placeholder that registers today's parser (replaced when the evaluation
library lands)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from llm_unlearn.evaluation.mmlu_command import add_mmlu_parser

    add_mmlu_parser(sub)
