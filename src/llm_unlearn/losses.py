"""Loss terms for unlearning: pure tensor functions, no model and no trainer state.

Conventions used throughout this module
---------------------------------------
* ``B`` batch size, ``T`` sequence length, ``V`` vocabulary size, ``H`` hidden size, ``k`` top-k size.
* Causal language models: the logits at position ``t`` predict the token at position ``t + 1``.
  :func:`target_log_probs` applies that shift; every other function takes tensors that are already
  aligned.
* ``log p(y_t)`` is the log-probability the model gives to the target (label) token at answer
  position ``t``.
* Labels use ``-100`` (``ignore_index``) for positions that do not count (prompt, padding).
* Masked means are taken over the valid positions only. A mask with no valid position gives exactly
  ``0``: a zero tensor that is still connected to the autograd graph of the input when the input
  requires grad, never NaN.
* Computation happens in ``float32`` at least (``float64`` if an input is ``float64``); ``bfloat16``
  and ``float16`` inputs are upcast first. Results are returned in that computation dtype.
* Nothing in this module replaces NaN or inf by a number. Use :func:`check_finite` to fail loudly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llm_unlearn.errors import NonFiniteLossError

__all__ = [
    "check_finite",
    "chunked_target_log_probs",
    "gradient_ascent_loss",
    "kl_divergence",
    "legacy_token_renyi",
    "nll_loss",
    "npo_loss",
    "per_sample_mean_nll",
    "reference_topk",
    "renyi_divergence",
    "renyi_divergence_topk",
    "sequence_log_probs",
    "shift_for_causal_lm",
    "sugd_loss",
    "target_log_probs",
]

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
# small helpers
# --------------------------------------------------------------------------------------------------


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """``float64`` if any input is ``float64``, else ``float32`` (never lower)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (alpha > 0.0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    return alpha


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (all elements if ``mask`` is None); exactly 0 if none is valid.

    Masked-out elements are selected away with ``torch.where`` (not multiplied by 0), so a NaN or inf
    there does not reach the forward result.
    """
    if mask is None:
        return values.sum() / max(values.numel(), 1)
    _check_same_shape("values", values, "mask", mask)
    mask = mask.to(torch.bool)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    count = mask.sum().clamp_min(1).to(values.dtype)
    return total / count


def _select_rows(
    mask: torch.Tensor | None, lead_shape: torch.Size, *tensors: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Keep the rows (leading positions) where ``mask`` is True: ``[..., X]`` -> ``[M, X]``."""
    if mask is None:
        return tuple(t.reshape(-1, t.shape[-1]) for t in tensors)
    if mask.shape != lead_shape:
        raise ValueError(
            f"mask must have shape {tuple(lead_shape)} (the logits without the vocab dim), got {tuple(mask.shape)}"
        )
    mask = mask.to(torch.bool)
    return tuple(t[mask] for t in tensors)


# --------------------------------------------------------------------------------------------------
# target-token log-probabilities
# --------------------------------------------------------------------------------------------------


def shift_for_causal_lm(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict.

    Shapes: ``logits [B, T, V]``, ``labels [B, T]`` -> ``(logits[:, :-1] [B, T-1, V], labels[:, 1:] [B, T-1])``.
    After the shift, ``logits[:, t]`` scores ``labels[:, t]``.
    """
    return logits[:, :-1], labels[:, 1:]


def target_log_probs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
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


def sequence_log_probs(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each whole answer: ``out[b] = sum_t mask[b, t] * logp[b, t]``.

    Shapes: ``logp [B, T]``, ``mask [B, T]`` bool -> ``[B]``. A row without valid position gives 0.
    """
    _check_same_shape("logp", logp, "mask", mask)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(mask.to(torch.bool), logp, zero).sum(-1)


def per_sample_mean_nll(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of each row: ``out[b] = -sum_t mask[b,t] logp[b,t] / sum_t mask[b,t]``.

    Shapes: ``logp [B, T]``, ``mask [B, T]`` bool -> ``[B]`` (float32 at least). A row with no valid
    token gives exactly 0.
    """
    _check_same_shape("logp", logp, "mask", mask)
    dtype = _compute_dtype(logp)
    logp = logp.to(dtype)
    mask = mask.to(torch.bool)
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    total = torch.where(mask, -logp, zero).sum(-1)
    return total / mask.sum(-1).clamp_min(1).to(dtype)


class _ChunkedTargetLogProb(torch.autograd.Function):
    """log p(target) of ``hidden @ weight.T (+ bias)``, computed ``chunk_size`` rows at a time.

    Forward keeps only the per-row logsumexp ``[N]``; backward recomputes each ``[chunk, V]`` slice of
    logits, so neither pass holds more than one float32 slice of logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, dtype):
        n = hidden.shape[0]
        out = torch.empty(n, dtype=dtype, device=hidden.device)
        lse = torch.empty(n, dtype=dtype, device=hidden.device)
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            logits = _logits_slice(hidden[rows], weight, bias, dtype)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(-1, targets[rows, None]).squeeze(-1) - lse[rows]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size = chunk_size
        ctx.dtype = dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype, chunk_size = ctx.dtype, ctx.chunk_size
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_b else None
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            g = grad_out[rows].to(dtype)
            # d out / d logits = onehot(target) - softmax(logits)
            grad_logits = (_logits_slice(hidden[rows], weight, bias, dtype) - lse[rows, None]).exp_()
            grad_logits.mul_(-g[:, None]).scatter_add_(-1, targets[rows, None], g[:, None])
            if need_h:
                grad_h[rows] = grad_logits.to(weight.dtype) @ weight
            if need_w:
                grad_w += (grad_logits.t().to(hidden.dtype) @ hidden[rows]).to(dtype)
            if need_b:
                grad_b += grad_logits.sum(0)
        if need_w:
            grad_w = grad_w.to(weight.dtype)
        if need_b:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def _logits_slice(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    return logits.to(dtype)


def chunked_target_log_probs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Memory-saving ``log p(target)`` straight from the last hidden states.

    ``out[n] = z[n, targets[n]] - logsumexp_v z[n, v]`` with ``z = (hidden @ lm_head_weight.T + bias)``
    computed in the input dtype and upcast to float32 (float64 for float64 inputs) one slice of
    ``chunk_size`` rows at a time. A full ``[N, V]`` float32 tensor is never built, neither in the
    forward nor in the backward pass (the backward recomputes each slice). Differentiable w.r.t.
    ``hidden``, ``lm_head_weight`` and ``bias``.

    Shapes: ``hidden [N, H]`` (already the selected answer positions, i.e. shifted), ``lm_head_weight
    [V, H]``, ``targets [N]`` int in ``[0, V)`` (no ignore_index), ``bias [V]`` or None -> ``[N]``.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if hidden.dim() != 2 or lm_head_weight.dim() != 2 or hidden.shape[1] != lm_head_weight.shape[1]:
        raise ValueError(
            f"expected hidden [N, H] and lm_head_weight [V, H], got {tuple(hidden.shape)} and {tuple(lm_head_weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"targets must have shape [N] = {tuple(hidden.shape[:1])}, got {tuple(targets.shape)}"
        )
    if bias is not None and bias.shape != lm_head_weight.shape[:1]:
        raise ValueError(
            f"bias must have shape [V] = {tuple(lm_head_weight.shape[:1])}, got {tuple(bias.shape)}"
        )
    dtype = _compute_dtype(hidden, lm_head_weight)
    return _ChunkedTargetLogProb.apply(hidden, lm_head_weight, bias, targets.long(), chunk_size, dtype)


# --------------------------------------------------------------------------------------------------
# likelihood losses and baselines
# --------------------------------------------------------------------------------------------------


def nll_loss(logp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood: ``-sum(mask * logp) / sum(mask)``.

    Shapes: ``logp`` any shape, ``mask`` same shape bool or None (all elements) -> scalar. No valid
    element -> exactly 0.
    """
    logp = logp.to(_compute_dtype(logp))
    return _masked_mean(-logp, mask)


def gradient_ascent_loss(forget_logp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-ascent baseline: ``-nll = mean(log p(y))`` over the forget tokens.

    Minimizing it raises the forget NLL. Shapes: ``forget_logp`` any shape (usually the 1-D tensor of
    forget answer-token log-probs), optional ``mask`` of the same shape -> scalar; empty -> 0.
    """
    return -nll_loss(forget_logp, mask)


def sugd_loss(per_sample_nll: torch.Tensor, factors: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """AILS-NTUA SUGD objective: ``(1/B) * sum_i factors[i] * per_sample_nll[i]``.

    ``per_sample_nll[i]`` is the mean cross-entropy of row ``i`` (see :func:`per_sample_mean_nll`);
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
    :func:`sequence_log_probs`). ``ref_logp`` comes from the frozen reference model and should carry no
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


# --------------------------------------------------------------------------------------------------
# divergences between next-token distributions
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


# --------------------------------------------------------------------------------------------------
# guard
# --------------------------------------------------------------------------------------------------


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
