"""``llm-unlearn sample``: a placeholder that registers today's parser (replaced when the evaluation
library lands)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from llm_unlearn.evaluation.sample_command import add_sample_parser

    add_sample_parser(sub)
