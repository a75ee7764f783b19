"""What the TOFU and MUSE benchmarks share: the QA prompt options' declarations, the retain-reference
check, the run's config entries and the printed headline. (A leading underscore: the registry's
discovery skips this module, it registers no benchmark.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_unlearn.errors import UserError

__all__ = [
    "PROMPT_FORMATS",
    "PROMPT_FORMAT_HELP",
    "SYSTEM_PROMPT_HELP",
    "check_retain_reference",
    "model_config",
    "headline_text",
]

PROMPT_FORMATS = ("auto", "chat", "qa", "raw")
PROMPT_FORMAT_HELP = (
    "TOFU/MUSE QA prompts: auto = the chat template when the tokenizer has one, else qa "
    "('Question: {q}\\nAnswer: {a}'); raw = question + ' ' + answer"
)
SYSTEM_PROMPT_HELP = (
    "system message with --prompt-format chat (default 'You are a helpful assistant.'; '' for none)"
)


def check_retain_reference(path: str | None) -> None:
    if path and not Path(path).is_file():
        raise UserError(f"--retain-reference file not found: {path}")


def model_config(source, opts) -> dict[str, Any]:
    """The run's ``config`` entries of a TOFU / MUSE summary."""
    return {
        "model": getattr(source, "model", None),
        "adapter": getattr(source, "adapter", None),
        "tokenizer": getattr(source, "tokenizer", None),
        "data": opts.data,
        "limit": opts.limit,
    }


def headline_text(summary: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    return "\n".join(f"{k:>22}: {f(v)}" for k, v in summary["headline"].items())
