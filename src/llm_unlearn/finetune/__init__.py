"""`llm-unlearn finetune`: build a target model that has memorized the data (see ``core`` for the data flow)."""

from llm_unlearn.finetune.command import add_finetune_parser, cmd_finetune
from llm_unlearn.finetune.core import SUMMARY_FILE, finetune
from llm_unlearn.finetune.data import read_documents
from llm_unlearn.finetune.memorization import memorization_scores

__all__ = [
    "SUMMARY_FILE",
    "add_finetune_parser",
    "cmd_finetune",
    "finetune",
    "memorization_scores",
    "read_documents",
]
