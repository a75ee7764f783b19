"""Tests for llm_unlearn.losses: every loss against a brute-force float64 reference written with
explicit Python loops (math module, no torch reductions), plus properties (masking, empty input,
gradients, non-negativity, alpha -> 1 continuity, monotonicity in alpha, large logits).

Tolerances (u = unit roundoff: 2**-53 ~ 1.1e-16 in float64, 2**-24 ~ 6e-8 in float32; V <= 50 and at
most a few dozen positions in these tests, so every reduction has n <= ~10**3 terms):
- TIGHT (float64 vs the float64 brute force): n * u ~ 1e-13 for the sums; a Renyi divergence divides
  by (alpha - 1), which multiplies that by 1 / |alpha - 1| <= 1e3 for ALPHAS (1 +- 1e-3): ~1e-10 at
  worst, so 1e-9 relative (1e-10 absolute for values near 0). Tests at 1 +- 1e-6 state their own.
- F32 (float32 vs float64): n * u ~ 50 * 6e-8 ~ 3e-6 for a V=50 log-softmax, plus the masked mean:
  1e-5 relative and absolute.
- Same-dtype comparisons of two float32 code paths (chunked vs unchunked, bf16 inputs upcast): the
  same math in another order, sqrt(n) * u * |value| ~ 1e-6: rtol = atol = 1e-6.
- rtol = atol = 0 where the two sides are the same operations (the KL branch of renyi at alpha = 1,
  an all-absent term, F.kl_div's identical reduction)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from llm_unlearn.errors import NonFiniteLossError
from llm_unlearn.losses import (
    check_finite,
    gradient_ascent_loss,
    kl_divergence,
    legacy_token_renyi,
    nll_loss,
    npo_loss,
    reference_topk,
    renyi_divergence,
    renyi_divergence_topk,
    row_mean_nll,
    row_sums,
    sugd_loss,
    token_log_probs,
)
from oracles import shift_for_causal_lm, target_log_probs


def _flat(logp, mask):
    """The trainer's flat view of a padded [B, T] tensor: the valid values [N] and their rows [N]."""
    return logp[mask], mask.nonzero(as_tuple=True)[0]


def sequence_log_probs(logp, mask):
    """The production per-sequence sum (losses.row_sums) on the padded layout of these tests."""
    values, rows = _flat(logp, mask.bool())
    return row_sums(values, rows, logp.shape[0])


def per_sample_mean_nll(logp, mask):
    """The production per-row mean NLL (losses.row_mean_nll) on the padded layout of these tests."""
    values, rows = _flat(logp, mask.bool())
    return row_mean_nll(values, rows, logp.shape[0])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: thread start-up would dominate (and the CI box is shared)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


ALPHAS = [0.1, 0.5, 0.9, 1.0 - 1e-3, 1.0, 1.0 + 1e-3, 1.5, 2.0, 5.0]
TIGHT = {"rtol": 1e-9, "atol": 1e-10}  # float64 against float64 brute force
F32 = {"rtol": 1e-5, "atol": 1e-5}  # float32 against float64 brute force


# --------------------------------------------------------------------------------------------------
# brute-force references: Python floats, explicit loops
# --------------------------------------------------------------------------------------------------


def bf_log_softmax(row):
    m = max(row)
    z = 0.0
    for x in row:
        z += math.exp(x - m)
    return [x - m - math.log(z) for x in row]


def bf_renyi_probs(p, q, alpha):
    """D_alpha(p || q) for two lists of probabilities (buckets with p == 0 skipped)."""
    if alpha == 1.0:
        total = 0.0
        for pi, qi in zip(p, q):
            if pi > 0:
                total += pi * math.log(pi / qi)
        return total
    total = 0.0
    for pi, qi in zip(p, q):
        if pi > 0:
            total += pi**alpha * qi ** (1.0 - alpha)
    return math.log(total) / (alpha - 1.0)


def bf_renyi_logits(row_p, row_q, alpha):
    """D_alpha(softmax(row_p) || softmax(row_q)) in log-space (safe for logits of size 1e4)."""
    lp, lq = bf_log_softmax(row_p), bf_log_softmax(row_q)
    if alpha == 1.0:
        total = 0.0
        for a, b in zip(lp, lq):
            total += math.exp(a) * (a - b)
        return total
    terms = [alpha * a + (1.0 - alpha) * b for a, b in zip(lp, lq)]
    m = max(terms)
    s = 0.0
    for t in terms:
        s += math.exp(t - m)
    return (m + math.log(s)) / (alpha - 1.0)


def bf_mean_divergence(logits, ref_logits, mask, alpha):
    """logits [..., V] nested lists flattened to rows with their mask values."""
    lg = logits.reshape(-1, logits.shape[-1]).tolist()
    rf = ref_logits.reshape(-1, ref_logits.shape[-1]).tolist()
    mk = mask.reshape(-1).tolist()
    total, count = 0.0, 0
    for row_p, row_q, valid in zip(lg, rf, mk):
        if valid:
            total += bf_renyi_logits(row_p, row_q, alpha)
            count += 1
    return total / count if count else 0.0


def bf_target_log_probs(logits, labels, ignore_index=-100):
    b_size, t_size, _ = logits.shape
    out = [[0.0] * (t_size - 1) for _ in range(b_size)]
    mask = [[False] * (t_size - 1) for _ in range(b_size)]
    for b in range(b_size):
        for t in range(t_size - 1):
            y = int(labels[b, t + 1])
            if y != ignore_index:
                out[b][t] = bf_log_softmax(logits[b, t].tolist())[y]
                mask[b][t] = True
    return torch.tensor(out, dtype=torch.float64), torch.tensor(mask)


