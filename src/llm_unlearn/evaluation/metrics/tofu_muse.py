"""TOFU and MUSE metrics as pure functions of per-item numbers (no model, no torch).

Definitions (TOFU: Maini et al. 2024, arXiv:2401.06121; MUSE: Shi et al. 2024, arXiv:2407.06460; and
the peer framework locuslab/open-unlearning, ``src/evals/metrics/``, whose numbers the published
tables report). ``nll`` below is always the **mean** negative log-likelihood of an answer's tokens given
its prompt (the framework's ``avg_loss``), so ``exp(-nll)`` is the length-normalized probability.

* probability: ``exp(-nll)`` of the answer;
* probability with options (real_authors / world_facts): ``p(a) / (p(a) + sum_j p(w_j))`` with the
  same normalized probabilities of the correct answer ``a`` and the perturbed ones ``w_j``;
* truth ratio ``R``: ``geomean_j p(w_j) / p(a~)``, i.e. ``exp(nll(a~) - mean_j nll(w_j))``, with
  ``a~`` the paraphrased answer (forget, retain) or the answer itself (real_authors, world_facts:
  no paraphrase). The framework computes ``p_w / (p_a~ + 1e-10)``; we compute the exact ratio, which
  differs only when ``p(a~) < ~1e-8``.
* truth-ratio scores: forget ``mean(min(R, 1/R))`` (``closer_to_1_better``), retain / real_authors /
  world_facts ``mean(max(0, 1 - R))`` (``true_better``);
* forget quality: the p-value of the two-sample Kolmogorov-Smirnov test between the forget-set ``R``
  of the evaluated model and of the retain model (scipy ``ks_2samp``, two-sided, method auto). KS
  depends on ranks only, so storing ``R`` or ``1/R`` (as the original TOFU code does) gives the same p;
* model utility: the harmonic mean of the nine numbers {retain, real_authors, world_facts} x
  {probability (with options for the last two), ROUGE-L recall, truth-ratio score};
* exact memorization (Tirumala et al. 2022, as the framework): fraction of answer tokens that are the
  argmax prediction under teacher forcing;
* extraction strength (Carlini et al. 2021 / Wang et al. 2025, as the framework): ``1 - k/n`` with
  ``k`` the smallest index from which every remaining teacher-forced argmax prediction is right. When
  not even the last token is right the framework's loop leaves ``k = n - 1`` (score ``1/n``), and so
  do we, so the numbers match its tables;
  (both over the answer tokens without the final EOS, as the framework);
* Min-K% (k = 40 % for TOFU's and MUSE's privleak): mean of the lowest ``max(1, int(n k / 100))``
  token log-probabilities (higher = more member-like);
* MUSE's AUC: ``P(s_holdout > s_forget) + P(tie)/2`` for member scores ``s`` (Min-40%), i.e. the
  framework's ``1 - roc_auc`` (MUSE reports AUC that way: 0 = forget far more likely than holdout);
* PrivLeak: ``(AUC - AUC_ref) / AUC_ref * 100`` with ``AUC_ref`` the retain model's AUC (0.5 when no
  retain model is given, the framework's default);
* ROUGE-L: recall (TOFU) or F1 (MUSE verbmem / knowmem), rouge_score with the Porter stemmer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

__all__ = [
    "normalized_probability",
    "probability_with_options",
    "truth_ratio",
    "forget_truth_ratio_score",
    "retain_truth_ratio_score",
    "forget_quality",
    "harmonic_mean",
    "exact_memorization",
    "extraction_strength",
    "min_k_logprob",
    "muse_auc",
    "privleak",
    "rouge_l_recall",
    "rouge_l_f1",
    "truncate_at_stop",
    "mean",
]


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    vals = [float(v) for v in values if v is not None]
    return math.fsum(vals) / len(vals) if vals else None


def normalized_probability(nll: float) -> float:
    """``exp(-nll)``: the geometric mean of the answer's token probabilities."""
    return math.exp(-float(nll))


def probability_with_options(correct_nll: float, wrong_nlls: Sequence[float]) -> float:
    """``p(a) / (p(a) + sum_j p(w_j))`` of normalized probabilities (the framework adds 1e-10 to the
    denominator, which cannot matter here since ``p(a) > 0``)."""
    pa = normalized_probability(correct_nll)
    return pa / (pa + math.fsum(normalized_probability(x) for x in wrong_nlls))


