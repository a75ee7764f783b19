"""Distillation-style forget terms on full next-token distributions: UNDIAL (self-distillation
towards the reference with the true token's logit lowered) and CE-U (cross-entropy towards the
model's own distribution with the true token removed).

Both take logits at the forget answer positions, ``[N, V]``, and their labels ``[N]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_unlearn.losses._common import _compute_dtype


def _check_rows(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits [N, V] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def _soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``mean_n -sum_v target[n, v] * log_softmax(logits[n])[v]``; ``N == 0`` -> 0 (connected)."""
    logq = F.log_softmax(logits, dim=-1)
    # 0 * log q = 0 even where log q = -inf is impossible here (logits finite), so a plain product
    per_row = -(target_probs * logq).sum(-1)
    return per_row.sum() / max(per_row.numel(), 1)


def undial_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, strength: float = 10.0
) -> torch.Tensor:
    """UNDIAL (Dong et al., NAACL 2025, arXiv:2402.10052): self-distillation with adjusted logits.

    ``q_n = softmax(ref_logits[n] - strength * onehot(targets[n]))`` (the reference's distribution
    with the true token's logit lowered by ``strength``; detached), and
    ``L = mean_n CE(q_n, softmax(logits[n])) = -mean_n sum_v q_n(v) log p_n(v)``.
    As a function of ``logits`` this equals ``KL(q_n || p_n)`` plus the constant entropy ``H(q_n)``,
    so the gradient is the KL's: ``p_n - q_n`` per row.

    Source: open-unlearning ``compute_undial_loss`` (``src/trainer/utils.py``),
    ``configs/trainer/UNDIAL.yaml`` (there the adjustment is called ``beta``). Difference: open-unlearning
    averages over all positions of the shifted sequence (prompt and padding included); here only the
    answer positions the caller passes count. Reference = the frozen model (LoRA adapter disabled);
    its log-probabilities (e.g. from a reference cache) may be passed as ``ref_logits``: the softmax
    is invariant to a per-row shift, so the value is the same.

    Shapes: ``logits [N, V]``, ``ref_logits [N, V]``, ``targets [N]`` int -> scalar; ``N == 0`` ->
    exactly 0. Defaults (UNDIAL.yaml): ``strength (beta) = 10.0`` (README search grid 3, 10, 30),
    ``gamma = 1.0``, ``alpha = 0.0`` (no retain term, as the paper), lr 1e-4, 10 epochs.
    """
    strength = float(strength)
    if not (strength >= 0.0 and math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    _check_rows(logits, targets)
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"logits and ref_logits must have the same shape, got {tuple(logits.shape)} and {tuple(ref_logits.shape)}"
        )
    dtype = _compute_dtype(logits, ref_logits)
    logits = logits.to(dtype)
    adjusted = ref_logits.detach().to(dtype).clone()
    if adjusted.shape[0] > 0:
        idx = targets.unsqueeze(-1)
        adjusted.scatter_(-1, idx, adjusted.gather(-1, idx) - strength)
    return _soft_cross_entropy(logits, F.softmax(adjusted, dim=-1))


def ce_u_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE-U, cross-entropy unlearning (Yang 2025, arXiv:2503.01224).

    ``q_n = softmax(sg[logits[n]] with logits[n, targets[n]] = -inf)`` (the model's own current
    distribution over every token except the true one; stop-gradient), and
    ``L = -mean_n sum_v q_n(v) log p_n(v)``, ``p_n = softmax(logits[n])``. Gradient w.r.t. the logits of
    row ``n`` (of the row's term, before the mean's ``1/N``): ``p_n - q_n``, i.e. ``+p_n(y)`` on the
    true token (descending lowers it) and ``-p_n(y) * p_n(v) / (1 - p_n(y))`` on every other token
    ``v`` (since ``q_n(v) = p_n(v) / (1 - p_n(y))``): the true token's mass moves to the others in
    proportion to their own probability. No reference model.

    Source: open-unlearning ``cross_entropy_unlearning_loss`` (``src/trainer/unlearn/ceu.py``),
    ``configs/trainer/CEU.yaml``: ``ignore_first_n_answer_tokens = 1`` (the first answer token of
    each row is not trained, per the paper's footnote) -- the caller drops those positions; no retain
    term in open-unlearning's CEU trainer.

    Shapes: ``logits [N, V]`` with ``V >= 2``, ``targets [N]`` int -> scalar; ``N == 0`` -> exactly 0.
    """
    _check_rows(logits, targets)
    if logits.shape[1] < 2:
        raise ValueError(f"ce_u_loss needs a vocabulary of at least 2 tokens, got V={logits.shape[1]}")
    logits = logits.to(_compute_dtype(logits))
    masked = logits.detach().clone()
    if masked.shape[0] > 0:
        masked.scatter_(-1, targets.unsqueeze(-1), float("-inf"))
    return _soft_cross_entropy(logits, F.softmax(masked, dim=-1))
