"""SimNPO and DPO against float64 brute force written with Python loops and the math module.

Tolerances: float64 vs the float64 brute force: a handful of sums and one log-sigmoid per row,
n * u ~ 1e-14 relative, so rtol = 1e-9 / atol = 1e-12 leave ample room. bfloat16 inputs are upcast
to float32 first, then compared with the same values given as float32: the same operations in the
same order, so equal up to 0 (rtol = atol = 0 would hold; 1e-6 covers index_add ordering).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from llm_unlearn.losses import dpo_loss, row_sums, simnpo_loss

TIGHT = dict(rtol=1e-9, atol=1e-12)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _brute_simnpo(logp, rows, n_rows, beta, delta):
    total, present = 0.0, 0
    for b in range(n_rows):
        vals = [lp for lp, r in zip(logp, rows) if r == b]
        if not vals:
            continue
        mean_nll = -sum(vals) / len(vals)
        total += _log_sigmoid(beta * (mean_nll - delta))
        present += 1
    return -(2.0 / beta) * total / present if present else 0.0


@pytest.mark.parametrize("beta,delta", [(4.5, 0.0), (0.7, 0.3), (10.0, -1.0)])
def test_simnpo_matches_bruteforce(beta, delta):
    rng = random.Random(0)
    n_rows = 5
    rows = [0, 0, 0, 1, 3, 3, 4, 4, 4, 4]  # row 2 has no tokens: left out of the mean
    logp = [-rng.uniform(0.01, 6.0) for _ in rows]
    got = simnpo_loss(torch.tensor(logp, dtype=torch.float64), torch.tensor(rows), n_rows, beta, delta)
    assert got.dtype == torch.float64
    assert_close(got.item(), _brute_simnpo(logp, rows, n_rows, beta, delta), **TIGHT)


def test_simnpo_empty_is_zero_and_connected():
    logp = torch.zeros(0, dtype=torch.float32, requires_grad=True)
    got = simnpo_loss(logp, torch.zeros(0, dtype=torch.long), 3)
    assert got.item() == 0.0 and got.grad_fn is not None
    got.backward()
    assert logp.grad.shape == (0,)


def test_simnpo_descent_lowers_forget_logp_and_length_normalizes():
    # one row of 2 tokens, one of 4 with the same per-token logp: equal contributions (length
    # normalized), and a gradient step on the loss lowers every forget log-prob
    logp = torch.full((6,), -0.5, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 0, 1, 1, 1, 1])
    loss = simnpo_loss(logp, rows, 2, beta=2.0)
    loss.backward()
    assert (logp.grad > 0).all()  # d loss / d logp > 0: descending lowers logp
    # per-token gradient is 1/|y| times the row weight: row 0 tokens get twice row 1's
    assert_close(logp.grad[0] / logp.grad[2], torch.tensor(2.0, dtype=torch.float64), **TIGHT)
    assert torch.autograd.gradcheck(
        lambda x: simnpo_loss(x, rows, 2, beta=2.0, delta=0.1), (logp.detach().requires_grad_(),)
    )


def test_simnpo_bfloat16_upcast_and_bad_beta():
    logp = torch.tensor([-0.5, -1.25, -3.0], dtype=torch.bfloat16)
    rows = torch.tensor([0, 1, 1])
    got = simnpo_loss(logp, rows, 2)
    assert got.dtype == torch.float32
    assert_close(got, simnpo_loss(logp.float(), rows, 2), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        simnpo_loss(logp, rows, 2, beta=0.0)


def _brute_dpo(w, wr, lo, lr, beta):
    terms = [_log_sigmoid(beta * ((a - b) - (c - d))) for a, b, c, d in zip(w, wr, lo, lr)]
    return -(2.0 / beta) * sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_dpo_matches_bruteforce_with_sequence_sums(beta):
    rng = random.Random(1)
    n_rows = 4
    rows = [0, 0, 1, 1, 1, 2, 3, 3]
    tok = [[-rng.uniform(0.0, 4.0) for _ in rows] for _ in range(4)]
    seq = [[sum(v for v, r in zip(t, rows) if r == b) for b in range(n_rows)] for t in tok]
    rt = torch.tensor(rows)
    sums = [row_sums(torch.tensor(t, dtype=torch.float64), rt, n_rows) for t in tok]
    got = dpo_loss(*sums, beta=beta)
    assert_close(got.item(), _brute_dpo(*seq, beta), **TIGHT)


def test_dpo_value_at_reference_gradient_direction_and_empty():
    z = torch.zeros(3, dtype=torch.float64)
    assert_close(dpo_loss(z, z, z, z, beta=0.1).item(), 20.0 * math.log(2.0), **TIGHT)
    win = torch.tensor([-3.0, -2.0], dtype=torch.float64, requires_grad=True)
    lose = torch.tensor([-1.0, -4.0], dtype=torch.float64, requires_grad=True)
    ref_w, ref_l = (
        torch.tensor([-2.5, -2.0], dtype=torch.float64),
        torch.tensor([-1.0, -3.0], dtype=torch.float64),
    )
    dpo_loss(win, ref_w, lose, ref_l, beta=0.5).backward()
    assert (win.grad < 0).all() and (lose.grad > 0).all()  # descent raises preferred, lowers forget
    assert torch.autograd.gradcheck(
        lambda a, b: dpo_loss(a, ref_w, b, ref_l, beta=0.5),
        (win.detach().requires_grad_(), lose.detach().requires_grad_()),
    )
    e = torch.zeros(0, requires_grad=True)
    got = dpo_loss(e, e.detach(), e, e.detach())
    assert got.item() == 0.0 and got.grad_fn is not None
    with pytest.raises(ValueError):
        dpo_loss(z, z, z[:2], z[:2])


def test_dpo_bfloat16_upcast():
    vals = [torch.tensor([-1.5, -2.25], dtype=torch.bfloat16) for _ in range(4)]
    got = dpo_loss(*vals)
    assert got.dtype == torch.float32
    assert_close(got, dpo_loss(*[v.float() for v in vals]), rtol=0, atol=0)
