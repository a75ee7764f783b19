"""Relearning attack: fine-tune the unlearned model a few steps on some forget units, score the others.

Hu et al. (2024) and Lynch et al. (2024): when a few optimizer steps on part of the forget set bring
back the rest, the knowledge was suppressed, not removed. Procedure (seeded):

1. the forget units (whole units: records sharing a unit, a TOFU author) are shuffled with
   ``random.Random(seed)``; the first ``max(1, round(fraction * n))`` (at most ``n - 1``) are the
   **relearning units**, the rest the **held-out units**;
2. a merged copy of the model is fine-tuned by the project's one memorization trainer
   (:func:`llm_unlearn.finetune.memorize`: AdamW, warm-up, linear decay) for ``steps`` steps on the
   relearning units' ``prompt + answer`` texts (loss on every token), with a fresh LoRA adapter
   (default; :func:`llm_unlearn.modeling.apply_lora`) or all weights (``full``);
3. only the held-out units are scored (and the retain set), before and after.

With a never-trained model (``finetune`` on retain only builds one), the same relearning runs on it:
what it gains on the held-out units is what relearning teaches by itself; what the unlearned model
gains beyond that is what it still knew.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm_unlearn.errors import UserError

__all__ = ["RelearnSettings", "split_units", "relearned_copy", "run_relearning"]


@dataclass
class RelearnSettings:
    steps: int = 20
    fraction: float = 0.5
    lr: float = 1e-3
    method: str = "lora"  # lora | full
    lora_r: int = 8
    lora_alpha: int = 16
    batch_size: int = 8
    seed: int = 0


def split_units(units: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(relearning units, held-out units), both in the order given; see the module docstring."""
    if len(units) < 2:
        raise UserError("relearning needs at least 2 forget units (one to relearn, one to score)")
    order = list(units)
    random.Random(seed).shuffle(order)
    k = min(len(order) - 1, max(1, round(fraction * len(order))))
    chosen = set(order[:k])
    return [u for u in units if u in chosen], [u for u in units if u not in chosen]


def relearned_copy(model, tokenizer, texts: Sequence[str], s: RelearnSettings, progress: bool):
    """A merged copy of ``model`` fine-tuned on ``texts`` (``model`` is not changed)."""
    from llm_unlearn.attacks.quantization import merged_copy
    from llm_unlearn.finetune import memorize
    from llm_unlearn.modeling import apply_lora

    net = merged_copy(model)
    torch.manual_seed(s.seed)  # the LoRA initialization
    if s.method == "lora":
        net = apply_lora(net, r=s.lora_r, alpha=s.lora_alpha)
    else:
        for p in net.parameters():
            p.requires_grad_(True)
    memorize(
        net,
        tokenizer,
        list(texts),
        max_steps=s.steps,
        lr=s.lr,
        seed=s.seed,
        batch_size=s.batch_size,
        progress=progress,
        max_length=None,
    )
    net.eval()
    return net


def run_relearning(ctx, s: RelearnSettings) -> dict:
    """The attack on the stage's context: ``{"relearn_units", "heldout_units", "unlearned":
    {"before", "after"}, "never_trained": {...} | None, "target": rows}`` (rows: forget = held-out units
    only, retain = the whole retain set)."""
    relearn, heldout = split_units(ctx.probes.units(), s.fraction, s.seed)
    train = [p for p in ctx.probes.forget if p.unit in set(relearn)]
    held = [p for p in ctx.probes.forget if p.unit in set(heldout)]
    texts = [p.prompt + p.answer for p in train]
    ctx.say(
        f"relearning: {len(train)} items of {len(relearn)} units, {s.steps} steps ({s.method}); scoring {len(held)} items"
    )
    out = {"relearn_units": relearn, "heldout_units": heldout, "n_relearn_items": len(train)}
    out["target"] = ctx.score_all("target", ctx.target, "target", forget=held)
    models = [("unlearned", ctx.unlearned)]
    if ctx.never is not None:
        models.append(("never_trained", ctx.never))
    for name, model in models:
        before = ctx.score_all(name, model, name, forget=held)
        net = relearned_copy(model, ctx.tokenizer, texts, s, ctx.progress)
        after = ctx.score_all(f"{name}+relearned", net, f"{name} relearned", forget=held)
        out[name] = {"before": before, "after": after}
        del net
    out.setdefault("never_trained", None)
    return out
