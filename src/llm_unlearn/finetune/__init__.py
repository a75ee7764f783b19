"""The one memorization trainer: build a target model that has memorized the data (``finetune``: files ->
OUT/, see ``core`` for the data flow), or train a model in memory (``memorize``: the demo, the tests and
the benchmarks). Options: :class:`FinetuneOptions` (``options.py``); the subcommand: ``cli/finetune.py``.

The package itself is callable as ``finetune``: ``from llm_unlearn import finetune`` gives this package
once it is imported (Python binds a subpackage to its parent's attribute), so ``finetune(...)`` works
whichever of the two one holds.
"""

import sys
import types

from llm_unlearn.finetune.core import SUMMARY_FILE, finetune
from llm_unlearn.finetune.data import read_documents, tokenize_texts
from llm_unlearn.finetune.memorization import memorization_scores
from llm_unlearn.finetune.options import FinetuneOptions
from llm_unlearn.finetune.trainer import memorize, memorize_tiny

__all__ = [
    "SUMMARY_FILE",
    "FinetuneOptions",
    "finetune",
    "memorization_scores",
    "memorize",
    "memorize_tiny",
    "read_documents",
    "tokenize_texts",
]


class _CallablePackage(types.ModuleType):
    """``llm_unlearn.finetune(...)`` is ``llm_unlearn.finetune.finetune(...)``."""

    def __call__(self, *args, **kwargs):
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