def rand_logits(*shape, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def rand_mask(*shape, seed=0, p=0.6):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.rand(*shape, generator=g) < p


def zero_exactly(x):
    assert x.dim() == 0 and not torch.isnan(x) and x.item() == 0.0


# --------------------------------------------------------------------------------------------------
# target log-probs
# --------------------------------------------------------------------------------------------------


def test_shift_for_causal_lm():
    logits = torch.arange(2 * 4 * 3).reshape(2, 4, 3)
    labels = torch.arange(8).reshape(2, 4)
    s_logits, s_labels = shift_for_causal_lm(logits, labels)
    assert s_logits.shape == (2, 3, 3) and s_labels.shape == (2, 3)
    assert torch.equal(s_logits, logits[:, :3]) and torch.equal(s_labels, labels[:, 1:])


LABELS = torch.tensor([[-100, -100, 3, 0, 4], [-100, 2, 1, -100, -100]])  # prompt + padding masked


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_target_log_probs_matches_bruteforce(dtype):
    logits = rand_logits(2, 5, 5, seed=1, dtype=dtype)
    logp, mask = target_log_probs(logits, LABELS)
    ref, ref_mask = bf_target_log_probs(logits.double(), LABELS)
    assert logp.shape == (2, 4) and mask.shape == (2, 4) and mask.dtype == torch.bool
    assert torch.equal(mask, ref_mask)
    assert logp.dtype == dtype
    tol = TIGHT if dtype == torch.float64 else F32
    assert_close(logp.double(), ref, **tol)
    assert (logp[~mask] == 0).all()


def test_target_log_probs_upcasts_bfloat16():
    logits = rand_logits(2, 5, 5, seed=2).to(torch.bfloat16)
    logp, _ = target_log_probs(logits, LABELS)
    assert logp.dtype == torch.float32
    ref, _ = bf_target_log_probs(logits.double(), LABELS)
    assert_close(logp.double(), ref, rtol=1e-6, atol=1e-6)


def test_target_log_probs_custom_ignore_index_and_masked_positions_do_not_matter():
    labels = LABELS.masked_fill(LABELS == -100, 7)
    logits = rand_logits(2, 5, 5, seed=3)
    logp, mask = target_log_probs(logits, labels, ignore_index=7)
    ref, _ = target_log_probs(logits, LABELS)
    assert_close(logp, ref, **TIGHT)
    # logits at positions whose next label is ignored do not affect anything
    garbage = logits.clone()
    garbage[:, :-1][~mask] = 1e6
    assert_close(target_log_probs(garbage, LABELS)[0], ref, **TIGHT)


def test_target_log_probs_gradient_only_at_valid_positions():
    logits = rand_logits(2, 5, 5, seed=4).requires_grad_()
    logp, mask = target_log_probs(logits, LABELS)
    logp.sum().backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    valid_rows = torch.zeros(2, 5, dtype=torch.bool)
    valid_rows[:, :-1] = mask
    assert (grad[~valid_rows] == 0).all()
    assert (grad[valid_rows].abs().sum(-1) > 0).all()
    # d log softmax(z)[y] / dz = onehot(y) - softmax(z)
    b, t = 0, 2
    expected = -torch.softmax(logits.detach()[b, t], -1)
    expected[int(LABELS[b, t + 1])] += 1
    assert_close(grad[b, t], expected, **TIGHT)


def test_target_log_probs_all_masked_and_length_one():
    logits = rand_logits(2, 3, 5, seed=5).requires_grad_()
    labels = torch.full((2, 3), -100)
    logp, mask = target_log_probs(logits, labels)
    assert not mask.any() and (logp == 0).all() and not torch.isnan(logp).any()
    zero_exactly(nll_loss(logp, mask))
    logp, mask = target_log_probs(logits[:, :1], labels[:, :1])
    assert logp.shape == (2, 0) and mask.shape == (2, 0)


def test_sequence_log_probs_bruteforce():
    logits = rand_logits(2, 5, 5, seed=6)
    logp, mask = target_log_probs(logits, LABELS)
    ref, ref_mask = bf_target_log_probs(logits, LABELS)
    expected = []
    for b in range(2):
        s = 0.0
        for t in range(4):
            if ref_mask[b, t]:
                s += float(ref[b, t])
        expected.append(s)
    assert_close(sequence_log_probs(logp, mask), torch.tensor(expected, dtype=torch.float64), **TIGHT)
    # a NaN at a masked position does not leak
    logp2 = logp.clone()
    logp2[~mask] = float("nan")
    assert_close(sequence_log_probs(logp2, mask), torch.tensor(expected, dtype=torch.float64), **TIGHT)
    assert (sequence_log_probs(logp, torch.zeros_like(mask)) == 0).all()


# --------------------------------------------------------------------------------------------------
# NLL, NPO, baselines
# --------------------------------------------------------------------------------------------------


def test_nll_loss_bruteforce_with_and_without_mask():
    logp = -rand_logits(3, 4, seed=7).abs()
    mask = rand_mask(3, 4, seed=7)
    total, count = 0.0, 0
    for i in range(3):
        for j in range(4):
            if mask[i, j]:
                total -= float(logp[i, j])
                count += 1
    assert_close(nll_loss(logp, mask), torch.tensor(total / count, dtype=torch.float64), **TIGHT)
    total_all = 0.0
    for v in logp.reshape(-1).tolist():
        total_all -= v
    assert_close(nll_loss(logp), torch.tensor(total_all / 12, dtype=torch.float64), **TIGHT)
    assert_close(gradient_ascent_loss(logp), torch.tensor(-total_all / 12, dtype=torch.float64), **TIGHT)
    assert_close(gradient_ascent_loss(logp, mask), torch.tensor(-total / count, dtype=torch.float64), **TIGHT)


def test_nll_loss_empty_and_masked_out_values_ignored():
    x = torch.randn(2, 3, requires_grad=True)
    out = nll_loss(x, torch.zeros(2, 3, dtype=torch.bool))
    zero_exactly(out)
    assert out.grad_fn is not None
    out.backward()
    assert (x.grad == 0).all()
    empty = torch.zeros(0, requires_grad=True)
    zero_exactly(nll_loss(empty))
    zero_exactly(gradient_ascent_loss(empty))
    assert nll_loss(empty).grad_fn is not None
    nan_there = torch.tensor([-1.0, float("nan"), -3.0])
    assert_close(nll_loss(nan_there, torch.tensor([True, False, True])), torch.tensor(2.0), rtol=0, atol=0)


def test_nll_loss_upcasts():
    x = torch.tensor([-1.0, -2.0], dtype=torch.bfloat16)
    assert nll_loss(x).dtype == torch.float32


def test_gradient_ascent_lowers_likelihood_when_minimized():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    gradient_ascent_loss(logp).backward()
    assert (logp.grad > 0).all()  # a descent step lowers logp, i.e. raises the forget NLL


def bf_npo(logp, ref, beta):
    total, n = 0.0, 0
    for a, b in zip(logp.reshape(-1).tolist(), ref.reshape(-1).tolist()):
        z = beta * (b - a)
        total += -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))  # log sigmoid(z)
        n += 1
    return -(2.0 / beta) * total / n


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("shape", [(7,), (3,), (2, 3)])
def test_npo_loss_bruteforce(beta, shape):
    logp = -rand_logits(*shape, seed=8).abs() * 10
    ref = -rand_logits(*shape, seed=9).abs() * 10
    assert_close(
        npo_loss(logp, ref, beta), torch.tensor(bf_npo(logp, ref, beta), dtype=torch.float64), **TIGHT
    )


