"""Shared checks and reductions of the loss functions (see the package docstring for conventions)."""

from __future__ import annotations

import math

import torch


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """``float64`` if any input is ``float64``, else ``float32`` (never lower)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (alpha > 0.0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    return alpha


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (all elements if ``mask`` is None); exactly 0 if none is valid.

    Masked-out elements are selected away with ``torch.where`` (not multiplied by 0), so a NaN or inf
    there does not reach the forward result.
    """
    if mask is None:
        return values.sum() / max(values.numel(), 1)
    _check_same_shape("values", values, "mask", mask)
    mask = mask.to(torch.bool)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    count = mask.sum().clamp_min(1).to(values.dtype)
    return total / count


def _select_rows(
    mask: torch.Tensor | None, lead_shape: torch.Size, *tensors: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Keep the rows (leading positions) where ``mask`` is True: ``[..., X]`` -> ``[M, X]``."""
    if mask is None:
        return tuple(t.reshape(-1, t.shape[-1]) for t in tensors)
    if mask.shape != lead_shape:
        raise ValueError(
            f"mask must have shape {tuple(lead_shape)} (the logits without the vocab dim), got {tuple(mask.shape)}"
        )
    mask = mask.to(torch.bool)
    return tuple(t[mask] for t in tensors)
