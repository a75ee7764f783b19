"""UNDIAL and CE-U against float64 brute force (Python loops, math module softmax).

Tolerances: float64 vs float64 brute force over V <= 20 terms per row, a few rows: n * u ~ 1e-14,
so rtol 1e-9. float32 vs float64 (V = 20, logits of magnitude <= 5): log-softmax error ~ V * u32
~ 1e-6 relative, rtol = atol = 1e-5. bfloat16 upcast vs the same values in float32: identical ops.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from llm_unlearn.losses import ce_u_loss, undial_loss

TIGHT = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) if v != -math.inf else 0.0 for v in z]
    s = sum(e)
    return [v / s for v in e]


def _soft_ce(target, z):
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return -sum(t * (v - lse) for t, v in zip(target, z))


def _brute_undial(logits, ref, y, strength):
    vals = []
    for z, r, t in zip(logits, ref, y):
        adj = [v - strength if k == t else v for k, v in enumerate(r)]
        vals.append(_soft_ce(_softmax(adj), z))
    return sum(vals) / len(vals) if vals else 0.0


def _brute_ceu(logits, y):
    vals = []
    for z, t in zip(logits, y):
        q = _softmax([-math.inf if k == t else v for k, v in enumerate(z)])
        vals.append(_soft_ce(q, z))
    return sum(vals) / len(vals) if vals else 0.0


def _data(seed, n=6, v=20):
    rng = random.Random(seed)
    logits = [[rng.uniform(-5, 5) for _ in range(v)] for _ in range(n)]
    ref = [[rng.uniform(-5, 5) for _ in range(v)] for _ in range(n)]
    y = [rng.randrange(v) for _ in range(n)]
    return logits, ref, y


@pytest.mark.parametrize("strength", [0.0, 3.0, 10.0, 30.0])
def test_undial_matches_bruteforce(strength):
    logits, ref, y = _data(0)
    want = _brute_undial(logits, ref, y, strength)
    args = (torch.tensor(ref, dtype=torch.float64), torch.tensor(y), strength)
    assert_close(undial_loss(torch.tensor(logits, dtype=torch.float64), *args).item(), want, **TIGHT)
    got32 = undial_loss(torch.tensor(logits), torch.tensor(ref), torch.tensor(y), strength)
    assert got32.dtype == torch.float32
    assert_close(got32.item(), want, **F32)


def test_undial_gradient_is_p_minus_q_and_lowers_true_token():
    logits, ref, y = _data(1, n=3, v=8)
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(ref, dtype=torch.float64)
    yt = torch.tensor(y)
    undial_loss(z, r, yt, 10.0).backward()
    for n in range(3):
        adj = [v - 10.0 if k == y[n] else v for k, v in enumerate(ref[n])]
        expected = [(p - q) / 3.0 for p, q in zip(_softmax(logits[n]), _softmax(adj))]
        assert_close(z.grad[n].tolist(), expected, **TIGHT)
    # starting from the reference itself, a descent step lowers the true token's probability
    z2 = r.clone().requires_grad_()
    undial_loss(z2, r, yt, 10.0).backward()
    before = torch.log_softmax(z2.detach(), -1).gather(-1, yt[:, None])
    after = torch.log_softmax(z2.detach() - 1.0 * z2.grad, -1).gather(-1, yt[:, None])
    assert (after < before).all()
    assert torch.autograd.gradcheck(lambda a: undial_loss(a, r, yt, 3.0), (z.detach().requires_grad_(),))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ceu_matches_bruteforce(seed):
    logits, _, y = _data(seed)
    want = _brute_ceu(logits, y)
    assert_close(ce_u_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(y)).item(), want, **TIGHT)
    assert_close(ce_u_loss(torch.tensor(logits), torch.tensor(y)).item(), want, **F32)


def test_ceu_gradient_moves_mass_off_true_token():
    logits, _, y = _data(3, n=4, v=10)
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y)
    ce_u_loss(z, yt).backward()
    for n in range(4):
        p = _softmax(logits[n])
        q = _softmax([-math.inf if k == y[n] else v for k, v in enumerate(logits[n])])
        assert_close(z.grad[n].tolist(), [(a - b) / 4.0 for a, b in zip(p, q)], **TIGHT)
        assert z.grad[n, y[n]] > 0
    after = torch.log_softmax(z.detach() - 0.5 * z.grad, -1).gather(-1, yt[:, None])
    assert (after < torch.log_softmax(z.detach(), -1).gather(-1, yt[:, None])).all()


def test_ceu_gradient_is_the_docstrings_closed_form():
    """The docstring's formula, written out per token (not as p - q): +p(y) on the true token,
    -p(y) p(v) / (1 - p(y)) on every other token, each divided by N (the mean over rows)."""
    logits, _, y = _data(5, n=3, v=9)
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ce_u_loss(z, torch.tensor(y)).backward()
    for n in range(3):
        p = _softmax(logits[n])
        py = p[y[n]]
        want = [py if v == y[n] else -py * p[v] / (1.0 - py) for v in range(9)]
        assert_close(z.grad[n].tolist(), [w / 3.0 for w in want], **TIGHT)
        # the formula the docstring had before (-p(y) p(v)) is off by the factor 1 / (1 - p(y))
        other = next(v for v in range(9) if v != y[n])
        assert abs(float(z.grad[n, other]) * 3.0 + py * p[other]) > 1e-6 * abs(py * p[other])


def test_empty_bfloat16_and_shape_errors():
    e = torch.zeros(0, 7, requires_grad=True)
    ey = torch.zeros(0, dtype=torch.long)
    for got in (undial_loss(e, e.detach(), ey), ce_u_loss(e, ey)):
        assert got.item() == 0.0 and got.grad_fn is not None
    logits, ref, y = _data(4, n=3, v=12)
    zb, rb, yt = torch.tensor(logits).bfloat16(), torch.tensor(ref).bfloat16(), torch.tensor(y)
    assert undial_loss(zb, rb, yt).dtype == torch.float32
    assert_close(undial_loss(zb, rb, yt), undial_loss(zb.float(), rb.float(), yt), rtol=0, atol=0)
    assert_close(ce_u_loss(zb, yt), ce_u_loss(zb.float(), yt), rtol=0, atol=0)
    with pytest.raises(ValueError):
        ce_u_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        undial_loss(torch.zeros(2, 5), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        undial_loss(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), strength=-1)


def test_undial_reference_log_probs_serve_as_logits():
    # a cache stores log_softmax(ref_logits): a per-row shift, which the target's softmax ignores
    logits, ref, y = _data(5, n=4, v=16)
    z, r, yt = (
        torch.tensor(logits, dtype=torch.float64),
        torch.tensor(ref, dtype=torch.float64),
        torch.tensor(y),
    )
    assert_close(undial_loss(z, torch.log_softmax(r, -1), yt), undial_loss(z, r, yt), **TIGHT)
