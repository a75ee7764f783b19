"""pdu: a forget term plus a dual multiplier on the retain NLL (the constraint retain NLL <= eps).

The multiplier starts at ``retain_weight`` (open-unlearning's ``alpha``) and stays there for the first
``pdu_dual_warmup_epochs`` epochs of the chunk being trained (open-unlearning ``dual_warmup_epochs``:
its callback enables the updates at the end of the epoch where ``state.epoch >= warmup``, so the
steps of epochs ``0 .. warmup-1`` never update); from then on it updates after every step. Here an
epoch is one pass over the chunk (``schedule.epochs`` passes per chunk); with one chunk
(``--no-sequential``, or a chunk as large as the forget set) it is open-unlearning's epoch. The
multiplier is carried from chunk to chunk; each chunk has its own warm-up.
"""

from __future__ import annotations

import torch

from llm_unlearn import losses
from llm_unlearn.train import terms as T
from llm_unlearn.train.methods._shared import retain_block, with_retain
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import Step, TermValue

PDU_FORGET, PDU_DUAL = "pdu_forget", "pdu_dual"


def warmup_note(cfg) -> str | None:
    """A warning when PDU's warm-up covers every epoch of a chunk: the multiplier would never move."""
    o, epochs = cfg.objective, cfg.schedule.epochs
    if o.method != "pdu" or o.pdu_dual_warmup_epochs < epochs:
        return None
    return (
        f"pdu: the dual warm-up ({o.pdu_dual_warmup_epochs:g} epochs) is not shorter than the {epochs:g} "
        "epochs per chunk, so the multiplier stays at its initial value (retain_weight); "
        "--pdu-dual-warmup 0 updates it from the first step, or give more --epochs"
    )


def _global_retain_nll(step: Step, out: dict[str, TermValue]) -> float | None:
    """This step's retain NLL for the dual update: under data parallelism the mean over every
    process's retain tokens (one all-reduce, on every process every step, so every process keeps the
    same multiplier); None when no process has retain tokens."""
    import torch.distributed as dist

    nll = float(out[T.RETAIN_NLL].value.detach()) if T.RETAIN_NLL in out else None
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return nll
    n = float(step.tok_retain.sum()) if nll is not None else 0.0
    t = torch.tensor([(nll or 0.0) * n, n], dtype=torch.float64, device=step.logp.device)
    dist.all_reduce(t)
    return float(t[0]) / float(t[1]) if float(t[1]) > 0 else None


@register(
    "pdu",
    terms=(PDU_FORGET, T.RETAIN_NLL, PDU_DUAL),
    needs=with_retain,
    summary="PDU: forget term + a dual multiplier on the retain NLL (constraint NLL <= eps)",
    source="Entesari et al. 2025 (arXiv:2506.05314); open-unlearning PDU.yaml",
)
def pdu(step: Step, o) -> dict[str, TermValue]:
    out: dict[str, TermValue] = {}
    dual = step.state.setdefault("pdu_dual", float(o.retain_weight))  # the multiplier starts at alpha
    if step.has_forget:
        value = losses.pdu_forget_loss(step.logits[step.tok_push])
        out[PDU_FORGET] = TermValue(value, o.forget_weight, T.FORGET_TOKENS)
    out.update(retain_block(step, o, nll_weight=dual))
    retain_nll = _global_retain_nll(step, out)
    if retain_nll is not None:
        eps = step.state.setdefault(
            "pdu_eps", o.pdu_retain_eps if o.pdu_retain_eps is not None else retain_nll
        )
        if step.epoch >= o.pdu_dual_warmup_epochs:  # after the warm-up (exact: epoch counts whole passes)
            step.state["pdu_dual"] = losses.pdu_dual_update(dual, retain_nll, eps, o.pdu_dual_step)
    out[PDU_DUAL] = TermValue(torch.tensor(dual, dtype=step.logp.dtype), None, T.ROWS)
    return out
