"""Token log-probabilities, their per-row reductions, the likelihood loss and the finiteness guard.

The trainer works on the flat answer tokens of a batch: ``logp [N]`` (one entry per answer token) and
``rows [N]`` (the batch row each token belongs to). The per-row reductions below turn those into one
value per sequence, as the sequence-level objectives (sequence NPO, SUGD, the calibration caps) need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_unlearn.errors import NonFiniteLossError
from llm_unlearn.losses._common import _compute_dtype, _masked_mean


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits[n])[targets[n]]`` per row of ``logits [N, V]`` -> ``[N]``.

    Computed in float32 at least (float64 for float64 logits). ``N == 0`` gives an empty tensor.
    """
    dtype = _compute_dtype(logits)
    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=dtype)
    return -F.cross_entropy(logits.to(dtype), targets, reduction="none")


def row_sums(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``out[b] = sum_{n: rows[n] == b} values[n]`` -> ``[n_rows]``; a row without tokens gives 0.

    Shapes: ``values [N]``, ``rows [N]`` int in ``[0, n_rows)``. Differentiable w.r.t. ``values``.
    """
    out = torch.zeros(n_rows, device=values.device, dtype=values.dtype)
    return out.index_add(0, rows, values)


def row_counts(rows: torch.Tensor, n_rows: int, dtype=torch.float32) -> torch.Tensor:
    """Number of tokens of each row: ``[n_rows]`` in ``dtype``."""
    ones = torch.ones(rows.shape[0], device=rows.device, dtype=dtype)
    return torch.zeros(n_rows, device=rows.device, dtype=dtype).index_add(0, rows, ones)


def row_mean_nll(logp: torch.Tensor, rows: torch.Tensor, n_rows: int, empty: float = 0.0) -> torch.Tensor:
    """Mean negative log-likelihood of each row: ``out[b] = -sum_{rows[n]=b} logp[n] / |{n: rows[n]=b}|``.

    Shapes: ``logp [N]``, ``rows [N]`` -> ``[n_rows]``. A row without tokens gives ``empty`` (0 for a
    loss; ``inf`` where the value is compared with a cap that an empty row must never reach).
    """
    sums = row_sums(-logp, rows, n_rows)
    counts = row_counts(rows, n_rows, logp.dtype)
    fill = torch.full_like(sums, float(empty))
    return torch.where(counts > 0, sums / counts.clamp_min(1), fill)


def nll_loss(logp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood: ``-sum(mask * logp) / sum(mask)``.

    Shapes: ``logp`` any shape, ``mask`` same shape bool or None (all elements) -> scalar. No valid
    element -> exactly 0.
    """
    logp = logp.to(_compute_dtype(logp))
    return _masked_mean(-logp, mask)


def check_finite(name: str, value: torch.Tensor | float) -> torch.Tensor | float:
    """Raise :class:`~llm_unlearn.errors.NonFiniteLossError` naming ``name`` if ``value`` holds NaN or inf.

    ``value``: a scalar tensor (any tensor works: every element is checked) or a Python number.
    Returns ``value`` unchanged, so it can wrap an expression. Forces a device sync for GPU tensors.
    """
    if isinstance(value, torch.Tensor):
        finite = bool(torch.isfinite(value.detach()).all())
        shown = value.detach().item() if value.numel() == 1 else f"tensor of shape {tuple(value.shape)}"
    else:
        finite = math.isfinite(float(value))
        shown = value
    if not finite:
        raise NonFiniteLossError(f"loss term '{name}' is not finite: {shown}")
    return value
