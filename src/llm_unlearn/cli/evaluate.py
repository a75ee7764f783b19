"""``llm-unlearn evaluate``: a placeholder that registers today's parser (replaced when the evaluation
library lands)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from llm_unlearn.evaluation.evaluate_command import add_evaluate_parser

    add_evaluate_parser(sub)