def test_npo_loss_value_at_reference_gradient_and_extremes():
    beta = 0.1
    logp = torch.tensor([-3.0, -20.0, -0.5], dtype=torch.float64, requires_grad=True)
    ref = logp.detach().clone()
    loss = npo_loss(logp, ref, beta)
    assert_close(loss, torch.tensor(2 / beta * math.log(2), dtype=torch.float64), **TIGHT)
    loss.backward()
    # dL/dlogp_i = (2/N) sigmoid(beta (logp_i - ref_i))
    assert_close(logp.grad, torch.full((3,), 2 / 3 * 0.5, dtype=torch.float64), **TIGHT)
    huge = torch.tensor([1e4, -1e4, 0.0])
    out = npo_loss(huge, -huge, 10.0)
    assert torch.isfinite(out)
    assert npo_loss(torch.tensor([-1e4]), torch.tensor([0.0]), 1.0).item() < 1e-30  # forgotten: ~0


def test_npo_loss_empty_and_bad_beta():
    empty = torch.zeros(0, requires_grad=True)
    out = npo_loss(empty, torch.zeros(0), 0.1)
    zero_exactly(out)
    assert out.grad_fn is not None
    for beta in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="beta"):
            npo_loss(torch.zeros(2), torch.zeros(2), beta)
    with pytest.raises(ValueError):
        npo_loss(torch.zeros(2), torch.zeros(3), 0.1)


def test_npo_loss_bfloat16_upcast():
    out = npo_loss(
        torch.tensor([-1.0], dtype=torch.bfloat16), torch.tensor([-2.0], dtype=torch.bfloat16), 1.0
    )
    assert out.dtype == torch.float32


def test_per_sample_mean_nll_and_sugd_bruteforce():
    logp = -rand_logits(3, 4, seed=10).abs()
    mask = torch.tensor([[True, True, False, False], [False, False, False, False], [True, True, True, True]])
    expected = []
    for i in range(3):
        s, c = 0.0, 0
        for j in range(4):
            if mask[i, j]:
                s -= float(logp[i, j])
                c += 1
        expected.append(s / c if c else 0.0)
    per = per_sample_mean_nll(logp, mask)
    assert_close(per, torch.tensor(expected, dtype=torch.float64), **TIGHT)
    assert per[1].item() == 0.0
    factors = [-1.0, 0.5, 0.5]
    sugd = 0.0
    for f, v in zip(factors, expected):
        sugd += f * v
    assert_close(sugd_loss(per, factors), torch.tensor(sugd / 3, dtype=torch.float64), **TIGHT)
    assert_close(sugd_loss(per, torch.tensor(factors)), torch.tensor(sugd / 3, dtype=torch.float64), **TIGHT)
    zero_exactly(sugd_loss(torch.zeros(0), []))
    with pytest.raises(ValueError):
        sugd_loss(per, [1.0, 2.0])


def test_per_sample_mean_nll_gradient():
    logp = (-torch.rand(2, 3, dtype=torch.float64)).requires_grad_()
    mask = torch.tensor([[True, False, True], [False, False, False]])
    sugd_loss(per_sample_mean_nll(logp, mask), [-1.0, 0.5]).backward()
    expected = torch.tensor([[0.5 / 2, 0.0, 0.5 / 2], [0.0, 0.0, 0.0]], dtype=torch.float64)  # -(-1)/2 /B
    assert_close(logp.grad, expected, **TIGHT)


