"""Forget terms: gradient ascent, NPO and the AILS-NTUA SUGD objective."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llm_unlearn.losses._common import _check_same_shape, _compute_dtype
from llm_unlearn.losses.token import nll_loss


def gradient_ascent_loss(forget_logp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-ascent baseline: ``-nll = mean(log p(y))`` over the forget tokens.

    Minimizing it raises the forget NLL. Shapes: ``forget_logp`` any shape (usually the 1-D tensor of
    forget answer-token log-probs), optional ``mask`` of the same shape -> scalar; empty -> 0.
    """
    return -nll_loss(forget_logp, mask)


def sugd_loss(per_sample_nll: torch.Tensor, factors: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """AILS-NTUA SUGD objective: ``(1/B) * sum_i factors[i] * per_sample_nll[i]``.

    ``per_sample_nll[i]`` is the mean cross-entropy of row ``i`` (see :func:`~llm_unlearn.losses.token.row_mean_nll`);
    ``factors[i]`` is chosen by the caller (``-1`` for forget rows, ``+0.5`` for retain rows in the
    original recipe). Shapes: ``per_sample_nll [B]``, ``factors [B]`` -> scalar; ``B == 0`` -> 0.
    """
    dtype = _compute_dtype(per_sample_nll)
    nll = per_sample_nll.to(dtype)
    factors = torch.as_tensor(factors, dtype=dtype, device=nll.device)
    _check_same_shape("per_sample_nll", nll, "factors", factors)
    if nll.dim() != 1:
        raise ValueError(f"per_sample_nll must be 1-D [B], got shape {tuple(nll.shape)}")
    return (factors * nll).sum() / max(nll.numel(), 1)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization: ``-(2/beta) * mean(log sigmoid(beta * (ref_logp - logp)))``.

    The mean runs over every element given: the caller selects them (token level: the 1-D tensor of
    forget answer-token log-probs; sequence level: the per-sequence sums of
    :func:`~llm_unlearn.losses.token.row_sums`). ``ref_logp`` comes from the frozen reference model and should carry no
    gradient (it is not detached here). At ``logp == ref_logp`` the loss is ``(2/beta) log 2``; it
    falls towards 0 as ``logp`` drops below ``ref_logp``.

    Shapes: ``logp``, ``ref_logp`` any identical shape -> scalar; empty -> 0. ``beta > 0`` or
    ValueError.
    """
    beta = float(beta)
    if not (beta > 0.0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
    _check_same_shape("logp", logp, "ref_logp", ref_logp)
    dtype = _compute_dtype(logp, ref_logp)
    log_sig = F.logsigmoid(beta * (ref_logp.to(dtype) - logp.to(dtype)))
    return -(2.0 / beta) * log_sig.sum() / max(log_sig.numel(), 1)
