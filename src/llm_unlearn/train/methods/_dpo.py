"""DPO against an alternative answer, shared by idk_dpo (a refusal) and altpo (a plausible alternative):
the forget answer is the rejected one, the alternative the preferred one."""

from __future__ import annotations

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import answer_logits
from llm_unlearn.train.methods._shared import pushed_rows_logp, retain_block, with_retain
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue, answer_positions

DPO = "dpo"
# logged only (weight None): the mean over pushed forget rows of log pi(y) - log pi_ref(y) of the forget
# answer and of the alternative, so a log shows whether the DPO margin came from lowering the one or
# raising the other (the margin is alt - forget)
DPO_FORGET_LOGRATIO, DPO_ALT_LOGRATIO = "dpo_forget_logratio", "dpo_alt_logratio"
DPO_TERMS = (DPO, DPO_FORGET_LOGRATIO, DPO_ALT_LOGRATIO)


def dpo_needs(o) -> ReferenceNeeds:
    """The reference's log-probs of the forget answers, and the retain block's needs."""
    return with_retain(o, "logp")


def alternative_sums(step: Step):
    """Per pushed forget row: the model's and the reference's log-probability of its alternative answer
    (sums over the alternative's answer tokens)."""
    b, push = step.batch, step.push
    ids, labels, mask = b["alt_input_ids"][push], b["alt_labels"][push], b["alt_attention_mask"][push]
    pos = answer_positions(labels)
    logits = answer_logits(step.model, step.selector, ids, mask, pos)
    win = losses.row_sums(losses.token_log_probs(logits, pos.targets), pos.rows, ids.shape[0])
    ref_logits, ref_pos, _ = step.source.forward(step.model, ids, mask, labels)
    win_ref = losses.row_sums(losses.token_log_probs(ref_logits, ref_pos.targets), ref_pos.rows, ids.shape[0])
    return win, win_ref


def dpo_terms(step: Step, o) -> dict[str, TermValue]:
    """The DPO term (alternative preferred to the forget answer) and the retain block."""
    out: dict[str, TermValue] = {}
    if step.has_forget:
        logp, rows = pushed_rows_logp(step)
        ref = step.pushed_forget(step.reference().forget_logp).to(logp.dtype)
        lose = losses.row_sums(logp, rows, step.n_rows)[step.push]
        lose_ref = losses.row_sums(ref, rows, step.n_rows)[step.push]
        win, win_ref = alternative_sums(step)
        value = losses.dpo_loss(win, win_ref.to(win.dtype), lose, lose_ref, o.dpo_beta)
        out[DPO] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
        n = max(int(lose.shape[0]), 1)
        lose_ratio = (lose - lose_ref).detach().sum() / n
        alt_ratio = (win - win_ref.to(win.dtype)).detach().sum() / n
        out[DPO_FORGET_LOGRATIO] = TermValue(lose_ratio, None, T.FORGET_ROWS)
        out[DPO_ALT_LOGRATIO] = TermValue(alt_ratio, None, T.FORGET_ROWS)
    return {**out, **retain_block(step, o)}
