"""Loss terms for unlearning: pure tensor functions, no model and no trainer state.

Modules: ``token`` (log-probabilities, per-row reductions, NLL, the finiteness guard), ``forget``
(gradient ascent, NPO, SUGD), ``divergence`` (Rényi, KL, top-k Rényi, the upstream token form);
the methods of ``docs/methods.md``: ``preference`` (SimNPO, DPO), ``weighted`` (WGA, SatImp),
``distill`` (UNDIAL, CE-U), ``representation`` (RMU), ``constrained`` (PDU).
Everything is re-exported here: ``from llm_unlearn import losses; losses.npo_loss(...)``.

Conventions used throughout this module
---------------------------------------
* ``B`` batch size, ``T`` sequence length, ``V`` vocabulary size, ``H`` hidden size, ``k`` top-k size.
* Causal language models: the logits at position ``t`` predict the token at position ``t + 1``.
  :func:`target_log_probs` applies that shift; every other function takes tensors that are already
  aligned.
* ``log p(y_t)`` is the log-probability the model gives to the target (label) token at answer
  position ``t``.
* Labels use ``-100`` (``ignore_index``) for positions that do not count (prompt, padding).
* Masked means are taken over the valid positions only. A mask with no valid position gives exactly
  ``0``: a zero tensor that is still connected to the autograd graph of the input when the input
  requires grad, never NaN.
* Computation happens in ``float32`` at least (``float64`` if an input is ``float64``); ``bfloat16``
  and ``float16`` inputs are upcast first. Results are returned in that computation dtype.
* Nothing in this module replaces NaN or inf by a number. Use :func:`check_finite` to fail loudly.
"""

from llm_unlearn.losses.constrained import pdu_dual_update, pdu_forget_loss, pdu_lagrangian
from llm_unlearn.losses.distill import ce_u_loss, undial_loss
from llm_unlearn.losses.divergence import (
    kl_divergence,
    legacy_token_renyi,
    reference_topk,
    renyi_divergence,
    renyi_divergence_topk,
)
from llm_unlearn.losses.forget import gradient_ascent_loss, npo_loss, sugd_loss
from llm_unlearn.losses.preference import dpo_loss, simnpo_loss
from llm_unlearn.losses.representation import rmu_control_vector, rmu_forget_loss, rmu_retain_loss
from llm_unlearn.losses.token import (
    check_finite,
    nll_loss,
    row_counts,
    row_mean_nll,
    row_sums,
    token_log_probs,
)
from llm_unlearn.losses.weighted import satimp_loss, wga_loss

__all__ = [
    "check_finite",
    "gradient_ascent_loss",
    "kl_divergence",
    "legacy_token_renyi",
    "nll_loss",
    "npo_loss",
    "reference_topk",
    "renyi_divergence",
    "renyi_divergence_topk",
    "row_counts",
    "row_mean_nll",
    "row_sums",
    "sugd_loss",
    "token_log_probs",
    # unlearning methods (docs/methods.md)
    "ce_u_loss",
    "dpo_loss",
    "pdu_dual_update",
    "pdu_forget_loss",
    "pdu_lagrangian",
    "rmu_control_vector",
    "rmu_forget_loss",
    "rmu_retain_loss",
    "satimp_loss",
    "simnpo_loss",
    "undial_loss",
    "wga_loss",
]
