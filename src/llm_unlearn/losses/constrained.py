"""PDU, primal-dual unlearning (Entesari et al. 2025, "Constrained Entropic Unlearning: A Primal-Dual
Framework for Large Language Models", arXiv:2506.05314): minimize a logit-margin flattening loss on
the forget set subject to ``retain_loss <= eps``, with a dual variable ``lambda >= 0`` updated by
projected dual ascent.

Source: open-unlearning ``src/trainer/unlearn/pdu.py``, ``configs/trainer/PDU.yaml``,
``community/methods/PDU/run.sh``.
"""

from __future__ import annotations

import math

import torch

from llm_unlearn.losses._common import _compute_dtype, _select_rows


def pdu_forget_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logit-margin flattening: ``L_f = mean_n (max_v z_n(v) - (1/V) sum_v z_n(v))^2``.

    Zero exactly when every logit of the row is equal (the uniform distribution), so descending it
    drives the forget positions towards uniform output. No labels, no reference model. Note the
    quadratic scale: with logits of magnitude ~10-30 the value is ~100s, which is why the PDU authors
    start the retain multiplier at 50-100 (README).

    Shapes: ``logits [N, V]`` (forget answer positions) or any ``[..., V]`` with ``mask`` of shape
    ``[...]`` bool (None: every position) -> scalar; no valid position -> exactly 0. open-unlearning
    applies its mask (``labels != -100``) to the unshifted logits, one position off the answer tokens;
    here the caller passes the positions (the logits that predict answer tokens).
    """
    (z,) = _select_rows(mask, logits.shape[:-1], logits)
    z = z.to(_compute_dtype(z))
    gap = z.amax(-1) - z.mean(-1)
    sq = gap.pow(2)
    return sq.sum() / max(sq.numel(), 1)


def pdu_lagrangian(
    forget_loss: torch.Tensor,
    retain_loss: torch.Tensor,
    dual: float,
    retain_eps: float,
    gamma: float = 1.0,
) -> torch.Tensor:
    """The primal objective of one step: ``L = gamma * L_f + lambda * (L_r - eps)``.

    ``forget_loss`` (e.g. :func:`pdu_forget_loss`), ``retain_loss`` (retain NLL in open-unlearning's
    default ``retain_loss_type: NLL``) scalars; ``dual = lambda >= 0`` is the current multiplier
    (a number: no gradient flows to it). The ``-lambda * eps`` shift does not change the gradient; it
    makes the value the Lagrangian. open-unlearning builds this with the multiplier value from
    before the step's dual update (:func:`pdu_dual_update`). -> scalar.
    Defaults: ``gamma = 1.0``; ``lambda_0 = alpha`` (PDU.yaml 1.0; run.sh TOFU 100);
    ``eps`` (``retain_loss_eps``) has no default (``???``): choose it somewhat above the retain loss
    of the model before unlearning (run.sh TOFU: 0.3).
    """
    dual = float(dual)
    if not (dual >= 0.0 and math.isfinite(dual)):
        raise ValueError(f"dual must be a finite number >= 0, got {dual}")
    if not math.isfinite(float(retain_eps)):
        raise ValueError(f"retain_eps must be finite, got {retain_eps}")
    dtype = _compute_dtype(forget_loss, retain_loss)
    return float(gamma) * forget_loss.to(dtype) + dual * (retain_loss.to(dtype) - float(retain_eps))


def pdu_dual_update(
    dual: float, retain_loss: torch.Tensor | float, retain_eps: float, step_size: float = 1.0
) -> float:
    """Projected dual ascent: ``lambda <- max(0, lambda + step_size * (L_r - eps))``.

    ``retain_loss``: the retain loss of this step (``dual_update_upon: step``) or its mean over an
    epoch's retain batches (``epoch``). The multiplier grows while the constraint ``L_r <= eps`` is
    violated and shrinks (never below 0) while it holds. Returns a Python float; a non-finite
    retain loss raises ValueError (it would poison every later step).
    Defaults (PDU.yaml): ``step_size (dual_step_size) = 1.0``, updates per step, only after
    ``dual_warmup_epochs = 5`` epochs (before that ``lambda`` stays at its initial value); run.sh TOFU:
    ``step_size = 5``.
    """
    value = float(retain_loss.detach()) if isinstance(retain_loss, torch.Tensor) else float(retain_loss)
    if not math.isfinite(value):
        raise ValueError(f"retain_loss must be finite for the dual update, got {value}")
    step_size = float(step_size)
    if not (step_size >= 0.0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
    return max(0.0, float(dual) + step_size * (value - float(retain_eps)))
