"""The one memorization trainer, in memory: train a model on token sequences until it has memorized them.

:func:`llm_unlearn.finetune.finetune` (data files -> OUT/) runs it, and so do the demo, the tests' memorized
model (tests/conftest.py) and the benchmarks, each with the options that reproduce what they computed
before (``batching``, ``warmup_steps``, ``lr_floor``, ``max_steps`` / ``epochs``): see
:class:`llm_unlearn.finetune.options.FinetuneOptions`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch

from llm_unlearn.errors import UserError
from llm_unlearn.finetune.data import tokenize_texts
from llm_unlearn.finetune.loop import LoopResult, LoopSettings, make_optimizer, plan_budget, train_epochs
from llm_unlearn.finetune.options import FinetuneOptions, check

__all__ = [
    "default_lr",
    "loop_settings",
    "memorize",
    "memorize_tiny",
    "options_of",
    "tiny_model",
    "train_model",
]


def options_of(opts: FinetuneOptions | None, overrides: dict[str, Any]) -> FinetuneOptions:
    """``opts`` (default: the declared defaults) with ``overrides`` (field names) on top."""
    if opts is not None and not isinstance(opts, FinetuneOptions):
        raise TypeError(f"expected FinetuneOptions, got {type(opts).__name__}")
    return dataclasses.replace(opts or FinetuneOptions(), **overrides)


def default_lr(o: FinetuneOptions) -> float:
    """``o.lr``, else 3e-3 for the tiny model, 2e-4 for LoRA, 2e-5 for full fine-tuning."""
    if o.lr is not None:
        return o.lr
    return 3e-3 if o.model == "tiny" else (2e-4 if o.method == "lora" else 2e-5)


def loop_settings(
    o: FinetuneOptions, tok, dev: torch.device, examples: Sequence[list[int]], autocast: bool | None = None
) -> LoopSettings:
    """The loop's settings for ``o`` on ``dev``; the step budget planned for ``examples``. ``autocast``
    (bf16): None = on a GPU that supports it."""
    s = LoopSettings(
        batch_size=o.batch_size,
        max_batch_tokens=o.max_batch_tokens,
        seed=o.seed,
        epochs=o.epochs,
        max_steps=o.max_steps,
        until_em=o.until_em,
        eval_every=o.eval_every,
        progress=o.progress,
        device=dev,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        autocast=(dev.type == "cuda" and torch.cuda.is_bf16_supported()) if autocast is None else autocast,
        batching=o.batching,
        warmup_steps=o.warmup_steps,
        lr_floor=o.lr_floor,
    )
    plan_budget(s, [len(e) for e in examples])
    return s


def train_model(
    train_net,
    tok,
    examples,
    o: FinetuneOptions,
    dev,
    *,
    sample=(),
    label_from=None,
    t0=None,
    desc="finetune",
    on_plan=None,
    autocast: bool | None = None,
) -> tuple[LoopSettings, LoopResult, float]:
    """(settings, result, learning rate): AdamW with the schedule of ``o`` over ``examples`` (token ids),
    the memorization of ``sample`` checked when due; ``train_net`` is trained in place. ``on_plan(s, lr)``
    is called once the budget is planned, before the first step."""
    lr = default_lr(o)
    s = loop_settings(o, tok, dev, examples, autocast)
    optim = make_optimizer(train_net, lr, s)
    if on_plan is not None:
        on_plan(s, lr)
    t0 = time.time() if t0 is None else t0
    res = train_epochs(train_net, tok, examples, list(sample), optim, s, t0, label_from=label_from, desc=desc)
    return s, res, lr


def memorize(
    model,
    tokenizer,
    texts: Sequence[str] | Sequence[list[int]],
    opts: FinetuneOptions | None = None,
    /,
    *,
    label_from: Sequence[int] | None = None,
    sample: Sequence = (),
    **overrides,
) -> dict[str, Any]:
    """Train ``model`` (in place, on its own device unless ``device`` is given) on ``texts`` until it has
    memorized them, as `finetune` does but without files: every text + EOS (cut to ``max_length``), or
    token-id lists as given; the loss on every token, or from ``label_from[i]`` on. ``opts`` /
    ``overrides``: :class:`FinetuneOptions` fields (``max_steps``, ``epochs``, ``lr``, ``batch_size``,
    ``batching``, ``warmup_steps``, ``lr_floor``, ``until_em`` with ``sample``: records whose greedy
    answers are checked, ``seed``, ``progress``; ``dtype`` other than auto: no bf16 autocast on a GPU).
    The model is left in eval mode.

    Returns ``{"steps", "epochs", "stopped", "history", "final_epoch_loss", "steps_per_epoch",
    "learning_rate"}``; ``final_epoch_loss``: the plain mean of the last epoch's step losses."""
    o = options_of(opts, overrides)
    check(o)
    if not texts:
        raise UserError("nothing to memorize (no texts given)")
    if isinstance(texts[0], str):
        examples, _ = tokenize_texts(tokenizer, texts, o.max_length)
    else:
        examples = [list(e) for e in texts]
    dev = torch.device(o.device) if o.device else next(model.parameters()).device
    autocast = None if o.dtype == "auto" else False  # a model of its own dtype: no bf16 autocast
    s, res, lr = train_model(
        model,
        tokenizer,
        examples,
        o,
        dev,
        sample=sample,
        label_from=label_from,
        desc="memorizing",
        autocast=autocast,
    )
    model.eval()
    losses = res.last_epoch_losses
    return {
        "steps": res.step,
        "epochs": res.history[-1]["epoch"] if res.history else 0,
        "stopped": res.stopped,
        "history": res.history,
        "final_epoch_loss": sum(losses) / max(len(losses), 1),
        "steps_per_epoch": s.steps_per_epoch,
        "learning_rate": lr,
    }


def memorize_tiny(texts: Sequence[str], tokenizer, opts: FinetuneOptions | None = None, /, **overrides):
    """(model, info): a fresh tiny OLMo-2 (:func:`tiny_model`) that has memorized ``texts`` with
    :func:`memorize` (``info`` is its return value). The demo's target model, the tests' memorized model
    and the benchmarks' come from here, each with its own options."""
    o = options_of(opts, overrides)
    model = tiny_model(tokenizer, o)
    return model, memorize(model, tokenizer, texts, o)


def tiny_model(tokenizer, o: FinetuneOptions):
    """A fresh tiny OLMo-2 for ``tokenizer`` (``tiny_hidden``, ``tiny_layers``, ``tiny_intermediate``
    (default 4 x hidden), at least 512 positions), seeded with ``seed``, on the CPU."""
    from llm_unlearn.tiny import build_tiny_olmo2

    torch.manual_seed(o.seed)
    return build_tiny_olmo2(
        tokenizer,
        hidden_size=o.tiny_hidden,
        num_layers=o.tiny_layers,
        intermediate_size=o.tiny_intermediate or 4 * o.tiny_hidden,
        max_position_embeddings=max(512, o.max_length or 0),
        seed=o.seed,
    )
