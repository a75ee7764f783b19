"""Recovery of forgotten knowledge under an attack, and the open-unlearning robustness scores (pure, no torch).

For one metric ``m`` where higher means "more of the forget set known" (ROUGE-L recall, answer
probability), measured on the target model (before unlearning), the unlearned model and the attacked
unlearned model::

    recovery = (m_attacked - m_unlearned) / (m_target - m_unlearned), clipped to [0, 1]

1 means the attack brought back everything unlearning removed, 0 nothing. The denominator is shown next
to the value: when it is 0 (unlearning changed nothing on that metric) or a value is missing, the
recovery is **undefined** (``None`` with a reason), never NaN. A negative denominator (the "unlearned"
model knows more than the target) is reported as it is; the ratio is then still clipped.

Robustness scores of the open-unlearning meta-evaluation (Dorna et al. 2025, arXiv 2506.12618), as we
read its definitions (a metric is robust when an attack does not move it more on the unlearned model
than on a model that never saw the data):

* relearning: ``R = min(1, Δ_never / Δ_unlearned)`` with ``Δ = m_after_relearning - m_before``;
  defined only with a never-trained model and a positive ``Δ_unlearned`` (else 1 when neither moved up);
* quantization: ``Q = min(1, m_unlearned / m_quantized)`` (1 when quantization did not raise ``m``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["recovery", "recovery_table", "relearning_robustness", "quantization_robustness"]


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def recovery(target: float | None, unlearned: float | None, attacked: float | None) -> dict[str, Any]:
    """``{"recovery", "raw", "numerator", "denominator", "undefined"}``: the clipped ratio, the ratio
    before clipping, both terms, and why it is undefined (None when it is defined)."""
    t, u, a = _num(target), _num(unlearned), _num(attacked)
    out: dict[str, Any] = {"recovery": None, "raw": None, "numerator": None, "denominator": None}
    if t is None or u is None or a is None:
        out["undefined"] = "a value is missing"
        return out
    num, den = a - u, t - u
    out.update(numerator=num, denominator=den)
    if den == 0:
        out["undefined"] = "target and unlearned are equal (denominator 0)"
        return out
    raw = num / den
    out.update(raw=raw, recovery=min(1.0, max(0.0, raw)), undefined=None)
    return out


def recovery_table(
    target: Mapping[str, Any], unlearned: Mapping[str, Any], attacked: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per metric name present in all three: the values and :func:`recovery`."""
    out = {}
    for name in target:
        if name in unlearned and name in attacked:
            row = {"target": target[name], "unlearned": unlearned[name], "attacked": attacked[name]}
            row.update(recovery(target[name], unlearned[name], attacked[name]))
            out[name] = row
    return out


def relearning_robustness(
    unlearned_before: float | None,
    unlearned_after: float | None,
    never_before: float | None,
    never_after: float | None,
) -> float | None:
    """``min(1, Δ_never / Δ_unlearned)``; None when a value is missing; 1 when the unlearned model did
    not gain (Δ_unlearned ≤ 0)."""
    vals = [_num(v) for v in (unlearned_before, unlearned_after, never_before, never_after)]
    if any(v is None for v in vals):
        return None
    d_unl = vals[1] - vals[0]
    d_never = vals[3] - vals[2]
    if d_unl <= 0:
        return 1.0
    return min(1.0, max(0.0, d_never / d_unl))


def quantization_robustness(unlearned: float | None, quantized: float | None) -> float | None:
    """``min(1, m_unlearned / m_quantized)``; None when missing; 1 when ``m_quantized`` ≤ ``m_unlearned``."""
    u, q = _num(unlearned), _num(quantized)
    if u is None or q is None:
        return None
    if q <= u:
        return 1.0
    return min(1.0, max(0.0, u / q))
