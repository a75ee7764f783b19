"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark",
arXiv:2403.03218): push the hidden states of one layer on forget tokens towards a fixed random
direction, keep them equal to the frozen model's on retain tokens.

Hidden states are the output of one decoder layer at the answer positions, flat: ``[N, H]``.
"""

from __future__ import annotations

import math

import torch

from llm_unlearn.losses._common import _compute_dtype
from llm_unlearn.losses.token import row_counts, row_sums


def rmu_control_vector(
    hidden_size: int,
    steering_coeff: float = 20.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The RMU target ``c * u``: ``u = r / ||r||``, ``r ~ Uniform[0, 1)^H`` drawn from a
    ``torch.Generator`` seeded with ``seed`` (on the CPU, so the vector is the same on every device).

    As in the WMDP code and open-unlearning (``get_control_vector`` in ``src/trainer/unlearn/rmu.py``):
    uniform in ``[0, 1)`` (not Gaussian), so ``u`` lies in the positive orthant; it is drawn once and
    kept fixed for the whole run. Shape ``[H]``; its norm is ``steering_coeff``.
    Defaults: ``steering_coeff`` 20 is open-unlearning's class default and the WMDP script's default
    (``--steering_coeffs 20,20``); open-unlearning's ``configs/trainer/RMU.yaml`` sets 2 and says to tune
    it per model and layer (it must be large relative to the layer's activation norm).
    """
    if int(hidden_size) <= 0:
        raise ValueError(f"hidden_size must be > 0, got {hidden_size}")
    coeff = float(steering_coeff)
    if not (coeff > 0.0 and math.isfinite(coeff)):
        raise ValueError(f"steering_coeff must be a finite number > 0, got {steering_coeff}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    r = torch.rand(int(hidden_size), generator=gen, dtype=torch.float64)
    return (r / r.norm() * coeff).to(dtype=dtype, device=device)


def _activation_mse(
    hidden: torch.Tensor, target: torch.Tensor, rows: torch.Tensor | None, n_rows: int | None
) -> torch.Tensor:
    """``e_n = mean_h (hidden[n, h] - target[n, h])^2`` then the mean over tokens (``rows`` None) or
    the mean over non-empty rows of the per-row token mean. ``N == 0`` -> exactly 0 (connected)."""
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, H], got shape {tuple(hidden.shape)}")
    dtype = _compute_dtype(hidden, target)
    per_token = (hidden.to(dtype) - target.to(dtype)).pow(2).mean(-1)
    if rows is None:
        return per_token.sum() / max(per_token.numel(), 1)
    if n_rows is None or rows.shape != per_token.shape:
        raise ValueError("rows [N] and n_rows must be given together")
    counts = row_counts(rows, n_rows, dtype)
    present = counts > 0
    per_row = row_sums(per_token, rows, n_rows)[present] / counts[present]
    return per_row.sum() / max(per_row.numel(), 1)


def rmu_forget_loss(
    hidden: torch.Tensor,
    control: torch.Tensor,
    rows: torch.Tensor | None = None,
    n_rows: int | None = None,
) -> torch.Tensor:
    """RMU forget term: ``L_f = mean_n (1/H) ||h_theta(x)_n - c u||^2`` over forget tokens.

    ``hidden [N, H]``: the trained model's layer-``l`` output at the forget answer positions;
    ``control [H]`` from :func:`rmu_control_vector`. With ``rows [N]`` / ``n_rows``: per-row mean over
    its tokens, then the mean over rows with tokens (open-unlearning ``compute_activation_loss`` in
    ``src/trainer/unlearn/rmu.py``, which masks with ``labels != -100``); without: the mean over
    tokens (the WMDP script's ``mse_loss`` over all positions, there unmasked). ``(1/H)``: both use
    ``mse_loss``, a mean over the hidden dimension. -> scalar; ``N == 0`` -> exactly 0.
    Defaults: layer 7 (open-unlearning RMU.yaml ``module_regex: model\\.layers\\.7``, the WMDP
    ``layer_id``), ``gamma = 1``; see ``docs/methods.md`` for the layer index and the LoRA targets.
    """
    if control.dim() != 1 or hidden.dim() != 2 or control.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"expected hidden [N, H] and control [H], got {tuple(hidden.shape)} and {tuple(control.shape)}"
        )
    return _activation_mse(hidden, control.unsqueeze(0), rows, n_rows)


def rmu_retain_loss(
    hidden: torch.Tensor,
    frozen_hidden: torch.Tensor,
    rows: torch.Tensor | None = None,
    n_rows: int | None = None,
) -> torch.Tensor:
    """RMU retain term: ``L_r = mean_n (1/H) ||h_theta(x)_n - h_frozen(x)_n||^2`` over retain tokens.

    ``frozen_hidden [N, H]``: the same layer's output of the frozen model (LoRA adapter disabled),
    which should carry no gradient (not detached here). Reductions as :func:`rmu_forget_loss`
    (open-unlearning ``retain_loss_type: EMBED_DIFF``). The weight ``alpha`` is applied by the
    caller: open-unlearning RMU.yaml 1; the WMDP script's default 100, its Zephyr-7B command 1200. -> scalar;
    ``N == 0`` -> exactly 0.
    """
    if hidden.shape != frozen_hidden.shape:
        raise ValueError(
            f"hidden and frozen_hidden must have the same shape, got {tuple(hidden.shape)} and {tuple(frozen_hidden.shape)}"
        )
    return _activation_mse(hidden, frozen_hidden, rows, n_rows)
