"""Reference computations the tests compare the production code with (not on any production path).

``target_log_probs`` is the textbook full-logits form: ``[B, T, V]`` logits, shifted labels, a
masked log-softmax. The trainer never builds it (its answer-only head projects only answer
positions), which is why it lives here, as the independent computation the trainer is checked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.losses._common import _compute_dtype


def shift_for_causal_lm(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` -> ``(logits[:, :-1] [B, T-1, V], labels[:, 1:] [B, T-1])``.
    After the shift, ``logits[:, t]`` scores ``labels[:, t]``.
    """
    return logits[:, :-1], labels[:, 1:]


def target_log_probs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log-probability of the label token, after the causal shift.

    ``logp[b, t] = log softmax(logits[b, t])[labels[b, t + 1]]`` where ``labels[b, t + 1] != ignore_index``,
    and ``0`` elsewhere.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` (int) -> ``(logp [B, T-1], mask [B, T-1] bool)``.
    ``logp`` is ``float32`` (``float64`` for ``float64`` logits). Labels equal to ``ignore_index`` are
    never used as an index, so ``-100`` is safe; other labels must lie in ``[0, V)``.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    logits, labels = shift_for_causal_lm(logits, labels)
    mask = labels != ignore_index
    dtype = _compute_dtype(logits)
    # cross_entropy with ignore_index gives 0 at ignored positions and never indexes with them.
    nll = F.cross_entropy(
        logits.to(dtype).reshape(-1, logits.shape[-1]),  # one copy: upcast of the (non-contiguous) slice
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(labels.shape)
    logp = (-nll).masked_fill(~mask, 0.0)
    return logp, mask
