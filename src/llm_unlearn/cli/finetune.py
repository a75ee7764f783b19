"""``llm-unlearn finetune``: a placeholder that registers today's parser (replaced when finetune's
flags come from declarations)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from llm_unlearn.finetune.command import add_finetune_parser

    add_finetune_parser(sub)
