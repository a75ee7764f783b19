"""calibration.npo_beta_from_gap: NPO's beta from the loss gap a calibrated run measures at its first evaluation.

Token-level NPO's loss on a forget token is ``-(2/beta) log sigma(-beta delta)``, ``delta = log p - log p_ref``;
its derivative in ``delta`` is ``w = 2 sigma(beta delta)`` (:func:`npo_weight`), 1 at the start (``p = p_ref``),
where gradient ascent's is 1 throughout. A calibrated run raises a forget unit's loss until it looks unseen,
i.e. by the gap ``g`` between the holdout's loss and the unit's own at the start (:func:`loss_gap`, per token,
medians); there ``delta ~ -g`` and ``w = 2 / (1 + e^(beta g))``. With the default beta 0.5, the demo's
``g ~ 4.9`` gives ``w = 0.16``, the real SemEval slice's ``g ~ 11.6`` gives ``w = 0.006``: NPO has all but
stopped pushing long before the unit reaches its target (the run ends above AUC 0.5). :func:`beta_from_gap`
takes ``beta = ln(3) / g`` when that is smaller than the configured beta, so that ``w = 1/2`` at the
target: half of the start's push is left where the gate and the stop take over. It only ever lowers beta
(a small gap keeps the configured one), and is decided once, from the untrained start, so a resumed run
keeps it (train/calibrated.py saves it).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from typing import Any

from llm_unlearn.train.calibration import finite

log = logging.getLogger(__name__)

__all__ = ["WEIGHT_AT_TARGET", "npo_weight", "loss_gap", "beta_from_gap", "choose"]

#: NPO's weight ``2 sigma(-beta g)`` where a unit reaches its target: ``beta = ln(2 / w - 1) / g = ln(3) / g``.
WEIGHT_AT_TARGET = 0.5
_TOKEN_NPO_METHODS = ("npo_rt_div", "npo")


def npo_weight(beta: float, delta: float) -> float:
    """``2 sigma(beta delta)``: token-level NPO's gradient in ``delta = log p - log p_ref``."""
    return 2.0 / (1.0 + math.exp(-beta * delta))


def loss_gap(unit_losses: Sequence[float] | None, holdout_losses: Sequence[float] | None) -> float | None:
    """The holdout's median loss minus the forget units' median (per token); None when a side is empty."""
    units, hold = finite(unit_losses), finite(holdout_losses)
    if not units or not hold:
        return None
    return statistics.median(hold) - statistics.median(units)


def beta_from_gap(beta: float, gap: float | None) -> float:
    """``min(beta, ln(2 / WEIGHT_AT_TARGET - 1) / gap)``; ``beta`` when there is no positive gap."""
    if gap is None or not math.isfinite(gap) or gap <= 0:
        return beta
    return min(beta, math.log(2.0 / WEIGHT_AT_TARGET - 1.0) / gap)


def choose(cfg, ev: dict[str, Any]) -> dict[str, Any] | None:
    """At the first evaluation ``ev`` (its ``loss_gap``): set ``cfg.objective.npo_beta`` from the gap when
    ``calibration.npo_beta_from_gap`` is on and the method is token-level NPO; the record of what was done
    (``{"gap", "configured", "npo_beta"}``), or None when the rule does not apply."""
    o = cfg.objective
    if not cfg.calibration.npo_beta_from_gap or o.method not in _TOKEN_NPO_METHODS or o.npo_level != "token":
        return None
    gap = ev.get("loss_gap")
    if gap is None:
        return None
    configured = float(o.npo_beta)
    o.npo_beta = beta_from_gap(configured, gap)
    log.info(
        "calibration: loss gap %.3f nats a token (holdout median - forget units' median): NPO beta %.4g "
        "(configured %g; ln(3)/gap keeps NPO's weight 1/2 at the target; objective.npo_beta sets it)",
        gap,
        o.npo_beta,
        configured,
    )
    return {"gap": gap, "configured": configured, "npo_beta": o.npo_beta}