# --------------------------------------------------------------------------------------------------
# Rényi / KL over the full vocabulary
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_renyi_matches_bruteforce_float64(alpha):
    logits = rand_logits(2, 3, 5, seed=11)
    ref_logits = rand_logits(2, 3, 5, seed=12)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    expected = bf_mean_divergence(logits, ref_logits, mask, alpha)
    assert_close(
        renyi_divergence(logits, ref_logits, mask, alpha),
        torch.tensor(expected, dtype=torch.float64),
        **TIGHT,
    )


@pytest.mark.parametrize("alpha", ALPHAS)
def test_renyi_matches_bruteforce_float32_and_bfloat16(alpha):
    logits = rand_logits(2, 3, 5, seed=13)
    ref_logits = rand_logits(2, 3, 5, seed=14)
    mask = rand_mask(2, 3, seed=13)
    expected = torch.tensor(bf_mean_divergence(logits, ref_logits, mask, alpha))
    out = renyi_divergence(logits.float(), ref_logits.float(), mask, alpha)
    assert out.dtype == torch.float32
    assert_close(out, expected.float(), **F32)
    bf16 = renyi_divergence(logits.bfloat16(), ref_logits.bfloat16(), mask, alpha)
    assert bf16.dtype == torch.float32
    expected_bf16 = bf_mean_divergence(
        logits.bfloat16().double(), ref_logits.bfloat16().double(), mask, alpha
    )
    assert_close(bf16, torch.tensor(expected_bf16, dtype=torch.float32), **F32)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_renyi_answer_only_rows_shape(alpha):
    logits = rand_logits(2, 3, 5, seed=15)
    ref_logits = rand_logits(2, 3, 5, seed=16)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    rows, ref_rows = logits[mask], ref_logits[mask]
    full = renyi_divergence(logits, ref_logits, mask, alpha)
    assert_close(renyi_divergence(rows, ref_rows, torch.ones(4, dtype=torch.bool), alpha), full, **TIGHT)
    assert_close(renyi_divergence(rows, ref_rows, None, alpha), full, **TIGHT)
    expected = bf_mean_divergence(rows, ref_rows, torch.ones(4, dtype=torch.bool), alpha)
    assert_close(full, torch.tensor(expected, dtype=torch.float64), **TIGHT)


def test_kl_divergence_bruteforce_and_equals_renyi_alpha_one():
    logits = rand_logits(2, 3, 5, seed=17)
    ref_logits = rand_logits(2, 3, 5, seed=18)
    mask = rand_mask(2, 3, seed=17)
    lg, rf, mk = logits.reshape(-1, 5).tolist(), ref_logits.reshape(-1, 5).tolist(), mask.reshape(-1).tolist()
    total, count = 0.0, 0
    for row_p, row_q, valid in zip(lg, rf, mk):
        if not valid:
            continue
        lp, lq = bf_log_softmax(row_p), bf_log_softmax(row_q)
        for v in range(5):
            total += math.exp(lp[v]) * (lp[v] - lq[v])
        count += 1
    kl = kl_divergence(logits, ref_logits, mask)
    assert_close(kl, torch.tensor(total / count, dtype=torch.float64), **TIGHT)
    assert_close(kl, renyi_divergence(logits, ref_logits, mask, 1.0), rtol=0, atol=0)
    # matches torch's own KL as a second opinion
    lp = torch.log_softmax(logits[mask], -1)
    lq = torch.log_softmax(ref_logits[mask], -1)
    torch_kl = F.kl_div(lq, lp, log_target=True, reduction="sum") / lp.shape[0]
    assert_close(kl, torch_kl, **TIGHT)


@pytest.mark.parametrize("alpha", ALPHAS + [1.0 + 1e-6, 10.0])
def test_divergences_nonnegative_on_random_inputs(alpha):
    for seed in range(25):
        scale = [0.1, 1.0, 5.0, 20.0][seed % 4]
        logits = rand_logits(3, 4, 7, seed=seed, scale=scale, dtype=torch.float32)
        ref_logits = rand_logits(3, 4, 7, seed=seed + 500, scale=scale, dtype=torch.float32)
        # also nearly-equal inputs, where round-off is most likely to go negative
        near = ref_logits + 1e-6 * rand_logits(3, 4, 7, seed=seed + 900, dtype=torch.float32)
        for other in (ref_logits, near):
            assert renyi_divergence(logits, other, None, alpha).item() >= 0.0
            assert renyi_divergence(near, ref_logits, None, alpha).item() >= 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("alpha", ALPHAS + [1.0 + 1e-6, 1.0 - 1e-6, 10.0])
def test_divergence_exactly_zero_for_identical_inputs(alpha, dtype):
    logits = rand_logits(2, 3, 6, seed=19, scale=8.0, dtype=dtype)
    out = renyi_divergence(logits, logits.clone(), None, alpha)
    zero_exactly(out)
    zero_exactly(kl_divergence(logits, logits.clone(), None))


