"""llm-unlearn: make a language model forget chosen data, and measure that it did.

The public API (imported on first use, so ``import llm_unlearn`` stays fast and loads no torch)::

    from llm_unlearn import unlearn, evaluate, finetune, build_config

- ``unlearn(config=None, /, **overrides)``: run an unlearning job (``llm-unlearn train``), see
  :func:`llm_unlearn.api.unlearn`;
- ``evaluate(model, *, benchmark="semeval", output_dir, ...)``: the one evaluation runner
  (``llm-unlearn evaluate``), :func:`llm_unlearn.evaluation.run.evaluate`;
- ``finetune(opts=None, /, **options)``: build a target model that has memorized data
  (``llm-unlearn finetune``), :func:`llm_unlearn.api.finetune`;
- ``build_config(yaml_path=None, overrides=None, preset=None)``: an ``UnlearnConfig``,
  :func:`llm_unlearn.api.build_config`.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"


class _DropOptionalKernelNotice(logging.Filter):
    """bitsandbytes (the ``quant`` extra) warns at import, on every run, that an optional CPU kernel for
    4-bit matrix products is missing; transformers imports it with its Trainer. Nothing here multiplies
    in 4 bits (the quantization attack quantizes and dequantizes), so that one notice is dropped; every
    other bitsandbytes message is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropOptionalKernelNotice())

# public name -> the module that defines it
_API = {
    "unlearn": "llm_unlearn.api",
    "finetune": "llm_unlearn.api",
    "build_config": "llm_unlearn.api",
    "evaluate": "llm_unlearn.evaluation.run",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # `finetune` is also a subpackage: once `llm_unlearn.finetune` is imported, Python binds the package
    # here instead, and this is not called; the package is callable with the same arguments.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'llm_unlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
