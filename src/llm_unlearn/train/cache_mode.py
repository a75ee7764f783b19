"""Which reference-cache mode a run uses, and why: ``off`` (the reference runs live on every step),
``full`` (exact distributions stored) or ``topk`` (approximate, only on request). Pure decisions from
sizes and the objective's needs; no model, no files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llm_unlearn.train.methods import as_needs
from llm_unlearn.train.step import ReferenceNeeds, answer_token_count

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


def resolve_mode(mode: str, n_dist_tokens: int, vocab: int, dtype: str, budget_gib: float) -> str:
    """'auto' -> 'full' when n_dist_tokens * vocab * itemsize <= budget, else 'off' (no cache: the
    top-k approximation changes the loss, so it is never chosen for the user)."""
    if mode not in ("auto", "full", "topk"):
        raise ValueError(f"reference cache mode must be auto, full or topk, got {mode!r}")
    if dtype not in ITEMSIZE:
        raise ValueError(f"reference cache dtype must be one of {', '.join(ITEMSIZE)}, got {dtype!r}")
    if mode != "auto":
        return mode
    return "full" if n_dist_tokens * vocab * ITEMSIZE[dtype] <= budget_gib * 2**30 else "off"


def dist_tokens(needs: ReferenceNeeds, rows: Sequence[Mapping[str, Any]]) -> int:
    """Answer tokens whose full reference distribution the objective needs."""
    n = 0
    for r in rows:
        side = needs.forget if bool(r.get("is_forget", False)) else needs.retain
        if side == "dist":
            n += answer_token_count(r["labels"])
    return n


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def choose_mode(mode: str, obj, rows, vocab: int, dtype: str, budget_gib: float) -> tuple[str, str]:
    """``(mode, reason)`` for a run: ``off`` (no cache), ``full`` or ``topk``; ``reason`` is one line
    for the user. ``auto`` gives ``full`` when the needed full reference distributions (answer tokens x
    V x itemsize of ``dtype``) fit ``budget_gib`` or none are needed, else ``off``."""
    needs = as_needs(obj)
    if not needs.any:
        return "off", "the objective uses no reference model"
    if not needs.cacheable:
        return (
            "off",
            "the objective uses the reference's hidden states, computed live (the cache holds log-probs)",
        )
    if mode == "off":
        return "off", "train.reference_cache = off: the reference runs on every step"
    if mode in ("full", "topk"):
        return mode, f"train.reference_cache = {mode}"
    if "dist" not in (needs.forget, needs.retain):
        return "full", "auto: the objective needs no vocabulary distributions (one float per answer token)"
    n = dist_tokens(needs, rows)
    sides = " and ".join(s for s in ("forget", "retain") if getattr(needs, s) == "dist")
    size = f"{n} {sides} answer tokens x V {vocab} x {dtype} = {_gib(n * vocab * ITEMSIZE[dtype])}"
    if resolve_mode("auto", n, vocab, dtype, budget_gib) == "full":
        return "full", f"auto: the exact distributions fit the budget ({size} <= {budget_gib:g} GiB)"
    return "off", (
        f"auto: the exact distributions do not fit the budget ({size} > {budget_gib:g} GiB); the reference "
        "runs on every step (raise train.reference_cache_budget_gib, or opt into the approximate "
        "train.reference_cache = topk)"
    )