@pytest.mark.parametrize("delta", [1e-3, 1e-6])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_renyi_continuous_at_alpha_one(delta, sign, dtype):
    logits = rand_logits(4, 9, seed=20, dtype=dtype)
    ref_logits = rand_logits(4, 9, seed=21, dtype=dtype)
    mask = torch.ones(4, dtype=torch.bool)
    alpha = 1.0 + sign * delta
    kl = kl_divergence(logits, ref_logits, mask).double()
    out = renyi_divergence(logits, ref_logits, mask, alpha).double()
    exact = torch.tensor(
        bf_mean_divergence(logits.double(), ref_logits.double(), mask, alpha), dtype=torch.float64
    )
    # the float64 brute force at this alpha has relative error ~1e-16 / delta, far below these tolerances
    rtol = 1e-5 if dtype == torch.float32 else 1e-8
    assert_close(out, exact, rtol=rtol, atol=0)
    # D_alpha - KL = delta * Var_P[log P/Q] / 2 + O(delta^2): tiny, with the sign of (alpha - 1)
    assert_close(out, kl, rtol=10 * delta, atol=0)
    if delta == 1e-3:
        assert (out - kl).item() * sign > 0


@pytest.mark.parametrize("switch", [0.9, 1.1])
def test_renyi_continuous_across_internal_branch_switch(switch):
    # near alpha = 1 a second, cancellation-free formula takes over; the two must agree where they meet
    logits = rand_logits(3, 9, seed=60, dtype=torch.float32)
    ref_logits = rand_logits(3, 9, seed=61, dtype=torch.float32)
    for alpha in (switch - 1e-6, switch, switch + 1e-6):
        out = renyi_divergence(logits, ref_logits, None, alpha).double()
        exact = bf_mean_divergence(
            logits.double(), ref_logits.double(), torch.ones(3, dtype=torch.bool), alpha
        )
        assert_close(out, torch.tensor(exact, dtype=torch.float64), rtol=1e-5, atol=0)


def test_renyi_monotone_non_decreasing_in_alpha():
    grid = [0.05, 0.2, 0.5, 0.9, 0.999, 0.999999, 1.0, 1.000001, 1.001, 1.1, 1.5, 2.0, 3.0, 10.0, 50.0]
    for seed in range(10):
        for dtype, slack in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
            # one row, so the property is checked per row, not only for the mean
            logits = rand_logits(1, 8, seed=seed, scale=2.0 + seed % 3, dtype=dtype)
            ref_logits = rand_logits(1, 8, seed=seed + 77, dtype=dtype)
            values = [renyi_divergence(logits, ref_logits, None, a).item() for a in grid]
            for lo, hi in zip(values, values[1:]):
                assert lo <= hi + slack * max(1.0, abs(hi)), (seed, dtype, values)


@pytest.mark.parametrize("alpha", [0.5, 1.0 - 1e-6, 1.0, 1.0 + 1e-3, 1.0 + 1e-6, 2.0, 10.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_renyi_large_logits_are_safe(alpha, dtype):
    logits = rand_logits(2, 3, 50, seed=22, scale=1e4, dtype=dtype).requires_grad_()
    ref_logits = rand_logits(2, 3, 50, seed=23, scale=1e4, dtype=dtype)
    mask = torch.tensor([[True, True, False], [True, False, True]])
    out = renyi_divergence(logits, ref_logits, mask, alpha)
    assert torch.isfinite(out) and out.item() >= 0
    out.backward()
    assert torch.isfinite(logits.grad).all()
    expected = bf_mean_divergence(logits.detach().double(), ref_logits.double(), mask, alpha)
    # logits of scale 1e4 in float32: each logit carries u * 1e4 ~ 6e-4 of rounding, and the divergence
    # (a difference of such log-probs) inherits it: rtol 1e-3, atol 1e-2 (a few such roundings summed)
    assert_close(out.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-3, atol=1e-2)
    same = renyi_divergence(logits.detach(), logits.detach(), mask, alpha)
    zero_exactly(same)


@pytest.mark.parametrize("alpha", [0.0, -0.5, float("nan"), float("inf")])
def test_renyi_bad_alpha_raises(alpha):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="alpha"):
        renyi_divergence(x, x, None, alpha)
    with pytest.raises(ValueError, match="alpha"):
        renyi_divergence_topk(x, x[:, :1], torch.zeros(2, 1, dtype=torch.long), None, alpha)
    with pytest.raises(ValueError, match="alpha"):
        legacy_token_renyi(x, x, alpha)


def test_renyi_shape_errors():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError):
        renyi_divergence(x, torch.zeros(2, 3, 5), None, 2.0)
    with pytest.raises(ValueError):
        renyi_divergence(x, x, torch.ones(2, 4, dtype=torch.bool), 2.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_renyi_masked_positions_do_not_affect_result(alpha):
    logits = rand_logits(2, 3, 5, seed=24)
    ref_logits = rand_logits(2, 3, 5, seed=25)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    base = renyi_divergence(logits, ref_logits, mask, alpha)
    bad_logits, bad_ref = logits.clone().requires_grad_(False), ref_logits.clone()
    bad_logits[~mask] = float("nan")
    bad_ref[~mask] = float("inf")
    bad_logits.requires_grad_()
    out = renyi_divergence(bad_logits, bad_ref, mask, alpha)
    assert_close(out, base, rtol=0, atol=0)
    out.backward()
    assert (bad_logits.grad[~mask] == 0).all() and torch.isfinite(bad_logits.grad).all()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.0 + 1e-6, 2.0])
def test_renyi_empty_mask_is_exact_zero_with_grad(alpha):
    logits = rand_logits(2, 3, 5, seed=26).requires_grad_()
    ref_logits = rand_logits(2, 3, 5, seed=27)
    none = torch.zeros(2, 3, dtype=torch.bool)
    for fn in (
        lambda: renyi_divergence(logits, ref_logits, none, alpha),
        lambda: kl_divergence(logits, ref_logits, none),
        lambda: renyi_divergence_topk(
            logits, ref_logits[..., :2], torch.zeros(2, 3, 2, dtype=torch.long), none, alpha
        ),
    ):
        out = fn()
        zero_exactly(out)
        assert out.grad_fn is not None
        logits.grad = None
        out.backward()
        assert (logits.grad == 0).all()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.0 + 1e-6, 1.0 - 1e-3, 2.0])
