"""Membership-inference attacks: the official loss attack and three extra ones (pure functions; the
per-token Min-K%++ scores of a model's logits are a pass: :mod:`llm_unlearn.evaluation.passes.token_stats`).

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

How sure an AUC is (:func:`auc_interval`, DeLong et al. 1988): with ``psi(x, y)`` = 1, 1/2 or 0 as a member
score ``x`` is above, equal to or below a non-member score ``y``, the components ``V10_i`` (member ``i``'s
mean ``psi`` over the non-members) and ``V01_j`` (non-member ``j``'s over the members) average to the AUC;
its variance is estimated by ``S10 / m + S01 / n`` (their sample variances over the ``m`` members and ``n``
non-members), the interval is ``AUC ± z se`` clipped to [0, 1]. It is the documents' sampling noise: for
sets of the evaluation's size drawn again from the same populations, not a statement about the model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from statistics import NormalDist

from llm_unlearn.errors import UserError

__all__ = [
    "ATTACKS",
    "mia_auc",
    "loss_auc",
    "auc_interval",
    "loss_auc_interval",
    "mia_score_range",
    "loss_interval_of_rows",
    "zlib_ratio",
    "lowest_k_mean",
    "min_k_score",
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


def auc_interval(
    member_scores: Sequence[float], nonmember_scores: Sequence[float], level: float = 0.95
) -> dict[str, float | int]:
    """The AUC (members as positives, higher score = member), its DeLong standard error and the ``level``
    interval ``AUC ± z se`` clipped to [0, 1]: ``{"auc", "se", "low", "high", "level", "members",
    "nonmembers"}``. Ties count one half, as in the AUC. Needs at least 2 documents a side."""
    import numpy as np
    from scipy.stats import rankdata

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray([float(s) for s in member_scores], dtype=np.float64)
    y = np.asarray([float(s) for s in nonmember_scores], dtype=np.float64)
    m, n = x.size, y.size
    if m < 2 or n < 2:
        raise ValueError(f"an AUC interval needs at least 2 members and 2 non-members (got {m} and {n})")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("MIA scores must be finite")
    both = rankdata(np.concatenate([x, y]))  # mid-ranks: a tie counts one half
    v10 = (both[:m] - rankdata(x)) / n  # non-members below member i (+ 1/2 per tie), over n
    v01 = 1.0 - (both[m:] - rankdata(y)) / m  # members above non-member j (+ 1/2 per tie), over m
    auc = float(v10.mean())
    se = math.sqrt(max(0.0, float(v10.var(ddof=1)) / m + float(v01.var(ddof=1)) / n))
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return {
        "auc": auc,
        "se": se,
        "low": max(0.0, auc - z * se),
        "high": min(1.0, auc + z * se),
        "level": level,
        "members": m,
        "nonmembers": n,
    }


def loss_auc_interval(
    member_nll: Sequence[float], nonmember_nll: Sequence[float], level: float = 0.95
) -> dict[str, float | int]:
    """:func:`auc_interval` of the official loss attack (score = -NLL)."""
    return auc_interval([-x for x in member_nll], [-x for x in nonmember_nll], level)


def loss_interval_of_rows(member_rows: Sequence[dict], nonmember_rows: Sequence[dict]) -> dict:
    """:func:`loss_auc_interval` of per-document rows (``nll``, as in ``mia.jsonl``) with the MIA score's
    range over it (``mia_score_low``, ``mia_score_high``); ``{}`` under 2 documents a side."""
    if len(member_rows) < 2 or len(nonmember_rows) < 2:
        return {}
    r: dict = loss_auc_interval([m["nll"] for m in member_rows], [m["nll"] for m in nonmember_rows])
    r["mia_score_low"], r["mia_score_high"] = mia_score_range(r["low"], r["high"])
    return r


def mia_score_range(low: float, high: float) -> tuple[float, float]:
    """The range of the official MIA score ``1 - 2 |AUC - 0.5|`` over the AUCs in [low, high]: 1 at the top
    when the interval holds 0.5."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got {low!r}, {high!r}")
    ends = [1.0 - 2.0 * abs(a - 0.5) for a in (low, high)]
    return min(ends), (1.0 if low <= 0.5 <= high else max(ends))


def zlib_ratio(nll: float, n_tokens: int, document: str) -> float:
    """``nll * n_tokens / len(zlib.compress(document.encode("utf-8")))``: the document's total NLL
    (``nll`` is the mean over ``n_tokens`` predicted tokens) per compressed byte."""
    return float(nll) * int(n_tokens) / len(zlib.compress(document.encode("utf-8")))


def _k_count(n: int, k_percent: float) -> int:
    if not 0 < k_percent <= 100:
        raise ValueError(f"k must be in (0, 100], got {k_percent}")
    return max(1, int(n * k_percent / 100))


def lowest_k_mean(values, k_percent: float = 20) -> float:
    """Mean of the lowest ``max(1, int(n * k / 100))`` values (a sequence or a tensor); NaN for no
    values. Sorted and averaged in float64 by torch, imported here only."""
    import torch

    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        return float("nan")
    k = _k_count(t.numel(), k_percent)
    return float(torch.sort(t).values[:k].mean())


def min_k_score(token_logprobs, k_percent: float = 20) -> float:
    """Min-K%: mean of the lowest k % token log-probabilities (higher = member)."""
    return lowest_k_mean(token_logprobs, k_percent)


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
