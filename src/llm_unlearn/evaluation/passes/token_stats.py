"""Per-document token statistics from a model's logits: token log-probabilities, NLL, Min-K% and
Min-K%++ (the formulas: :mod:`llm_unlearn.evaluation.metrics.mia`). Used by both pass families."""

from __future__ import annotations

import torch

from llm_unlearn.evaluation.metrics.mia import lowest_k_mean, min_k_score

__all__ = ["min_k_plus_plus_token_scores", "min_k_plus_plus_score", "token_statistics"]


def _token_logp_and_mink_pp(logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype):
    """``(log p(target), Min-K%++ score)`` per position, computed in ``dtype``."""
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp.square()).sum(-1) - mu.square()
    sigma = var.clamp_min(0).sqrt()
    token_logp = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    return token_logp, torch.where(sigma > 0, (token_logp - mu) / safe, torch.zeros_like(sigma))


def min_k_plus_plus_token_scores(
    logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Per-position Min-K%++ scores. ``logits``: ``[n, vocab]`` (position t predicts ``targets[t]``),
    ``targets``: ``[n]``. A position with sigma = 0 (a one-hot distribution) scores 0."""
    return _token_logp_and_mink_pp(logits, targets, dtype)[1]


def min_k_plus_plus_score(logits: torch.Tensor, targets: torch.Tensor, k_percent: float = 20) -> float:
    """Min-K%++: mean of the lowest k % per-token scores (higher = member)."""
    return lowest_k_mean(min_k_plus_plus_token_scores(logits, targets), k_percent)


def token_statistics(
    logits: torch.Tensor, input_ids: torch.Tensor, k_percent: float = 20, chunk: int = 1024
) -> dict[str, float]:
    """All per-document statistics from one forward pass over a document's ``n`` tokens.

    ``logits``: ``[n, vocab]`` (the model's output at every position), ``input_ids``: ``[n]``. Position
    ``t`` predicts token ``t + 1``; the first token is never predicted (as with ``labels=input_ids``).
    Returns ``nll`` (mean over the ``n - 1`` predicted tokens), ``n_tokens`` (= n - 1), ``min_k``,
    ``min_k_plus_plus``. A document of one token has nothing to predict: NaN statistics.
    """
    n = int(input_ids.shape[0])
    if n < 2:
        return {"nll": float("nan"), "n_tokens": 0, "min_k": float("nan"), "min_k_plus_plus": float("nan")}
    targets = input_ids[1:n].to(logits.device).long()
    logps, scores = [], []
    for i in range(0, n - 1, chunk):  # float32 over the vocabulary, a chunk of positions at a time
        lp, sc = _token_logp_and_mink_pp(
            logits[i : min(i + chunk, n - 1)], targets[i : i + chunk], torch.float32
        )
        logps.append(lp)
        scores.append(sc)
    token_logp = torch.cat(logps)
    return {
        "nll": float(-token_logp.double().mean()),
        "n_tokens": n - 1,
        "min_k": min_k_score(token_logp, k_percent),
        "min_k_plus_plus": lowest_k_mean(torch.cat(scores), k_percent),
    }