def test_renyi_gradcheck(alpha):
    logits = rand_logits(3, 4, seed=28).requires_grad_()
    ref_logits = rand_logits(3, 4, seed=29)
    mask = torch.tensor([True, False, True])
    assert torch.autograd.gradcheck(lambda x: renyi_divergence(x, ref_logits, mask, alpha), (logits,))


def test_renyi_gradient_pushes_towards_reference():
    logits = rand_logits(2, 6, seed=30, dtype=torch.float32).requires_grad_()
    ref_logits = rand_logits(2, 6, seed=31, dtype=torch.float32)
    start = renyi_divergence(logits, ref_logits, None, 2.0).item()
    for _ in range(50):
        (grad,) = torch.autograd.grad(renyi_divergence(logits, ref_logits, None, 2.0), logits)
        with torch.no_grad():
            logits -= 0.5 * grad
    assert renyi_divergence(logits, ref_logits, None, 2.0).item() < 0.1 * start


# --------------------------------------------------------------------------------------------------
# top-k reference
# --------------------------------------------------------------------------------------------------


def bf_topk_divergence(logits, ref_logits, k, mask, alpha):
    """Bucketed divergence from full reference logits: k reference-top-k buckets + one tail bucket."""
    lg = logits.reshape(-1, logits.shape[-1]).tolist()
    rf = ref_logits.reshape(-1, ref_logits.shape[-1]).tolist()
    mk = mask.reshape(-1).tolist()
    total, count = 0.0, 0
    for row_p, row_q, valid in zip(lg, rf, mk):
        if not valid:
            continue
        p = [math.exp(v) for v in bf_log_softmax(row_p)]
        q = [math.exp(v) for v in bf_log_softmax(row_q)]
        order = sorted(range(len(q)), key=lambda v: -q[v])
        top = order[:k]
        p_b = [p[v] for v in top]
        q_b = [q[v] for v in top]
        if k < len(q):
            p_tail, q_tail = 0.0, 0.0
            for v in range(len(q)):
                if v not in top:
                    p_tail += p[v]
                    q_tail += q[v]
            p_b.append(p_tail)
            q_b.append(q_tail)
        total += bf_renyi_probs(p_b, q_b, alpha)
        count += 1
    return total / count if count else 0.0


def topk_of(ref_logits, k):
    values, indices, _ = reference_topk(ref_logits, k)
    return values, indices


def test_reference_topk_bruteforce():
    ref_logits = rand_logits(2, 3, 6, seed=50)
    for k in (1, 4, 6):
        values, indices, tail = reference_topk(ref_logits, k)
        assert values.shape == indices.shape == (2, 3, k) and tail.shape == (2, 3)
        for b in range(2):
            for t in range(3):
                lq = bf_log_softmax(ref_logits[b, t].tolist())
                order = sorted(range(6), key=lambda v: -lq[v])[:k]
                assert indices[b, t].tolist() == order
                assert_close(values[b, t], torch.tensor([lq[v] for v in order], dtype=torch.float64), **TIGHT)
                rest = 0.0
                for v in range(6):
                    if v not in order:
                        rest += math.exp(lq[v])
                if k == 6:
                    assert tail[b, t].item() == -math.inf
                else:
                    assert_close(tail[b, t], torch.tensor(math.log(rest), dtype=torch.float64), **TIGHT)
    big = rand_logits(4, 30, seed=51, scale=1e4, dtype=torch.float32)
    assert torch.isfinite(reference_topk(big, 3)[2]).all()  # log-space: no underflow to -inf
    assert reference_topk(big.bfloat16(), 3)[0].dtype == torch.float32
    for bad in (0, 31, 2.0):
        with pytest.raises(ValueError):
            reference_topk(big, bad)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_matches_bruteforce(alpha, k):
    logits = rand_logits(2, 3, 6, seed=32)
    ref_logits = rand_logits(2, 3, 6, seed=33)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    vals, idx = topk_of(ref_logits, k)
    out = renyi_divergence_topk(logits, vals, idx, mask, alpha, min_tail_prob=0.0)
    expected = bf_topk_divergence(logits, ref_logits, k, mask, alpha)
    assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-10)
    floored = renyi_divergence_topk(logits, vals, idx, mask, alpha)  # tails here are >> the default floor
    assert_close(floored, out, **TIGHT)
    _, _, tail = reference_topk(ref_logits, k)
    exact_tail = renyi_divergence_topk(logits, vals, idx, mask, alpha, ref_tail_logprobs=tail)
    assert_close(exact_tail, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="ref_tail_logprobs"):
        renyi_divergence_topk(logits, vals, idx, mask, alpha, ref_tail_logprobs=tail[0])


@pytest.mark.parametrize("alpha", ALPHAS)
def test_topk_equals_full_divergence_when_k_is_vocab(alpha):
    logits = rand_logits(2, 3, 5, seed=34)
    ref_logits = rand_logits(2, 3, 5, seed=35)
    mask = rand_mask(2, 3, seed=34)
    vals, idx = topk_of(ref_logits, 5)
    full = renyi_divergence(logits, ref_logits, mask, alpha)
    assert_close(renyi_divergence_topk(logits, vals, idx, mask, alpha), full, **TIGHT)
    # order of the k indices does not matter
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert_close(renyi_divergence_topk(logits, vals[..., perm], idx[..., perm], mask, alpha), full, **TIGHT)


