"""Membership-inference attacks: the official loss attack and three extra ones (pure functions).

Scores follow one convention: **higher = more likely a member**. ``mia_auc`` is the ROC AUC with
members as positives, so for the loss attack the score is ``-NLL``.

* loss (official): mean token NLL of the whole document; score ``-NLL``;
* zlib: ``NLL * n_tokens / len(zlib.compress(document bytes))`` (total NLL over compressed length;
  Carlini et al. 2021); score ``-ratio``;
* Min-K% (Shi et al. 2024): mean of the lowest k % token log-probabilities; score as is;
* Min-K%++ (Zhang et al. 2024): per token ``(log p(x_t) - mu_t) / sigma_t`` with
  ``mu_t = sum_v p(v) log p(v)`` and ``sigma_t^2 = sum_v p(v) (log p(v))^2 - mu_t^2`` over the
  vocabulary at that position; then the mean of the lowest k %; score as is.

"Lowest k %" keeps ``max(1, int(n * k / 100))`` of the ``n`` values (the reference implementations use
``int(n * k / 100)``, which is empty, hence NaN, for documents shorter than 100 / k tokens).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

from llm_unlearn.errors import UserError

__all__ = [
    "ATTACKS",
    "mia_auc",
    "loss_auc",
    "zlib_ratio",
    "lowest_k_mean",
    "min_k_score",
    "min_k_plus_plus_token_scores",
    "min_k_plus_plus_score",
    "token_statistics",
    "attack_scores",
    "attack_aucs",
]

#: Attack name -> (field of a per-document row, sign that turns it into "higher = member").
ATTACKS: dict[str, tuple[str, float]] = {
    "loss": ("nll", -1.0),
    "zlib": ("zlib_ratio", -1.0),
    "min_k": ("min_k", 1.0),
    "min_k_plus_plus": ("min_k_plus_plus", 1.0),
}


def mia_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC (``sklearn.metrics.roc_auc_score``) with members as positives; higher score = member."""
    from sklearn.metrics import roc_auc_score

    member = [float(s) for s in member_scores]
    nonmember = [float(s) for s in nonmember_scores]
    if not member or not nonmember:
        raise UserError(
            f"MIA needs member and non-member documents (got {len(member)} members, {len(nonmember)} non-members)"
        )
    bad = [s for s in member + nonmember if not math.isfinite(s)]
    if bad:
        raise ValueError(f"MIA scores must be finite; got {len(bad)} non-finite value(s), e.g. {bad[0]}")
    labels = [1] * len(member) + [0] * len(nonmember)
    return float(roc_auc_score(labels, member + nonmember))


def loss_auc(member_nll: Sequence[float], nonmember_nll: Sequence[float]) -> float:
    """The official loss attack: AUC with score = -NLL (lower loss = member)."""
    return mia_auc([-x for x in member_nll], [-x for x in nonmember_nll])


def zlib_ratio(nll: float, n_tokens: int, document: str) -> float:
    """``nll * n_tokens / len(zlib.compress(document.encode("utf-8")))``: the document's total NLL
    (``nll`` is the mean over ``n_tokens`` predicted tokens) per compressed byte."""
    return float(nll) * int(n_tokens) / len(zlib.compress(document.encode("utf-8")))


def _k_count(n: int, k_percent: float) -> int:
    if not 0 < k_percent <= 100:
        raise ValueError(f"k must be in (0, 100], got {k_percent}")
    return max(1, int(n * k_percent / 100))


def lowest_k_mean(values: Sequence[float] | torch.Tensor, k_percent: float = 20) -> float:
    """Mean of the lowest ``max(1, int(n * k / 100))`` values; NaN for no values."""
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        return float("nan")
    k = _k_count(t.numel(), k_percent)
    return float(torch.sort(t).values[:k].mean())


def min_k_score(token_logprobs: Sequence[float] | torch.Tensor, k_percent: float = 20) -> float:
    """Min-K%: mean of the lowest k % token log-probabilities (higher = member)."""
    return lowest_k_mean(token_logprobs, k_percent)


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


def attack_scores(row: dict) -> dict[str, float]:
    """Attack name -> "higher = member" score for one per-document row (as in ``mia.jsonl``)."""
    return {
        name: sign * float(row[field])
        for name, (field, sign) in ATTACKS.items()
        if row.get(field) is not None
    }


def attack_aucs(member_rows: Sequence[dict], nonmember_rows: Sequence[dict]) -> dict[str, float | None]:
    """AUC of every attack in :data:`ATTACKS` from per-document rows (``nll``, ``zlib_ratio``, ``min_k``,
    ``min_k_plus_plus``). An attack with a non-finite score on some document gets None."""
    out: dict[str, float | None] = {}
    for name, (field, sign) in ATTACKS.items():
        m = [sign * float(r[field]) for r in member_rows if r.get(field) is not None]
        nm = [sign * float(r[field]) for r in nonmember_rows if r.get(field) is not None]
        if (
            len(m) != len(member_rows)
            or len(nm) != len(nonmember_rows)
            or not all(map(math.isfinite, m + nm))
        ):
            out[name] = None
            continue
        out[name] = mia_auc(m, nm)
    return out