def truth_ratio(true_nll: float, wrong_nlls: Sequence[float]) -> float:
    """``exp(true_nll - mean(wrong_nlls))`` = geometric mean of the perturbed answers' normalized
    probabilities over the true (paraphrased) answer's."""
    if not wrong_nlls:
        raise ValueError("truth ratio needs at least one perturbed answer")
    return math.exp(float(true_nll) - math.fsum(wrong_nlls) / len(wrong_nlls))


def forget_truth_ratio_score(ratios: Sequence[float]) -> float | None:
    """Forget set: ``mean(min(R, 1/R))`` (1 = perturbed and true answers equally likely)."""
    return mean([min(r, 1.0 / r) if r > 0 else 0.0 for r in ratios])


def retain_truth_ratio_score(ratios: Sequence[float]) -> float | None:
    """Retain / real_authors / world_facts: ``mean(max(0, 1 - R))`` (1 = true answer far likelier)."""
    return mean([max(0.0, 1.0 - r) for r in ratios])


def forget_quality(model_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test (scipy ``ks_2samp``, two-sided, method auto)."""
    from scipy.stats import ks_2samp

    if not model_ratios or not retain_model_ratios:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(list(model_ratios), list(retain_model_ratios)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float | None:
    """``n / sum(1/x)``; 0 if any value is 0 (as scipy's ``hmean``); None for no values."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    if any(v < 0 or math.isnan(v) for v in vals):
        raise ValueError(f"harmonic mean needs non-negative numbers, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / math.fsum(1.0 / v for v in vals)


def exact_memorization(correct: Sequence[bool]) -> float | None:
    """Fraction of positions whose teacher-forced argmax is the answer token; None for no tokens."""
    return sum(bool(c) for c in correct) / len(correct) if len(correct) else None


def extraction_strength(correct: Sequence[bool]) -> float | None:
    """``1 - k/n``, ``k`` the smallest index with ``correct[k:]`` all true (``n - 1`` if none, as the
    framework's loop); None for no tokens."""
    n = len(correct)
    if n == 0:
        return None
    suffix_ok = True
    first = n  # smallest k whose suffix is all correct (n = empty suffix)
    for i in range(n - 1, -1, -1):
        suffix_ok = suffix_ok and bool(correct[i])
        if suffix_ok:
            first = i
    k = min(first, n - 1)
    return 1.0 - k / n


def min_k_logprob(token_logprobs: Sequence[float], k_percent: float = 40) -> float:
    """Mean of the lowest ``max(1, int(n * k / 100))`` token log-probabilities (NaN for none)."""
    from llm_unlearn.evaluation.metrics.mia import lowest_k_mean

    return lowest_k_mean(list(token_logprobs), k_percent)


def muse_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """MUSE's AUC: ``1 - roc_auc(forget as members)`` for member scores (higher = member)."""
    from llm_unlearn.evaluation.metrics.mia import mia_auc

    return 1.0 - mia_auc(forget_scores, holdout_scores)


def privleak(auc: float, reference_auc: float) -> float:
    """``(auc - reference_auc) / reference_auc * 100`` (MUSE; negative = the forget set still leaks)."""
    if reference_auc <= 0:
        raise ValueError(f"the reference AUC must be > 0, got {reference_auc}")
    return (float(auc) - float(reference_auc)) / float(reference_auc) * 100.0


@lru_cache(maxsize=1)
def _rouge_l():
    import logging

    from rouge_score import rouge_scorer

    logging.getLogger("absl").setLevel(logging.WARNING)
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(reference: str, generated: str) -> float:
    """ROUGE-L recall of ``generated`` against ``reference`` (stemmed)."""
    return float(_rouge_l().score(target=str(reference), prediction=str(generated))["rougeL"].recall)


def rouge_l_f1(reference: str, generated: str) -> float:
    """ROUGE-L F1 of ``generated`` against ``reference`` (stemmed)."""
    return float(_rouge_l().score(target=str(reference), prediction=str(generated))["rougeL"].fmeasure)


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` cut before the first occurrence of any stop string (greedy decoding does not depend on
    later tokens, so this equals stopping generation there)."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
