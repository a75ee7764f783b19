"""Helpers shared by every model pass of the evaluation: device, eval mode, encoding, ids, batching, decoding."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from llm_unlearn.data.batching import length_batches  # noqa: F401  (re-exported)

__all__ = [
    "model_device",
    "eval_mode",
    "encode",
    "pad_token_id",
    "eos_ids",
    "forward_params",
    "accepts_position_ids",
    "position_ids",
    "progress_bar",
    "length_batches",
    "clean_up_tokenization",
    "decode_new_tokens",
]


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model):
    """``model.eval()`` for the duration (dropout off), restoring the training flag afterwards."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def encode(tokenizer, text: str) -> list[int]:
    """``tokenizer(text).input_ids`` (special tokens as the tokenizer adds them by default)."""
    return list(tokenizer(text).input_ids)


def pad_token_id(tokenizer) -> int:
    """The id that pads a batch: the tokenizer's pad token, else its EOS, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def eos_ids(model, tokenizer) -> set[int]:
    """The ids ``generate`` stops at (the generation config's EOS), falling back to the tokenizer's."""
    ids: set[int] = set()
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    return ids


def forward_params(model) -> set[str]:
    """The parameter names of the (base) model's ``forward``; empty when they cannot be read."""
    target = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        return set(inspect.signature(target.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return set()


def accepts_position_ids(model) -> bool:
    """True when the (base) model's ``forward`` takes ``position_ids``."""
    return "position_ids" in forward_params(model)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that follow the attention mask (0 at each row's first real token; 1 on padding)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` items (disabled unless ``enabled``; removed when done)."""
    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False, dynamic_ncols=True)


def clean_up_tokenization(text: str) -> str:
    """The classic ``clean_up_tokenization_spaces`` post-processing (no space before ``. ? ! ,`` and
    English contractions). The organizers decode with ``clean_up_tokenization_spaces=True`` under
    transformers 4.x, which applied it to every tokenizer; transformers 5 ignores the flag for BPE
    tokenizers, so it is applied here explicitly to give the same text on every version."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def decode_new_tokens(tokenizer, ids: Sequence[int]) -> str:
    """Decode generated token ids as the organizers do (special tokens skipped, spaces cleaned up)."""
    text = tokenizer.decode(
        [int(i) for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return clean_up_tokenization(text)
