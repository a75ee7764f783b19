"""Preference-style forget terms on sequence log-probabilities: SimNPO (reference-free, length
normalized) and DPO (a preferred alternative answer against the forget answer; IdkDPO and AltPO).

Sequence log-probabilities are sums of answer-token log-probs per row, built from the trainer's flat
``logp [N]`` / ``rows [N]`` with :func:`~llm_unlearn.losses.token.row_sums`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llm_unlearn.losses._common import _check_same_shape, _compute_dtype
from llm_unlearn.losses.token import row_counts, row_sums


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not (beta > 0.0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")
    return beta


def simnpo_loss(
    logp: torch.Tensor, rows: torch.Tensor, n_rows: int, beta: float = 4.5, delta: float = 0.0
) -> torch.Tensor:
    """SimNPO forget term (Fan et al. 2024, "Simplicity prevails", arXiv:2410.07163).

    ``L = -(2/beta) * mean_i log sigmoid(beta * (nll_i / |y_i| - delta))`` with
    ``nll_i = -sum_{t in y_i} log p(y_t)`` and ``|y_i|`` the number of answer tokens of row ``i``.
    The paper's equation puts the margin outside, ``-(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma)``
    (as recalled from the paper, not re-read here), i.e. ``gamma = beta * delta``. The authors' code
    (OPTML-Group/Unlearn-Simple ``TOFU/dataloader.py``, loss ``simnpo``: ``nll/|y| - self.gamma``, then
    ``beta *``) and open-unlearning (``src/trainer/unlearn/simnpo.py``, ``configs/trainer/SimNPO.yaml``,
    whose comment says its ``delta`` is OPTML's ``gamma``) both subtract it inside, as here. The two
    agree at the default 0.

    Reference-free: no reference model. Minimizing it raises the length-normalized forget NLL; the
    gradient weight ``2 * sigmoid(-beta * (nll/|y| - delta))`` fades as a row is forgotten.

    Shapes: ``logp [N]`` (forget answer-token log-probs), ``rows [N]`` int in ``[0, n_rows)`` ->
    scalar. The mean runs over rows that have at least one token (a row without tokens has no length
    to normalize by and is left out); no token at all -> exactly 0.
    Defaults (open-unlearning SimNPO.yaml): ``beta = 4.5``, ``delta = 0.0`` (with forget weight
    ``gamma = 0.125``, retain NLL weight ``alpha = 1.0`` applied by the caller).
    """
    beta = _check_beta(beta)
    if not math.isfinite(float(delta)):
        raise ValueError(f"delta must be finite, got {delta}")
    _check_same_shape("logp", logp, "rows", rows)
    dtype = _compute_dtype(logp)
    logp = logp.to(dtype)
    counts = row_counts(rows, n_rows, dtype)
    present = counts > 0
    mean_nll = -row_sums(logp, rows, n_rows)[present] / counts[present]
    log_sig = F.logsigmoid(beta * (mean_nll - float(delta)))
    return -(2.0 / beta) * log_sig.sum() / max(log_sig.numel(), 1)


def dpo_loss(
    win_logp: torch.Tensor,
    win_ref_logp: torch.Tensor,
    lose_logp: torch.Tensor,
    lose_ref_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) as an unlearning term, with open-unlearning's ``2/beta`` scaling.

    ``L = -(2/beta) * mean_i log sigmoid(beta * [(w_i - w_ref_i) - (l_i - l_ref_i)])`` where
    ``w_i = log pi(y_w | x_i)`` is the sequence log-prob of the preferred (alternative) answer and
    ``l_i = log pi(y_l | x_i)`` that of the dispreferred (forget) answer; ``*_ref`` from the frozen
    reference (LoRA adapter disabled). Source: ``compute_dpo_loss`` in open-unlearning
    ``src/trainer/utils.py`` (used by ``src/trainer/unlearn/dpo.py``, ``configs/trainer/DPO.yaml``);
    the AltPO code (molereddy/Alternate-Preference-Optimization, ``dataloader.py`` loss ``dpo``) has
    the same ``-2/beta`` form. Plain DPO has scale 1 instead of ``2/beta``: only the step size differs.

    IdkDPO: ``y_w`` = an "I don't know" answer; AltPO: ``y_w`` = a plausible alternative answer (with
    ``k`` alternatives per forget row, repeat the forget row's values ``k`` times: the mean then runs
    over the ``B * k`` pairs). The reference values should carry no gradient (not detached here).

    Shapes: all four ``[B]`` (per-row sums, :func:`~llm_unlearn.losses.token.row_sums`) -> scalar;
    ``B == 0`` -> exactly 0. At ``win == win_ref`` and ``lose == lose_ref`` the value is
    ``(2/beta) log 2``. Defaults (DPO.yaml): ``beta = 0.1`` (``gamma = alpha = 1`` weights, retain
    NLL, applied by the caller).
    """
    beta = _check_beta(beta)
    _check_same_shape("win_logp", win_logp, "win_ref_logp", win_ref_logp)
    _check_same_shape("win_logp", win_logp, "lose_logp", lose_logp)
    _check_same_shape("lose_logp", lose_logp, "lose_ref_logp", lose_ref_logp)
    dtype = _compute_dtype(win_logp, win_ref_logp, lose_logp, lose_ref_logp)
    margin = (win_logp.to(dtype) - win_ref_logp.to(dtype)) - (lose_logp.to(dtype) - lose_ref_logp.to(dtype))
    log_sig = F.logsigmoid(beta * margin)
    return -(2.0 / beta) * log_sig.sum() / max(log_sig.numel(), 1)
