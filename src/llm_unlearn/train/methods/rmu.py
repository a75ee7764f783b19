"""rmu: steer one layer's forget activations to a random direction, keep its retain activations."""

from __future__ import annotations

import torch

from llm_unlearn import losses
from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import decoder_layers
from llm_unlearn.train.registry import register
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue

RMU_FORGET, RMU_RETAIN = "rmu_forget", "rmu_retain"


def rmu_layer(o, model) -> int:
    """The steered layer: `rmu_layer`, or 7, or the middle layer ((n - 1) // 2) of a model with fewer than 8 layers."""
    if o.rmu_layer is not None:
        return int(o.rmu_layer)
    n = len(decoder_layers(model))
    return 7 if n > 7 else (n - 1) // 2


def rmu_train_layers(o, model) -> list[int]:
    """RMU trains the steered layer and the two below it (WMDP: layers 5, 6, 7 for layer 7)."""
    layer = rmu_layer(o, model)
    return list(range(max(0, layer - 2), layer + 1))


def _label_positions(labels: torch.Tensor, rows_mask: torch.Tensor):
    """(flat indices into [B*T], their rows) of the labelled positions of the rows in `rows_mask`."""
    valid = labels.ne(IGNORE_INDEX) & rows_mask[:, None]
    flat = valid.reshape(-1).nonzero(as_tuple=True)[0]
    return flat, torch.div(flat, labels.shape[1], rounding_mode="floor")


@register(
    "rmu",
    terms=(RMU_FORGET, RMU_RETAIN),
    capture_layer=rmu_layer,
    train_layers=rmu_train_layers,
    needs=lambda o: ReferenceNeeds(hidden=o.retain_weight > 0),
    summary="RMU: steer a layer's forget activations to a random direction, keep retain ones (Li et al. 2024)",
    source="Li et al. 2024, WMDP (arXiv:2403.03218); open-unlearning RMU.yaml",
)
def rmu(step: Step, o) -> dict[str, TermValue]:
    hidden, labels, out = step.hidden, step.batch["labels"], {}
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    if step.has_forget:
        if "rmu_control" not in step.state:  # drawn once per run (seeded: the same on resume)
            vec = losses.rmu_control_vector(hidden.shape[-1], o.rmu_steering, seed=0)
            step.state["rmu_control"] = vec.tolist()
        control = torch.tensor(step.state["rmu_control"], dtype=hidden.dtype, device=hidden.device)
        flat, rows = _label_positions(labels, step.push)
        value = losses.rmu_forget_loss(flat_h.index_select(0, flat), control, rows, step.n_rows)
        out[RMU_FORGET] = TermValue(value, o.forget_weight, T.FORGET_ROWS)
    retain = ~step.is_forget
    if bool(retain.any()) and o.retain_weight > 0:
        b = step.batch
        _, _, frozen = step.source.forward(
            step.model, b["input_ids"], b["attention_mask"], labels, rmu_layer(o, step.model)
        )
        flat, rows = _label_positions(labels, retain)
        frozen_flat = frozen.reshape(-1, frozen.shape[-1]).index_select(0, flat)
        value = losses.rmu_retain_loss(flat_h.index_select(0, flat), frozen_flat, rows, step.n_rows)
        out[RMU_RETAIN] = TermValue(value, o.retain_weight, T.RETAIN_ROWS)
    return out