@pytest.mark.parametrize("alpha", ALPHAS + [10.0])
def test_topk_is_lower_bound_on_full_divergence(alpha):
    for seed in range(15):
        dtype = torch.float64 if seed % 2 else torch.float32
        logits = rand_logits(2, 3, 12, seed=seed, dtype=dtype)
        ref_logits = rand_logits(2, 3, 12, seed=seed + 300, dtype=dtype)
        full = renyi_divergence(logits, ref_logits, None, alpha).item()
        for k in (1, 2, 5, 11):
            vals, idx, tail = reference_topk(ref_logits, k)
            rtol = 1e-12 if dtype == torch.float64 else 1e-5
            exact_tail = renyi_divergence_topk(logits, vals, idx, None, alpha, ref_tail_logprobs=tail).item()
            assert 0.0 <= exact_tail <= full * (1 + rtol) + 1e-12, (seed, k, exact_tail, full)
            if dtype == torch.float64:  # tail derived as 1 - sum(top-k): fine in float64 only (see docstring)
                derived = renyi_divergence_topk(logits, vals, idx, None, alpha, min_tail_prob=0.0).item()
                assert_close(derived, exact_tail, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_topk_exact_tail_float32_matches_bruteforce_where_derived_tail_cannot(alpha):
    # seed chosen so that a reference tail is ~3e-7 while the model keeps ~5% there
    logits = rand_logits(2, 3, 12, seed=0, dtype=torch.float32)
    ref_logits = rand_logits(2, 3, 12, seed=300, dtype=torch.float32)
    mask = torch.ones(2, 3, dtype=torch.bool)
    vals, idx, tail = reference_topk(ref_logits, 11)
    expected = bf_topk_divergence(logits.double(), ref_logits.double(), 11, mask, alpha)
    out = renyi_divergence_topk(logits, vals, idx, mask, alpha, ref_tail_logprobs=tail)
    assert_close(out.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    derived = renyi_divergence_topk(logits, vals, idx, mask, alpha).double()
    if alpha >= 1.0:  # the documented limitation: 1 - sum(top-k) in float32 is too coarse here
        assert abs(derived.item() - expected) > 1e-4


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.0 + 1e-6, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_zero_for_equal_inputs(alpha, dtype):
    logits = rand_logits(2, 3, 10, seed=36, scale=4.0, dtype=dtype)
    for k in (1, 4, 10):
        vals, idx = topk_of(logits, k)
        out = renyi_divergence_topk(logits, vals, idx, None, alpha)
        assert out.item() >= 0.0
        assert_close(
            out, torch.zeros((), dtype=dtype), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12
        )


def test_topk_reference_tail_rounded_to_zero():
    # the reference puts (numerically) all its mass on token 0: its stored top-1 log-prob is 0.0
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]], requires_grad=True)
    vals = torch.tensor([[0.0]])
    idx = torch.tensor([[0]])
    for alpha in (0.5, 1.0, 2.0):
        out = renyi_divergence_topk(logits, vals, idx, None, alpha)  # default floor keeps it finite
        assert torch.isfinite(out) and out.item() > 0
        logits.grad = None
        out.backward()
        assert torch.isfinite(logits.grad).all()
    # unfloored: Q has no tail mass but P does -> infinite for alpha >= 1, finite for alpha < 1
    assert torch.isinf(renyi_divergence_topk(logits, vals, idx, None, 2.0, min_tail_prob=0.0))
    assert torch.isinf(renyi_divergence_topk(logits, vals, idx, None, 1.0, min_tail_prob=0.0))
    p = torch.softmax(logits.detach().double(), -1)[0]
    expected = math.log(float(p[0]) ** 0.5) / (0.5 - 1.0)  # only the top-1 bucket has Q > 0
    assert_close(
        renyi_divergence_topk(logits.double(), vals.double(), idx, None, 0.5, min_tail_prob=0.0),
        torch.tensor(expected, dtype=torch.float64),
        **TIGHT,
    )


def test_topk_large_logits_and_gradients():
    logits = rand_logits(2, 3, 40, seed=37, scale=1e4, dtype=torch.float32).requires_grad_()
    ref_logits = rand_logits(2, 3, 40, seed=38, scale=1e4, dtype=torch.float32)
    vals, idx = topk_of(ref_logits, 5)
    for alpha in (0.5, 1.0, 1.0 + 1e-6, 2.0):
        out = renyi_divergence_topk(logits, vals, idx, None, alpha)
        assert torch.isfinite(out) and out.item() >= 0
        logits.grad = None
        out.backward()
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_topk_gradcheck_and_masking(alpha):
    logits = rand_logits(3, 6, seed=39).requires_grad_()
    ref_logits = rand_logits(3, 6, seed=40)
    vals, idx = topk_of(ref_logits, 2)
    mask = torch.tensor([True, False, True])
    assert torch.autograd.gradcheck(lambda x: renyi_divergence_topk(x, vals, idx, mask, alpha), (logits,))
    bad = logits.detach().clone()
    bad[1] = float("nan")
    assert_close(
        renyi_divergence_topk(bad, vals, idx, mask, alpha),
        renyi_divergence_topk(logits, vals, idx, mask, alpha),
        **TIGHT,
    )


