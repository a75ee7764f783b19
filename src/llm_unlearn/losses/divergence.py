"""Divergences between the model's and the reference's next-token distributions on retain tokens:
Rényi (exact, and from a top-k reference with its tail bucket), KL, and the upstream token "Rényi"."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_unlearn.losses._common import _check_alpha, _check_same_shape, _compute_dtype, _select_rows

# For |alpha - 1| below this, the Rényi divergence is also computed with the cancellation-free form
# log1p(sum_v P(v) * expm1((alpha - 1) * d(v))) (see _divergence_rows).
_NEAR_ONE = 0.1
# The cancellation-free form is used only where (alpha - 1) * d(v) <= this everywhere in the row,
# so that expm1 cannot overflow (exp(20) * V stays far below the float32 maximum).
_MAX_EXPONENT = 20.0
# ... and only where its sum S stays above this (so log1p(S) is far from log(0)).
_MIN_S = -0.5
# Default floor on the reference tail mass in renyi_divergence_topk: about the float32 resolution
# of 1 - sum(top-k probabilities), below which that tail mass is not known.
_DEFAULT_MIN_TAIL_PROB = 1e-7


# --------------------------------------------------------------------------------------------------


def _divergence_rows(logp: torch.Tensor, logq: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi divergence ``D_alpha(P || Q)`` per row from log-probabilities.

    Shapes: ``logp [M, K]``, ``logq [M, K]`` -> ``[M]``. ``logp`` must be finite; ``logq`` may hold
    ``-inf`` (a bucket of zero reference mass), which gives ``+inf`` when P has mass there and
    ``alpha >= 1``, as the definition says.

    With ``eps = alpha - 1`` and ``d = logp - logq``:
    ``D = log(sum_v P(v) exp(eps d(v)) / sum_v P(v)) / eps`` (the denominator is 1 up to round-off;
    dividing by it makes ``P == Q`` give exactly 0). Written as ``logsumexp(logp + eps d) -
    logsumexp(logp)`` it is safe for any logits but loses relative precision as ``eps -> 0``; for
    ``|eps| < _NEAR_ONE`` the rows where it is safe use ``log1p(sum P expm1(eps d) / sum P) / eps``
    instead, which keeps full precision down to ``eps -> 0`` and tends to ``KL(P || Q)``.
    ``alpha == 1`` is ``KL = sum_v P(v) d(v)``. Round-off below 0 is clamped to 0 (the exact value is
    always ``>= 0``).
    """
    if alpha == 1.0:
        p = logp.exp()
        # 0 * log(0 / q) = 0; the `where` also keeps 0 * inf (P underflowed, Q == 0) from giving NaN
        diff = torch.where(p > 0, logp - logq, torch.zeros((), dtype=logp.dtype, device=logp.device))
        return (p * diff).sum(-1).clamp_min(0.0)
    eps = alpha - 1.0
    x = eps * (logp - logq)
    k = torch.logsumexp(logp + x, dim=-1) - torch.logsumexp(logp, dim=-1)
    if abs(eps) < _NEAR_ONE:
        p = logp.exp()
        s = (p * torch.expm1(x.clamp_max(_MAX_EXPONENT))).sum(-1) / p.sum(-1)
        use_stable = (x.amax(-1) <= _MAX_EXPONENT) & (s > _MIN_S)
        # clamp: where the stable form is not used, keep its value (and its gradient) finite
        k = torch.where(use_stable, torch.log1p(s.clamp_min(_MIN_S)), k)
    return (k / eps).clamp_min(0.0)


