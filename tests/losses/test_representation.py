"""RMU terms and the control vector against float64 brute force (Python loops).

Tolerances: float64 vs float64 brute force, H <= 16 squares per token and two means: rtol 1e-9.
bfloat16 upcast vs the same values in float32: identical operations, exact.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from llm_unlearn.losses import rmu_control_vector, rmu_forget_loss, rmu_retain_loss

TIGHT = dict(rtol=1e-9, atol=1e-12)


def _brute(hidden, target, rows=None, n_rows=None):
    per_tok = [sum((a - b) ** 2 for a, b in zip(h, t)) / len(h) for h, t in zip(hidden, target)]
    if rows is None:
        return sum(per_tok) / len(per_tok) if per_tok else 0.0
    per_row = []
    for r in range(n_rows):
        vals = [e for e, rr in zip(per_tok, rows) if rr == r]
        if vals:
            per_row.append(sum(vals) / len(vals))
    return sum(per_row) / len(per_row) if per_row else 0.0


def _hidden(seed, n=7, h=16):
    rng = random.Random(seed)
    return [[rng.gauss(0, 3) for _ in range(h)] for _ in range(n)]


def test_control_vector_seeded_uniform_direction():
    u = rmu_control_vector(16, steering_coeff=6.5, seed=3)
    assert u.shape == (16,) and u.dtype == torch.float32
    assert_close(u.norm().item(), 6.5, rtol=1e-6, atol=0)
    assert (u >= 0).all()  # uniform [0, 1) draws: positive orthant
    assert torch.equal(u, rmu_control_vector(16, 6.5, seed=3))
    assert not torch.equal(u, rmu_control_vector(16, 6.5, seed=4))
    assert rmu_control_vector(4, dtype=torch.float64).dtype == torch.float64
    for bad in [dict(hidden_size=0), dict(hidden_size=4, steering_coeff=0.0)]:
        with pytest.raises(ValueError):
            rmu_control_vector(**bad)


def test_forget_and_retain_match_bruteforce_token_and_row_means():
    hid, frozen = _hidden(0), _hidden(1)
    c = rmu_control_vector(16, 20.0, seed=0, dtype=torch.float64)
    rows, n_rows = [0, 0, 0, 2, 2, 3, 3], 4  # row 1 empty: left out of the row mean
    ht, ft, rt = (
        torch.tensor(hid, dtype=torch.float64),
        torch.tensor(frozen, dtype=torch.float64),
        torch.tensor(rows),
    )
    cl = [c.tolist()] * len(hid)
    assert_close(rmu_forget_loss(ht, c).item(), _brute(hid, cl), **TIGHT)
    assert_close(rmu_forget_loss(ht, c, rt, n_rows).item(), _brute(hid, cl, rows, n_rows), **TIGHT)
    assert_close(rmu_retain_loss(ht, ft).item(), _brute(hid, frozen), **TIGHT)
    assert_close(rmu_retain_loss(ht, ft, rt, n_rows).item(), _brute(hid, frozen, rows, n_rows), **TIGHT)
    assert rmu_retain_loss(ht, ht).item() == 0.0


def test_gradients_point_to_targets():
    c = rmu_control_vector(8, 5.0, dtype=torch.float64)
    h = torch.tensor(_hidden(2, n=3, h=8), dtype=torch.float64, requires_grad=True)
    rmu_forget_loss(h, c).backward()
    # d/dh of mean_n mean_h (h - c)^2 = 2 (h - c) / (N H): a descent step moves h towards c
    assert_close(h.grad, 2 * (h.detach() - c) / (3 * 8), **TIGHT)
    with torch.no_grad():
        stepped = h - 1.0 * h.grad
    assert ((stepped - c).norm(dim=-1) < (h.detach() - c).norm(dim=-1)).all()
    rows = torch.tensor([0, 1, 1])
    frozen = torch.tensor(_hidden(3, n=3, h=8), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: rmu_retain_loss(x, frozen, rows, 2), (h.detach().requires_grad_(),)
    )
    assert torch.autograd.gradcheck(lambda x: rmu_forget_loss(x, c, rows, 2), (h.detach().requires_grad_(),))


def test_empty_bfloat16_and_shape_errors():
    e = torch.zeros(0, 8, requires_grad=True)
    c = rmu_control_vector(8)
    for got in (
        rmu_forget_loss(e, c),
        rmu_forget_loss(e, c, torch.zeros(0, dtype=torch.long), 3),
        rmu_retain_loss(e, e.detach()),
    ):
        assert got.item() == 0.0 and got.grad_fn is not None
    hb = torch.tensor(_hidden(4, n=3, h=8)).bfloat16()
    got = rmu_forget_loss(hb, c.bfloat16())
    assert got.dtype == torch.float32
    assert_close(got, rmu_forget_loss(hb.float(), c.bfloat16().float()), rtol=0, atol=0)
    with pytest.raises(ValueError):
        rmu_forget_loss(torch.zeros(2, 8), torch.zeros(7))
    with pytest.raises(ValueError):
        rmu_retain_loss(torch.zeros(2, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError):
        rmu_forget_loss(torch.zeros(2, 8), c, torch.zeros(2, dtype=torch.long))
    assert math.isfinite(rmu_forget_loss(torch.full((2, 8), 1e3), c).item())
