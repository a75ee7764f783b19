"""Token-reweighted gradient ascent: WGA (Wang et al., ICLR 2025) and SatImp (Yang et al., ICML 2025).

Both minimize ``mean_t w_t * log p(y_t)`` over the forget answer tokens with a detached per-token
weight ``w_t`` computed from ``p_t = p(y_t)``: plain gradient ascent has ``w_t = 1``. The weight is a
constant for autograd, so the gradient is ``w_t * d log p(y_t)``: descending the loss lowers every
forget-token log-prob, faster where ``w_t`` is larger.
"""

from __future__ import annotations

import math

import torch

from llm_unlearn.losses._common import _compute_dtype, _masked_mean


def _check_exponent(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def wga_loss(forget_logp: torch.Tensor, beta: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted gradient ascent (WGA): ``L = mean_t sg[p_t ** beta] * log p_t``, ``p_t = exp(log p(y_t))``.

    Source: Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
    Beyond" (arXiv:2502.19301); open-unlearning ``compute_wga_loss`` (``src/trainer/utils.py``),
    ``configs/trainer/WGA.yaml``. ``sg`` = stop-gradient: the weight is computed from the detached
    log-probs. Tokens the model already finds unlikely get small weight, so the ascent slows down
    on them instead of diverging. ``beta = 0`` is plain gradient ascent.

    Shapes: ``forget_logp`` any shape (usually ``[N]``), ``mask`` same shape bool or None -> scalar;
    no valid element -> exactly 0. Defaults (WGA.yaml): ``beta = 1.0`` (``gamma = alpha = 1`` forget /
    retain-NLL weights, lr 1e-5, 5 epochs, applied by the caller).
    """
    beta = _check_exponent("beta", beta)
    logp = forget_logp.to(_compute_dtype(forget_logp))
    weight = torch.exp(beta * logp.detach())
    return _masked_mean(weight * logp, mask)


def satimp_loss(
    forget_logp: torch.Tensor, beta1: float = 5.0, beta2: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SatImp: ``L = mean_t sg[p_t ** beta1 * (1 - p_t) ** beta2] * log p_t``.

    Source: Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning"
    (arXiv:2505.11953); open-unlearning ``compute_satimp_loss`` (``src/trainer/utils.py``),
    ``configs/trainer/SatImp.yaml``. ``p ** beta1`` is the saturation weight (as WGA), ``(1-p) ** beta2``
    the importance weight; both detached. ``1 - p`` is computed as ``-expm1(log p)`` (no cancellation
    for small ``p``).

    Shapes: as :func:`wga_loss`. Defaults: ``beta1 = 5.0``, ``beta2 = 1.0`` (SatImp.yaml and the
    class; the authors' README recommends ``beta2 = 0.1``). Forget / retain weights (applied by the
    caller): the authors' code (tmlr-group/SatImp, ``satimp_gd``: ``forget_loss + coeff * retain_loss``,
    ``coeff = 0.1``) and open-unlearning's class defaults and README use ``gamma = 1.0``,
    ``alpha = 0.1`` (forget:retain 10:1); open-unlearning's SatImp.yaml has the inverse,
    ``gamma = 0.1``, ``alpha = 1.0`` (forget:retain 1:10), so the two do not give the same ratio.
    lr 1e-5, 5 epochs.
    """
    beta1 = _check_exponent("beta1", beta1)
    beta2 = _check_exponent("beta2", beta2)
    logp = forget_logp.to(_compute_dtype(forget_logp))
    lp = logp.detach()
    one_minus_p = -torch.expm1(lp)
    weight = torch.exp(beta1 * lp) * one_minus_p.pow(beta2)
    return _masked_mean(weight * logp, mask)
