"""MIA AUC and the extra attacks on tiny hand-made inputs, against brute force."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch

from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.metrics.mia import (
    attack_aucs,
    loss_auc,
    lowest_k_mean,
    mia_auc,
    min_k_score,
    zlib_ratio,
)
from llm_unlearn.evaluation.metrics.semeval import mia_score
from llm_unlearn.evaluation.passes.token_stats import (
    min_k_plus_plus_score,
    min_k_plus_plus_token_scores,
    token_statistics,
)


def brute_auc(pos, neg):
    """P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    total = 0.0
    for p, n in itertools.product(pos, neg):
        total += 1.0 if p > n else (0.5 if p == n else 0.0)
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize(
    "member_nll, nonmember_nll, auc, score",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5, 1.0),  # indistinguishable: the goal
        ([0.5, 0.7, 0.9], [2.0, 2.5, 3.0], 1.0, 0.0),  # members have lower loss: fully exposed
        ([2.0, 2.5, 3.0], [0.5, 0.7, 0.9], 0.0, 0.0),  # inverted, equally informative
        ([1.0, 3.0], [2.0, 4.0], 0.75, 0.5),
    ],
)
def test_loss_attack_auc_and_score(member_nll, nonmember_nll, auc, score):
    got = loss_auc(member_nll, nonmember_nll)
    assert got == pytest.approx(auc)
    assert got == pytest.approx(brute_auc([-x for x in member_nll], [-x for x in nonmember_nll]))
    assert mia_score(got) == pytest.approx(score)


def test_mia_auc_matches_brute_force_with_ties():
    pos = [0.3, 0.1, 0.9, 0.5, 0.5]
    neg = [0.2, 0.5, 0.4, 0.8]
    assert mia_auc(pos, neg) == pytest.approx(brute_auc(pos, neg))


def test_mia_auc_rejects_empty_and_nan():
    with pytest.raises(UserError):
        mia_auc([], [1.0])
    with pytest.raises(ValueError):
        mia_auc([float("nan")], [1.0])


def test_zlib_ratio():
    doc = "hello hello hello hello world"
    assert zlib_ratio(2.0, 10, doc) == pytest.approx(20.0 / len(zlib.compress(doc.encode("utf-8"))))
    assert zlib_ratio(2.0, 10, "é") == pytest.approx(20.0 / len(zlib.compress("é".encode())))


def test_min_k_brute_force():
    logps = [-1.0, -5.0, -3.0, -0.5, -2.0, -4.0, -0.1, -0.2, -6.0, -0.3]
    # k = 20 % of 10 tokens = the 2 lowest: -6, -5
    assert min_k_score(logps, 20) == pytest.approx(-5.5)
    assert min_k_score(logps, 50) == pytest.approx(sum(sorted(logps)[:5]) / 5)
    assert min_k_score(logps, 100) == pytest.approx(sum(logps) / 10)
    # fewer than 100/k tokens: at least one value is kept (no NaN)
    assert min_k_score([-1.0, -2.0, -0.5], 20) == -2.0
    assert math.isnan(lowest_k_mean([], 20))
    with pytest.raises(ValueError):
        lowest_k_mean([1.0], 0)


def _brute_mink_pp_token(logit_row, target):
    z = [math.exp(v) for v in logit_row]
    s = sum(z)
    p = [v / s for v in z]
    logp = [math.log(v) for v in p]
    mu = sum(pi * li for pi, li in zip(p, logp))
    var = sum(pi * li * li for pi, li in zip(p, logp)) - mu * mu
    return (logp[target] - mu) / math.sqrt(var)


def test_min_k_plus_plus_brute_force():
    logits = torch.tensor(
        [[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.5], [-2.0, 1.0, 1.5], [0.3, 0.2, 0.1]]
    )
    targets = torch.tensor([0, 1, 1, 2, 2])
    got = min_k_plus_plus_token_scores(logits, targets)
    want = [_brute_mink_pp_token(logits[i].tolist(), int(targets[i])) for i in range(5)]
    # computed in float64 from exactly representable float32 logits (V = 3): a few u64: 1e-9
    assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)
    # k = 40 % of 5 = the 2 lowest per-token scores
    assert min_k_plus_plus_score(logits, targets, 40) == pytest.approx(sum(sorted(want)[:2]) / 2)
    # a deterministic position (sigma = 0) scores 0 instead of dividing by zero
    flat = min_k_plus_plus_token_scores(torch.tensor([[0.0, -1e4, -1e4]]), torch.tensor([0]))
    assert flat.tolist() == [0.0]


def test_token_statistics_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    ids = torch.tensor([4, 1, 3, 0, 2, 2])
    st = token_statistics(logits, ids, k_percent=40)
    # position t predicts token t + 1; the first token is not predicted
    logps = []
    for t in range(5):
        row = logits[t].tolist()
        lse = math.log(sum(math.exp(v) for v in row))
        logps.append(row[int(ids[t + 1])] - lse)
    assert st["n_tokens"] == 5
    # float32 log-softmax over V = 5 and a mean of 5: ~10 u32 ~ 6e-7 relative: 1e-6; Min-K%++ divides by
    # a standard deviation (a difference of squares: cancellation ~10x): 1e-5
    assert st["nll"] == pytest.approx(-sum(logps) / 5, rel=1e-6)
    assert st["min_k"] == pytest.approx(sum(sorted(logps)[:2]) / 2, rel=1e-6)
    pp = [_brute_mink_pp_token(logits[t].tolist(), int(ids[t + 1])) for t in range(5)]
    assert st["min_k_plus_plus"] == pytest.approx(sum(sorted(pp)[:2]) / 2, rel=1e-5)
    # the NLL equals a causal LM's loss with labels = input ids
    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[1:])
    assert st["nll"] == pytest.approx(float(loss), rel=1e-6)
    one = token_statistics(logits[:1], ids[:1])
    assert one["n_tokens"] == 0 and math.isnan(one["nll"])


def test_attack_aucs_directions():
    # members: lower NLL, lower zlib ratio, higher Min-K% and Min-K%++ -> every AUC is 1
    members = [
        {"nll": 1.0, "zlib_ratio": 0.1, "min_k": -1.0, "min_k_plus_plus": 0.5},
        {"nll": 1.5, "zlib_ratio": 0.2, "min_k": -1.5, "min_k_plus_plus": 0.4},
    ]
    nonmembers = [
        {"nll": 3.0, "zlib_ratio": 0.5, "min_k": -4.0, "min_k_plus_plus": -1.0},
        {"nll": 2.5, "zlib_ratio": 0.4, "min_k": -3.0, "min_k_plus_plus": -0.5},
    ]
    assert attack_aucs(members, nonmembers) == {
        "loss": 1.0,
        "zlib": 1.0,
        "min_k": 1.0,
        "min_k_plus_plus": 1.0,
    }
    assert attack_aucs(nonmembers, members) == {
        "loss": 0.0,
        "zlib": 0.0,
        "min_k": 0.0,
        "min_k_plus_plus": 0.0,
    }
    bad = [dict(members[0], min_k=float("nan")), members[1]]
    assert attack_aucs(bad, nonmembers)["min_k"] is None
