"""Sharpness-aware minimization (SAM) of the unlearning objective (``--sam-rho``, any method).

Foret et al. 2021 (ICLR), "Sharpness-Aware Minimization for Efficiently Improving Generalization";
applied to unlearning by Fan et al. 2025 (ICML), "Towards LLM Unlearning Resilient to Relearning
Attacks: A Sharpness-Aware Minimization Perspective and Beyond" (arXiv:2502.05374), who report that
the smoothness makes NPO's forgetting harder to undo by relearning. One optimizer step:

    g   = grad L(theta)                       (the step's full gradient: every micro-batch of the
                                                gradient accumulation, averaged over the processes)
    eps = rho * g / ||g||_2                   (over the trainable parameters only: the LoRA adapter,
                                                or every trained weight under full fine-tuning)
    g'  = grad L(theta + eps)                 (the same micro-batches, the same loss, again)
    theta <- optimizer step with g' applied at theta   (clipping and the optimizer as usual)

``rho = 0`` is the ordinary step (the trainer does not even enter this module). ``||g|| = 0``: eps = 0,
g' = g, and the second pass is skipped (it would compute g again).

The second pass evaluates exactly the objective of the first: each micro-batch's pushed forget rows
(the calibration gate, including the per-step loss caps) and the objective's state (PDU's multiplier)
are those the first pass used; its loss terms are not logged again and it changes no state. The
reference is untouched by eps (the adapter switched off, or the frozen copy). Data parallelism (DDP):
the first pass ends with the gradients all-reduced, so every process holds the same global g, the same
norm and the same eps; the second pass runs the micro-batches with the same synchronization as the
first (no all-reduce until the last). Sharded training (FSDP, DeepSpeed) holds the gradients in shards
or in the engine: refused there.

Cost: two forward and backward passes per micro-batch, so about twice an ordinary step.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from llm_unlearn.errors import ConfigError


def check_supported(trainer) -> None:
    """Refuse SAM where the full gradient is not in ``param.grad`` of every process."""
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        raise ConfigError("train.sam_rho > 0 is not supported with FSDP or DeepSpeed: use DDP or one process")
    if getattr(trainer, "cpu_fsdp_modules", 0):
        raise ConfigError("train.sam_rho > 0 is not supported with FSDP2 sharding: use DDP or one process")


def perturbation(params: list[torch.Tensor], rho: float) -> list[torch.Tensor] | None:
    """``eps = rho * g / ||g||`` per parameter (``g = param.grad``; a parameter without a gradient gets
    none: its eps is 0); None when ``||g||`` is 0 or not finite. The norm is taken in float64."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float64) for g in grads])
    )
    norm_f = float(norm)
    if not (norm_f > 0.0 and torch.isfinite(norm)):
        return None
    return [
        (p.grad.detach().to(torch.float64) * (float(rho) / norm_f)).to(p.dtype)
        if p.grad is not None
        else torch.zeros_like(p)
        for p in params
    ]


def sharpness_aware_grad(trainer, model, micro_batches: list, records: list, num_items_in_batch) -> bool:
    """Replace the accumulated gradient at theta by the gradient at theta + eps (the module docstring).

    ``micro_batches``: the step's inputs in order; ``records``: per micro-batch, what its first pass
    used (``(push, objective_state)``). Returns False when eps was 0 (gradient left as it was)."""
    params = [p for p in model.parameters() if p.requires_grad]
    eps = perturbation(params, trainer.sam_rho)
    if eps is None:
        return False
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
    model.zero_grad(set_to_none=True)
    last = len(micro_batches) - 1
    try:
        for j, (inputs, record) in enumerate(zip(micro_batches, records)):
            sync = (
                contextlib.nullcontext
                if j == last
                else functools.partial(trainer.accelerator.no_sync, model=model)
            )
            trainer.sam_replay = record
            with sync():
                trainer.plain_training_step(model, inputs, num_items_in_batch)
    finally:
        trainer.sam_replay = None
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)  # exactly theta again (not theta + eps - eps)
    return True
