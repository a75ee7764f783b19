"""open-unlearning's KL retain term, as its source computes it, against this project's `kl_divergence`.

OU `compute_kl_divergence` (src/trainer/utils.py, d3d7cf9): `F.kl_div(log_softmax(model).view(-1, V),
log_softmax(reference).view(-1, V), reduction="batchmean", log_target=True)`: KL(reference || model),
the mean over all B*T positions, no mask. The brute force below is that definition written out in
Python (float64, V = 7 terms per position: tolerance n u ~ 1e-15, so rel 1e-9).
"""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.losses import kl_divergence


def _log_softmax(z):
    m = max(z)
    s = math.log(sum(math.exp(v - m) for v in z)) + m
    return [v - s for v in z]


def test_open_unlearning_kl_is_reference_first_over_every_position():
    g = torch.Generator().manual_seed(0)
    B, T, V = 2, 3, 7
    model, ref = (
        torch.randn(B, T, V, generator=g, dtype=torch.float64),
        torch.randn(B, T, V, generator=g, dtype=torch.float64),
    )
    brute = 0.0
    for b in range(B):
        for t in range(T):
            lq, lp = _log_softmax(model[b, t].tolist()), _log_softmax(ref[b, t].tolist())
            brute += sum(math.exp(p) * (p - q) for p, q in zip(lp, lq))
    brute /= B * T
    ou = torch.nn.functional.kl_div(
        model.log_softmax(-1).view(-1, V),
        ref.log_softmax(-1).view(-1, V),
        reduction="batchmean",
        log_target=True,
    )
    assert float(ou) == pytest.approx(brute, rel=1e-9)
    # this project's function is KL(first || second): OU's value is the reference first, every position
    assert float(kl_divergence(ref, model, None)) == pytest.approx(brute, rel=1e-9)
    # the direction the project trains with (model first) is a different number
    assert abs(float(kl_divergence(model, ref, None)) - brute) > 1e-3 * brute