def renyi_divergence(
    logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    """Mean over masked positions of the Rényi divergence of order ``alpha`` between next-token distributions.

    ``D_alpha(P || Q) = 1/(alpha - 1) * log sum_v P(v)^alpha Q(v)^(1 - alpha)``, with
    ``P = softmax(logits)`` (the model being trained, adapter on) and ``Q = softmax(ref_logits)`` (the
    frozen reference). Computed in log-space as
    ``logsumexp(alpha log P + (1 - alpha) log Q) / (alpha - 1)``; ``alpha == 1`` is exactly
    ``KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))``, and near ``alpha = 1`` a cancellation-free form
    keeps the value continuous (see ``_divergence_rows``). The result is ``>= 0``: negative round-off
    (only) is clamped to 0. Equal inputs give exactly 0. Safe for logits of magnitude ``1e4``.

    Shapes: ``logits [B, T, V]`` and ``ref_logits [B, T, V]``, already aligned (no causal shift is
    applied here), ``mask [B, T]`` bool; or answer-only rows ``logits [N, V]``, ``ref_logits [N, V]``,
    ``mask [N]`` (any leading shape works; ``mask`` has the shape of ``logits`` without the last dim;
    ``None`` means every position) -> scalar. No valid position -> exactly 0. Masked-out positions
    are selected away before any arithmetic, so whatever they hold (even NaN) does not matter.
    ``alpha > 0`` or ValueError. Logits must be finite at the valid positions.
    """
    alpha = _check_alpha(alpha)
    _check_same_shape("logits", logits, "ref_logits", ref_logits)
    logits, ref_logits = _select_rows(mask, logits.shape[:-1], logits, ref_logits)
    dtype = _compute_dtype(logits, ref_logits)
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    logq = torch.log_softmax(ref_logits.to(dtype), dim=-1)
    d = _divergence_rows(logp, logq, alpha)
    return d.sum() / max(d.numel(), 1)


def kl_divergence(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over masked positions of ``KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))``.

    ``P = softmax(logits)`` (model being trained), ``Q = softmax(ref_logits)`` (reference). Same
    shapes and rules as :func:`renyi_divergence` (``[B, T, V]`` with ``mask [B, T]``, or ``[N, V]``
    with ``mask [N]``; no shift) -> scalar; no valid position -> 0.
    """
    return renyi_divergence(logits, ref_logits, mask, 1.0)


def reference_topk(ref_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What to store of a reference distribution for :func:`renyi_divergence_topk`.

    ``log Q = log_softmax(ref_logits)``; returns ``(topk_logprobs, topk_indices, tail_logprob)`` with
    ``topk_logprobs, topk_indices = log Q.topk(k)`` and ``tail_logprob = logsumexp`` of ``log Q`` over
    the other ``V - k`` tokens (computed exactly in log-space, not as ``log(1 - sum top-k)``; ``-inf``
    when ``k == V``). Computed in float32 at least, without gradient.

    Shapes: ``ref_logits [..., V]`` -> ``([..., k] float, [..., k] int64, [...] float)``.
    """
    vocab = ref_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"k must be an integer in [1, V={vocab}], got {k!r}")
    with torch.no_grad():
        logq = torch.log_softmax(ref_logits.to(_compute_dtype(ref_logits)), dim=-1)
        values, indices = logq.topk(k, dim=-1)
        tail = logq.scatter(-1, indices, -math.inf).logsumexp(-1)
    return values, indices, tail


def _check_topk_args(logits, ref_topk_logprobs, ref_topk_indices, ref_tail_logprobs, min_tail_prob):
    """(leading shape, V, k) after checking the shapes of renyi_divergence_topk's arguments."""
    if not 0.0 <= min_tail_prob < 1.0:
        raise ValueError(f"min_tail_prob must be in [0, 1), got {min_tail_prob}")
    _check_same_shape("ref_topk_logprobs", ref_topk_logprobs, "ref_topk_indices", ref_topk_indices)
    lead = logits.shape[:-1]
    if ref_topk_logprobs.shape[:-1] != lead:
        raise ValueError(
            f"ref_topk_logprobs {tuple(ref_topk_logprobs.shape)} must match logits {tuple(logits.shape)} except in the last dim"
        )
    if ref_tail_logprobs is not None and ref_tail_logprobs.shape != lead:
        raise ValueError(
            f"ref_tail_logprobs must have shape {tuple(lead)}, got {tuple(ref_tail_logprobs.shape)}"
        )
    vocab, k = logits.shape[-1], ref_topk_indices.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"top-k size must be in [1, V={vocab}], got {k}")
    return lead, vocab, k


