"""TOFU / MUSE metrics on hand-made inputs whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest

from llm_unlearn.evaluation.metrics import tofu_muse as bm


def test_truth_ratio_is_geometric_mean_of_perturbed_over_paraphrase():
    # normalized probabilities: paraphrase e^-1; perturbed e^-2 and e^-4 -> geometric mean e^-3
    r = bm.truth_ratio(1.0, [2.0, 4.0])
    assert r == pytest.approx(math.exp(-3.0) / math.exp(-1.0), rel=1e-12)
    assert bm.truth_ratio(2.0, [2.0, 2.0, 2.0]) == pytest.approx(1.0, rel=1e-12)


def test_truth_ratio_aggregators():
    ratios = [0.5, 2.0, 1.0, 0.25]
    # forget: min(R, 1/R) -> 0.5, 0.5, 1, 0.25 -> mean 0.5625
    assert bm.forget_truth_ratio_score(ratios) == pytest.approx(0.5625, rel=1e-12)
    # retain: max(0, 1 - R) -> 0.5, 0, 0, 0.75 -> mean 0.3125
    assert bm.retain_truth_ratio_score(ratios) == pytest.approx(0.3125, rel=1e-12)


def test_probability_with_options():
    # p(correct)=0.5, wrong 0.25 + 0.25 -> 0.5 / 1.0
    nll = [-math.log(0.5), -math.log(0.25), -math.log(0.25)]
    assert bm.probability_with_options(nll[0], nll[1:]) == pytest.approx(0.5, rel=1e-12)
    assert bm.normalized_probability(-math.log(0.3)) == pytest.approx(0.3, rel=1e-12)


def test_forget_quality_identical_distributions_is_one():
    a = [0.1, 0.4, 0.7, 1.3, 2.0]
    assert bm.forget_quality(a, list(reversed(a))) == 1.0


def test_forget_quality_separated_samples_exact_p_value():
    # two samples of size 5 with no overlap: D = 1; exact two-sided p = 2 / C(10, 5) = 2/252
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    b = [1.1, 1.2, 1.3, 1.4, 1.5]
    assert bm.forget_quality(a, b) == pytest.approx(2 / 252, rel=1e-9)


def test_forget_quality_is_invariant_to_the_truth_ratio_form():
    # KS depends on ranks only: R and 1/R (the paper's and the framework's storage) give the same p
    a = [0.1, 0.4, 0.9, 1.5, 3.0, 0.2]
    b = [0.3, 0.35, 2.0, 4.0, 5.0]
    assert bm.forget_quality(a, b) == pytest.approx(bm.forget_quality([1 / x for x in a], [1 / x for x in b]))


def test_harmonic_mean_hand_worked():
    # 9 numbers: 1/H = (1/9)(3*1/0.5 + 3*1/0.25 + 3*1/1) = (6 + 12 + 3)/9 = 21/9 -> H = 9/21
    values = [0.5] * 3 + [0.25] * 3 + [1.0] * 3
    assert bm.harmonic_mean(values) == pytest.approx(9 / 21, rel=1e-12)
    assert bm.harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    assert bm.harmonic_mean([]) is None
    with pytest.raises(ValueError):
        bm.harmonic_mean([0.5, -0.1])


def test_exact_memorization_and_extraction_strength():
    assert bm.exact_memorization([True, False, True, True]) == 0.75
    # smallest k with correct[k:] all true: [F, T, F, T, T] -> k = 3 -> 1 - 3/5
    assert bm.extraction_strength([False, True, False, True, True]) == pytest.approx(0.4)
    assert bm.extraction_strength([True] * 4) == 1.0
    # nothing matches, not even the last token: the framework's loop ends at k = n - 1 -> 1/n
    assert bm.extraction_strength([False, False, False, False]) == pytest.approx(0.25)
    assert bm.exact_memorization([]) is None and bm.extraction_strength([]) is None


def test_muse_auc_and_privleak():
    # min-k scores (mean lowest log-probs, higher = more member-like)
    forget = [-0.1, -0.2, -0.3]
    holdout = [-1.0, -2.0, -3.0]
    # every forget item is more likely than every holdout item: MUSE's AUC = 0
    assert bm.muse_auc(forget, holdout) == 0.0
    assert bm.muse_auc(holdout, forget) == 1.0
    assert bm.muse_auc([-1.0, -2.0], [-1.0, -2.0]) == 0.5
    # PrivLeak = (AUC - AUC_ref) / AUC_ref * 100
    assert bm.privleak(0.0, 0.5) == pytest.approx(-100.0)
    assert bm.privleak(0.75, 0.5) == pytest.approx(50.0)
    assert bm.privleak(0.5, 0.5) == 0.0


def test_min_k_40_percent():
    # 5 log-probs -> int(5 * 0.4) = 2 lowest: (-3 + -2) / 2
    assert bm.min_k_logprob([-1.0, -3.0, -0.5, -2.0, -0.1], 40) == pytest.approx(-2.5)


def test_rouge_l():
    assert bm.rouge_l_recall("the cat sat", "the cat sat on the mat") == 1.0
    # LCS 3 of 6 reference words -> recall 0.5; precision 3/3 -> F1 = 2*0.5*1/1.5
    assert bm.rouge_l_recall("the cat sat on the mat", "the cat sat") == pytest.approx(0.5)
    assert bm.rouge_l_f1("the cat sat on the mat", "the cat sat") == pytest.approx(2 / 3)


def test_truncate_at_stop():
    assert bm.truncate_at_stop("Paris\n\nQuestion: x", ("\n\n", "\nQuestion", "Question:")) == "Paris"
    assert bm.truncate_at_stop("no stop here", ("\n\n",)) == "no stop here"
