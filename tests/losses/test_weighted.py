"""WGA and SatImp against float64 brute force (Python loops, math module).

Tolerances: float64 vs float64 brute force, one exp / power per token and one mean: rtol 1e-9.
bfloat16 inputs upcast to float32 vs the same values in float32: identical operations, exact.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from llm_unlearn.losses import gradient_ascent_loss, satimp_loss, wga_loss

TIGHT = dict(rtol=1e-9, atol=1e-12)


def _brute(logp, mask, weight):
    vals = [weight(math.exp(lp)) * lp for lp, m in zip(logp, mask) if m]
    return sum(vals) / len(vals) if vals else 0.0


def _data(seed=0, n=12):
    rng = random.Random(seed)
    logp = [-rng.uniform(1e-4, 8.0) for _ in range(n)]
    mask = [rng.random() < 0.7 for _ in range(n)]
    return logp, mask


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_wga_matches_bruteforce(beta):
    logp, mask = _data()
    got = wga_loss(torch.tensor(logp, dtype=torch.float64), beta, torch.tensor(mask))
    assert_close(got.item(), _brute(logp, mask, lambda p: p**beta), **TIGHT)
    got_all = wga_loss(torch.tensor(logp, dtype=torch.float64), beta)
    assert_close(got_all.item(), _brute(logp, [True] * len(logp), lambda p: p**beta), **TIGHT)


@pytest.mark.parametrize("beta1,beta2", [(5.0, 1.0), (1.0, 0.0), (0.5, 2.5)])
def test_satimp_matches_bruteforce(beta1, beta2):
    logp, mask = _data(1)
    got = satimp_loss(torch.tensor(logp, dtype=torch.float64), beta1, beta2, torch.tensor(mask))
    assert_close(got.item(), _brute(logp, mask, lambda p: p**beta1 * (1.0 - p) ** beta2), **TIGHT)


def test_weights_are_detached_and_descent_lowers_logp():
    logp = torch.tensor([-0.1, -1.0, -5.0], dtype=torch.float64, requires_grad=True)
    for fn, weight in [
        (lambda x: wga_loss(x, 2.0), lambda p: p**2.0),
        (lambda x: satimp_loss(x, 5.0, 1.0), lambda p: p**5.0 * (1.0 - p)),
    ]:
        logp.grad = None
        fn(logp).backward()
        # gradient = weight / n exactly (the weight is a constant for autograd)
        expected = [weight(math.exp(v)) / 3.0 for v in logp.detach().tolist()]
        assert_close(logp.grad.tolist(), expected, **TIGHT)
        assert (logp.grad > 0).all()  # descending lowers every forget log-prob
        with torch.no_grad():
            stepped = logp - 0.1 * logp.grad
        assert (stepped < logp).all()
    # beta = 0 is plain gradient ascent
    assert_close(wga_loss(logp, 0.0), gradient_ascent_loss(logp), rtol=0, atol=0)


def test_empty_bfloat16_and_bad_exponent():
    for fn in (wga_loss, satimp_loss):
        e = torch.zeros(0, requires_grad=True)
        got = fn(e)
        assert got.item() == 0.0 and got.grad_fn is not None
        m = torch.tensor([-0.5, -2.0])
        got = fn(m, mask=torch.tensor([False, False]))
        assert got.item() == 0.0
        b = torch.tensor([-0.3, -1.7, -4.0], dtype=torch.bfloat16)
        assert fn(b).dtype == torch.float32
        assert_close(fn(b), fn(b.float()), rtol=0, atol=0)
    with pytest.raises(ValueError):
        wga_loss(torch.zeros(2), beta=-1.0)
    with pytest.raises(ValueError):
        satimp_loss(torch.zeros(2), beta1=float("nan"))


def test_satimp_small_p_no_cancellation():
    # p = 1e-30: (1 - p) computed as -expm1(log p) stays exactly 1; the weight is p**beta1
    lp = torch.tensor([math.log(1e-30)], dtype=torch.float64)
    assert_close(satimp_loss(lp, 1.0, 3.0).item(), 1e-30 * math.log(1e-30), **TIGHT)
