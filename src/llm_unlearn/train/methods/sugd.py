"""sugd: AILS-NTUA's signed per-sample cross-entropy (the ``ails-ntua`` preset)."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue


@register(
    "sugd",
    terms=(T.SUGD, T.FORGET_NLL, T.RETAIN_NLL),
    summary="AILS-NTUA: mean over rows of factor x per-row mean NLL (-1 forget, +0.5 retain)",
    source="AILS-NTUA, SemEval-2025 Task 4 (the ails-ntua preset)",
)
def sugd(step: Step, o) -> dict[str, TermValue]:
    per_row = losses.row_mean_nll(step.logp, step.pos.rows, step.n_rows)
    factor = per_row.new_full(per_row.shape, o.sugd_retain_factor)
    factor = factor.masked_fill(step.is_forget, o.sugd_forget_factor)
    factor = factor.masked_fill(step.is_forget & ~step.push, 0.0)  # rows the calibration gate switched off
    out = {T.SUGD: TermValue(losses.sugd_loss(per_row, factor), 1.0, T.ROWS)}
    if bool(step.tok_forget.any()):  # logged only
        out[T.FORGET_NLL] = TermValue(
            losses.nll_loss(step.logp[step.tok_forget]).detach(), None, T.FORGET_TOKENS
        )
    if step.has_retain:
        out[T.RETAIN_NLL] = TermValue(
            losses.nll_loss(step.logp[step.tok_retain]).detach(), None, T.RETAIN_TOKENS
        )
    return out
