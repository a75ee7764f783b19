"""PDU: the logit-margin flattening loss, the Lagrangian and the projected dual update, against
brute force (Python loops, math module).

Tolerances: float64 vs float64 brute force: one max, one mean of V <= 20 terms, a square: rtol 1e-9.
bfloat16 upcast vs the same values in float32: identical operations, exact.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch.testing import assert_close

from llm_unlearn.losses import pdu_dual_update, pdu_forget_loss, pdu_lagrangian

TIGHT = dict(rtol=1e-9, atol=1e-12)


def _brute_forget(logits, mask=None):
    vals = [(max(z) - sum(z) / len(z)) ** 2 for i, z in enumerate(logits) if mask is None or mask[i]]
    return sum(vals) / len(vals) if vals else 0.0


def _logits(seed, n=6, v=20):
    rng = random.Random(seed)
    return [[rng.uniform(-10, 10) for _ in range(v)] for _ in range(n)]


def test_forget_loss_matches_bruteforce_and_mask():
    z = _logits(0)
    mask = [True, False, True, True, False, True]
    zt = torch.tensor(z, dtype=torch.float64)
    assert_close(pdu_forget_loss(zt).item(), _brute_forget(z), **TIGHT)
    assert_close(pdu_forget_loss(zt, torch.tensor(mask)).item(), _brute_forget(z, mask), **TIGHT)
    # [B, T, V] with a [B, T] mask selects the same rows
    z3 = zt.reshape(2, 3, 20)
    m3 = torch.tensor(mask).reshape(2, 3)
    assert_close(pdu_forget_loss(z3, m3).item(), _brute_forget(z, mask), **TIGHT)


def test_forget_loss_zero_at_uniform_and_descent_flattens():
    assert pdu_forget_loss(torch.full((3, 5), 2.5)).item() == 0.0
    z = torch.tensor(_logits(1, n=4, v=10), dtype=torch.float64, requires_grad=True)
    loss = pdu_forget_loss(z)
    loss.backward()
    with torch.no_grad():
        stepped = z - 0.05 * z.grad
        assert pdu_forget_loss(stepped) < loss
        gap = lambda x: x.amax(-1) - x.mean(-1)  # noqa: E731
        assert (gap(stepped) < gap(z)).all()
    # away from ties the max is differentiable: gradcheck
    assert torch.autograd.gradcheck(pdu_forget_loss, (z.detach().requires_grad_(),))


def test_forget_loss_empty_and_bfloat16():
    e = torch.zeros(0, 9, requires_grad=True)
    got = pdu_forget_loss(e)
    assert got.item() == 0.0 and got.grad_fn is not None
    got = pdu_forget_loss(torch.ones(2, 9, requires_grad=True), torch.tensor([False, False]))
    assert got.item() == 0.0 and got.grad_fn is not None
    zb = torch.tensor(_logits(2, n=3, v=12)).bfloat16()
    assert pdu_forget_loss(zb).dtype == torch.float32
    assert_close(pdu_forget_loss(zb), pdu_forget_loss(zb.float()), rtol=0, atol=0)


def test_lagrangian_value_and_gradients():
    f = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    loss = pdu_lagrangian(f, r, dual=50.0, retain_eps=0.3, gamma=2.0)
    assert_close(loss.item(), 2.0 * 3.0 + 50.0 * (0.8 - 0.3), **TIGHT)
    loss.backward()
    assert f.grad.item() == 2.0 and r.grad.item() == 50.0
    with pytest.raises(ValueError):
        pdu_lagrangian(f, r, dual=-1.0, retain_eps=0.3)
    b = pdu_lagrangian(
        torch.tensor(1.5, dtype=torch.bfloat16), torch.tensor(0.5, dtype=torch.bfloat16), 2.0, 0.25
    )
    assert b.dtype == torch.float32 and b.item() == 1.5 + 2.0 * 0.25


def test_dual_update_projected_ascent():
    # violated constraint: lambda grows by step * (L_r - eps)
    assert_close(pdu_dual_update(100.0, 0.5, 0.3, step_size=5.0), 100.0 + 5.0 * 0.2, **TIGHT)
    # satisfied constraint: lambda shrinks, never below 0
    assert_close(pdu_dual_update(1.0, 0.1, 0.3, step_size=1.0), 0.8, **TIGHT)
    assert pdu_dual_update(0.1, 0.0, 0.3, step_size=10.0) == 0.0
    # a tensor retain loss (with grad) is read as a number
    lam = pdu_dual_update(1.0, torch.tensor(0.7, requires_grad=True), 0.3)
    assert isinstance(lam, float) and abs(lam - 1.4) < 1e-6
    with pytest.raises(ValueError):
        pdu_dual_update(1.0, float("nan"), 0.3)
    with pytest.raises(ValueError):
        pdu_dual_update(1.0, 0.5, 0.3, step_size=-1.0)