def renyi_divergence_topk(
    logits: torch.Tensor,
    ref_topk_logprobs: torch.Tensor,
    ref_topk_indices: torch.Tensor,
    mask: torch.Tensor | None,
    alpha: float,
    *,
    ref_tail_logprobs: torch.Tensor | None = None,
    min_tail_prob: float = _DEFAULT_MIN_TAIL_PROB,
) -> torch.Tensor:
    """Rényi divergence (KL at ``alpha == 1``) against a reference known only by its top-k: an APPROXIMATION.

    Both distributions are collapsed onto ``k + 1`` buckets: the ``k`` reference top-k tokens, plus
    ONE tail bucket holding all other tokens.

    * reference: ``Q_k = exp(ref_topk_logprobs)``; ``Q_tail = exp(ref_tail_logprobs)`` when given
      (see :func:`reference_topk`), else ``Q_tail = max(1 - sum Q_k, min_tail_prob)`` (computed in
      log-space as ``log(-expm1(logsumexp(ref_topk_logprobs)))``);
    * model: ``P = softmax(logits)``; ``P_k = P[ref_topk_indices]``, ``P_tail = sum`` of ``P`` over the
      other ``V - k`` tokens (an exact logsumexp over them, not ``1 - sum P_k``).

    The result is ``D_alpha`` between these two ``(k + 1)``-bucket distributions (see
    :func:`renyi_divergence` for the formula and its numerics), mean over masked positions. By the
    data-processing inequality (bucketing is one deterministic map applied to both distributions) it
    is a LOWER BOUND on the full divergence ``D_alpha(P || softmax(ref_logits))``, with equality when
    ``k == V`` (then there is no tail bucket).

    Precision of ``1 - sum Q_k``: with float32 top-k log-probs it is only known to about ``1e-7``
    absolute, so a small reference tail (say ``< 1e-5``) gets a large relative error; when the model
    keeps mass there, ``P_tail^alpha Q_tail^(1-alpha)`` dominates and the result can be off by
    percents (and exceed the full divergence). Pass the exact ``ref_tail_logprobs`` to avoid this.
    ``min_tail_prob`` (used only without ``ref_tail_logprobs``) keeps a tail that rounds to 0 (e.g. a
    top-1 log-prob stored as 0.0) from making the divergence ``+inf`` for ``alpha >= 1``; it breaks
    the lower bound only where the tail is below it. ``min_tail_prob=0.0`` gives the unfloored value.

    Shapes: ``logits [B, T, V]`` (aligned, no shift), ``ref_topk_logprobs [B, T, k]`` float,
    ``ref_topk_indices [B, T, k]`` int (distinct within a row), ``ref_tail_logprobs [B, T]`` or None,
    ``mask [B, T]`` bool; or ``[N, V]``, ``[N, k]``, ``[N, k]``, ``[N]``, ``mask [N]`` -> scalar. No
    valid position -> 0. ``alpha > 0`` or ValueError. The reference tensors should carry no gradient.
    """
    alpha = _check_alpha(alpha)
    min_tail_prob = float(min_tail_prob)
    lead, vocab, k = _check_topk_args(
        logits, ref_topk_logprobs, ref_topk_indices, ref_tail_logprobs, min_tail_prob
    )
    tensors = [logits, ref_topk_logprobs, ref_topk_indices]
    if ref_tail_logprobs is not None:
        tensors.append(ref_tail_logprobs[..., None])
    logits, ref_lp, idx, *tail = _select_rows(mask, lead, *tensors)
    dtype = _compute_dtype(logits, ref_lp)
    idx = idx.long()
    logp_full = torch.log_softmax(logits.to(dtype), dim=-1)
    logp = logp_full.gather(-1, idx)
    logq = ref_lp.to(dtype)
    if k < vocab:
        in_topk = torch.zeros_like(logp_full, dtype=torch.bool).scatter_(-1, idx, True)
        # at least V - k >= 1 entries stay finite, so this logsumexp (and its gradient) is finite
        logp_tail = logp_full.masked_fill(in_topk, -math.inf).logsumexp(-1, keepdim=True)
        if tail:
            logq_tail = tail[0].to(dtype)
        else:
            ref_topk_mass = torch.logsumexp(logq, dim=-1, keepdim=True).clamp_max(0.0)
            logq_tail = torch.log(-torch.expm1(ref_topk_mass))  # -inf if the top-k mass rounds to 1
            if min_tail_prob > 0.0:
                logq_tail = logq_tail.clamp_min(math.log(min_tail_prob))
        logp = torch.cat([logp, logp_tail], dim=-1)
        logq = torch.cat([logq, logq_tail], dim=-1)
    d = _divergence_rows(logp, logq, alpha)
    return d.sum() / max(d.numel(), 1)


def legacy_token_renyi(logp: torch.Tensor, ref_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """The retain "Rényi" term of the original seed code (Clausen 2025), reproduced exactly.

    NOT A DIVERGENCE. Kept only to reproduce the paper's numbers; use :func:`renyi_divergence` for
    new work. With ``a = logp.flatten()`` (retain target-token log-probs of the model, over the whole
    batch) and ``b = ref_logp.flatten()`` (the same under the reference), both of length ``N``:

    * ``alpha != 1``: ``(1 / (alpha - 1)) * logsumexp_i(alpha * a_i + (1 - alpha) * b_i)``;
    * ``alpha == 1``: ``F.kl_div(a, b, log_target=True, reduction="batchmean")``, i.e.
      ``sum_i exp(b_i) * (b_i - a_i) / N`` (on a 1-D input ``batchmean`` divides the sum by
      ``a.shape[0] == N``, so it equals the plain element mean).

    ``a`` and ``b`` are not distributions (the ``exp`` do not sum to 1), so the value is not 0 for
    identical inputs when ``alpha != 1`` (it is ``logsumexp(a) / (alpha - 1)``), can be negative or
    positive without bound, and depends on the batch size (duplicating the batch adds
    ``log 2 / (alpha - 1)``).

    Shapes: ``logp``, ``ref_logp`` any shape with the same number of elements -> scalar; empty -> 0
    (where ``F.kl_div`` would give NaN). ``alpha > 0`` or ValueError.
    """
    alpha = _check_alpha(alpha)
    dtype = _compute_dtype(logp, ref_logp)
    a = logp.to(dtype).reshape(-1)
    b = ref_logp.to(dtype).reshape(-1)
    _check_same_shape("flattened logp", a, "flattened ref_logp", b)
    if a.numel() == 0:
        return a.sum()
    if alpha == 1.0:
        return F.kl_div(a, b, log_target=True, reduction="batchmean")
    return (1.0 / (alpha - 1.0)) * torch.logsumexp(alpha * a + (1.0 - alpha) * b, dim=0)
