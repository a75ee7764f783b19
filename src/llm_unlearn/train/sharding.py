"""FSDP on CPU processes: PyTorch's FSDP2 (``fully_shard``) applied by llm-unlearn itself.

``accelerate launch`` with an FSDP configuration (``distributed_type: FSDP``) sets
``ACCELERATE_USE_FSDP=true`` on every process, but accelerate only turns FSDP on for GPUs (and other
accelerators): on CPU processes (gloo) it silently falls back to DDP. Here that request is honoured:
when the environment asks for FSDP, the run is on CPU and there is more than one process, every
decoder layer and then the whole causal LM (the root: embeddings, final norm, output layer) are
sharded with ``fully_shard`` over all the processes, after the LoRA adapter is attached (frozen base
and trainable LoRA weights share each unit) and after the reference cache is built (on the whole
model, before sharding). The Trainer is kept from wrapping the sharded model in DDP.

What stays as under DDP: FSDP2 reduce-scatters the gradients as their average over the processes, as
DDP all-reduces them, so ``trainer.global_term_scale`` keeps the loss the one of the global batch; the
reference is the same sharded model with its adapter disabled; the answer-only head is a pre-hook on
the output layer inside the root unit. Every unit reshards after its forward (the root too), so
outside a forward the parameters are the sharded ones (what the optimizer holds and what a save
gathers). Saving gathers the full tensors (a collective on every process) and rank 0 writes; a
resume loads the saved adapter into the whole model before it is sharded.

GPU runs are not touched: there accelerate's own FSDP path applies (``trainer.is_fsdp_enabled``).
"""

from __future__ import annotations

import logging
import os

import torch

from llm_unlearn.errors import ConfigError

log = logging.getLogger(__name__)


def cpu_fsdp_requested() -> bool:
    """True when accelerate was asked for FSDP, several processes run, and there is no GPU (so
    accelerate itself will not shard: its FSDP switch applies to accelerators only)."""
    from llm_unlearn.config import fsdp_asked

    return fsdp_asked() and not torch.cuda.is_available()


def check_cpu_fsdp(cfg) -> None:
    """Refuse, in one line and before the model loads, what CPU FSDP does not do (untested here)."""
    if not cpu_fsdp_requested():
        return
    if not cfg.lora.enabled:
        raise ConfigError("FSDP on CPU processes trains a LoRA adapter only; use lora.enabled: true or DDP")
    if cfg.schedule.optimizer_scope == "run":
        raise ConfigError(
            "FSDP on CPU processes needs schedule.optimizer_scope: chunk (the optimizer state is sharded)"
        )


def is_sharded(model) -> bool:
    """True when some parameter of `model` is a DTensor (sharded by FSDP2 or another DTensor engine)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard_for_cpu(trainer) -> int:
    """Apply FSDP2 to the trainer's model when :func:`cpu_fsdp_requested` and accelerate did not shard
    it; returns the number of sharded modules (0: nothing done). Call once, after the reference is
    set up and before the first ``train()``."""
    import torch.distributed as dist
    from accelerate.utils import DistributedType
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from llm_unlearn.train.head import decoder_layers, unwrap_model

    if not cpu_fsdp_requested() or trainer.accelerator.distributed_type == DistributedType.FSDP:
        return 0
    if not dist.is_initialized():  # pragma: no cover - accelerate initializes it for launched runs
        raise RuntimeError("FSDP on CPU: torch.distributed is not initialized")
    peft = unwrap_model(trainer.model)
    root = peft.get_base_model() if hasattr(peft, "get_base_model") else peft
    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    layers = list(decoder_layers(root))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    # the root reshards too: outside a forward every parameter is its shard (optimizer, save, evaluation)
    fully_shard(root, mesh=mesh, reshard_after_forward=True)
    if hasattr(root, "generate"):  # generate() reaches the root's weights outside its forward
        register_fsdp_forward_method(root, "generate")
    # accelerate would wrap the model in DDP on CPU processes: it is sharded already (and FSDP2
    # reduces its gradients itself), so mark it as prepared
    trainer.model._is_accelerate_prepared = True
    n = len(layers) + 1
    trainer.cpu_fsdp_modules = n
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"FSDP2: sharded {n} modules over {world} processes", flush=True)
    return n


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The trainable weights of a sharded PEFT model (the LoRA tensors) gathered whole, under their
    state-dict names, on every process (a collective: every process must call it)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        if "lora_" not in name:
            continue
        t = p.detach()
        out[name] = (t.full_tensor() if isinstance(t, DTensor) else t).cpu().clone()
    return out


def describe(trainer) -> dict | None:
    """run.json's record of the CPU FSDP2 sharding (None when it was not applied): modules sharded,
    processes, how many trainable tensors are DTensors and what wraps the trained model (not DDP)."""
    from torch.distributed.tensor import DTensor

    n = getattr(trainer, "cpu_fsdp_modules", 0)
    if not n:
        return None
    trainable = [p for name, p in trainer.model.named_parameters() if "lora_" in name]
    return {
        "engine": "FSDP2 (fully_shard, CPU processes)",
        "modules": n,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "trainable_dtensors": sum(isinstance(p, DTensor) for p in trainable),
        "trainable_tensors": len(trainable),
        "wrapped_model": type(trainer.model_wrapped).__name__,
    }


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights, whole: a sharded (DTensor) one is gathered, so every process
    must call this at the same point (the calibration's evaluations run on every process)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            t = p.detach()
            out[n] = t.full_tensor() if isinstance(t, DTensor) else t.clone()
    return out


def copy_whole_into(param, value: torch.Tensor) -> None:
    """Copy the whole tensor `value` into `param`; a sharded `param` takes its own shard of it (no
    communication: every process holds `value`)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        part = distribute_tensor(
            value.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None
        )
        param.to_local().copy_(part.to_local())
    else:
        param.copy_(value)


def load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors (`trainable_state`) back into ``model``'s parameters (its shards under FSDP)."""
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in state.items():
            copy_whole_into(params[n], v)