def test_topk_shape_errors():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError):
        renyi_divergence_topk(logits, torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.long), None, 1.0)
    with pytest.raises(ValueError):
        renyi_divergence_topk(logits, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), None, 1.0)
    with pytest.raises(ValueError):
        renyi_divergence_topk(logits, torch.zeros(2, 6), torch.zeros(2, 6, dtype=torch.long), None, 1.0)
    with pytest.raises(ValueError):
        renyi_divergence_topk(
            logits, torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), None, 1.0, min_tail_prob=1.0
        )


# --------------------------------------------------------------------------------------------------
# legacy seed term
# --------------------------------------------------------------------------------------------------


def bf_legacy(a, b, alpha):
    a, b = a.reshape(-1).tolist(), b.reshape(-1).tolist()
    if alpha == 1.0:
        total = 0.0
        for ai, bi in zip(a, b):
            total += math.exp(bi) * (bi - ai)
        return total / len(a)
    terms = [alpha * ai + (1 - alpha) * bi for ai, bi in zip(a, b)]
    m = max(terms)
    s = 0.0
    for t in terms:
        s += math.exp(t - m)
    return (m + math.log(s)) / (alpha - 1)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_legacy_matches_bruteforce(alpha, shape):
    a = -rand_logits(*shape, seed=41).abs()
    b = -rand_logits(*shape, seed=42).abs()
    assert_close(
        legacy_token_renyi(a, b, alpha), torch.tensor(bf_legacy(a, b, alpha), dtype=torch.float64), **TIGHT
    )


def test_legacy_alpha_one_is_the_exact_kl_div_batchmean_call():
    a = (-rand_logits(7, seed=43).abs()).requires_grad_()
    b = -rand_logits(7, seed=44).abs()
    out = legacy_token_renyi(a, b, 1.0)
    assert_close(out, F.kl_div(a, b, log_target=True, reduction="batchmean"), rtol=0, atol=0)
    # on a 1-D input, batchmean divides the summed elementwise terms by a.shape[0] == numel
    assert_close(out, F.kl_div(a, b, log_target=True, reduction="sum") / 7, **TIGHT)
    out.backward()
    assert torch.isfinite(a.grad).all()


def test_legacy_is_not_a_divergence():
    a = -rand_logits(5, seed=45).abs()
    for alpha in (0.5, 2.0):
        same = legacy_token_renyi(a, a.clone(), alpha)
        assert abs(same.item()) > 1e-3  # not zero for identical inputs
        assert_close(same, torch.logsumexp(a, 0) / (alpha - 1), **TIGHT)
        # depends on the batch size: duplicating the batch adds log(2) / (alpha - 1)
        doubled = legacy_token_renyi(torch.cat([a, a]), torch.cat([a, a]), alpha)
        assert_close(doubled - same, torch.tensor(math.log(2) / (alpha - 1), dtype=torch.float64), **TIGHT)
    # its sign is arbitrary: at alpha = 2 it is logsumexp(a), negative for one confident token and
    # positive once the batch holds enough tokens, although the inputs are identical
    one = torch.tensor([-0.5], dtype=torch.float64)
    assert (
        legacy_token_renyi(one, one, 2.0).item()
        < 0
        < legacy_token_renyi(one.repeat(3), one.repeat(3), 2.0).item()
    )


def test_legacy_empty_and_dtype():
    empty = torch.zeros(0, requires_grad=True)
    for alpha in (1.0, 2.0):
        out = legacy_token_renyi(empty, torch.zeros(0), alpha)
        zero_exactly(out)
        assert out.grad_fn is not None
    out = legacy_token_renyi(
        torch.tensor([-1.0], dtype=torch.bfloat16), torch.tensor([-2.0], dtype=torch.bfloat16), 2.0
    )
    assert out.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# check_finite
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_raises_with_name(bad):
    with pytest.raises(NonFiniteLossError, match="retain_renyi"):
        check_finite("retain_renyi", torch.tensor(bad))
    with pytest.raises(NonFiniteLossError, match="npo"):
        check_finite("npo", bad)
    with pytest.raises(NonFiniteLossError, match="vec"):
        check_finite("vec", torch.tensor([0.0, bad]))


def test_check_finite_passes_finite_values_through():
    x = torch.tensor(1.5, requires_grad=True)
    assert check_finite("x", x) is x
    assert check_finite("y", 2.0) == 2.0
    assert check_finite("z", torch.zeros(0)).numel() == 0


def test_no_nan_to_num_in_module():
    import inspect

    import llm_unlearn.losses as losses
    from llm_unlearn.losses import _common, divergence, forget, token

    for module in (losses, _common, divergence, forget, token):
        assert "nan_to_num" not in inspect.getsource(module)


def test_token_log_probs_bruteforce_and_empty():
    logits = rand_logits(4, 7, seed=21)
    targets = torch.tensor([0, 6, 3, 3])
    out = token_log_probs(logits, targets)
    for n in range(4):
        row = [float(x) for x in logits[n]]
        lse = math.log(sum(math.exp(v) for v in row))
        assert abs(float(out[n]) - (row[int(targets[n])] - lse)) < 1e-12
    assert token_log_probs(logits[:0], targets[:0]).numel() == 0
    assert token_log_probs(logits.to(torch.bfloat16), targets).dtype == torch.float32


def test_row_mean_nll_empty_row_fill():
    logp = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    rows = torch.tensor([0, 0])
    out = row_mean_nll(logp, rows, 2, empty=float("inf"))
    assert out[0].item() == 2.0 and out[1].item() == float("inf")
    assert row_mean_nll(logp, rows, 2)[1].item() == 0.0
