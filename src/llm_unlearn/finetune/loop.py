"""The fine-tuning loop (the one memorization trainer): step budget, optimizer and schedule, epochs over
batches (length buckets, a shuffled permutation or length-sorted batches: ``LoopSettings.batching``),
memorization checks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llm_unlearn.data.batching import bucket_batches, padding_fraction
from llm_unlearn.errors import UserError
from llm_unlearn.finetune.data import collate
from llm_unlearn.finetune.memorization import criterion_met, memorization_scores

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_EPOCH_CAP",
    "LoopResult",
    "LoopSettings",
    "epoch_batches",
    "make_optimizer",
    "plan_budget",
    "train_epochs",
]

DEFAULT_EPOCH_CAP = (
    200  # epochs allowed to reach an --until-em criterion when no --epochs/--max-steps is given
)
DEFAULT_EPOCHS = 3  # without any stopping option


@dataclass
class LoopSettings:
    """What the loop needs besides the model, the data and the optimizer."""

    batch_size: int
    max_batch_tokens: int | None
    seed: int
    epochs: int | None
    max_steps: int | None
    until_em: float | None
    eval_every: int
    progress: bool
    device: torch.device
    pad_id: int
    autocast: bool
    batching: str = "buckets"  # buckets | shuffle | sorted (see epoch_batches)
    warmup_steps: int | None = None  # None: min(20, max(1, step_cap // 10))
    lr_floor: float = 0.1  # a fixed budget decays linearly to lr_floor x lr
    steps_per_epoch: int = 0
    epoch_cap: int = 0
    step_cap: int = 0


@dataclass
class LoopResult:
    """One row per epoch, optimizer steps taken, why training stopped, padding fraction of each epoch,
    the loss of every step of the last epoch."""

    history: list[dict] = field(default_factory=list)
    step: int = 0
    stopped: str | None = None
    pad_fracs: list[float] = field(default_factory=list)
    last_epoch_losses: list[float] = field(default_factory=list)


def epoch_batches(
    lengths: Sequence[int], s: LoopSettings, epoch: int, gen: torch.Generator
) -> list[list[int]]:
    """The batches (item indices) of epoch ``epoch`` (1-based), by ``s.batching``:

    - ``buckets``: :func:`bucket_batches` seeded with ``seed * 100003 + epoch`` (similar lengths together,
      capped by ``max_batch_tokens``);
    - ``shuffle``: ``torch.randperm(n, generator=gen)`` cut into consecutive batches (``gen`` is seeded
      once per run with ``seed``, so each epoch draws the next permutation);
    - ``sorted``: items sorted by length (ties by index) cut once into consecutive batches, their order
      ``torch.randperm(n_batches, generator=gen)``.
    """
    n, bs = len(lengths), s.batch_size
    if s.batching == "buckets":
        return bucket_batches(lengths, bs, max_tokens=s.max_batch_tokens, seed=s.seed * 100003 + epoch)
    if s.batching == "shuffle":
        perm = torch.randperm(n, generator=gen).tolist()
        return [perm[i : i + bs] for i in range(0, n, bs)]
    order = sorted(range(n), key=lambda i: lengths[i])
    fixed = [order[i : i + bs] for i in range(0, n, bs)]
    return [fixed[i] for i in torch.randperm(len(fixed), generator=gen).tolist()]


def plan_budget(s: LoopSettings, lengths: Sequence[int]) -> None:
    """Fill in steps per epoch, the epoch cap and the step cap of ``s``."""
    if s.batching not in ("buckets", "shuffle", "sorted"):
        raise UserError(f"batching must be buckets, shuffle or sorted, got {s.batching!r}")
    if s.batching != "buckets" and s.max_batch_tokens is not None:
        raise UserError(f"--max-batch-tokens needs batching 'buckets' (got {s.batching!r})")
    if s.batching == "buckets":
        s.steps_per_epoch = len(
            bucket_batches(lengths, s.batch_size, max_tokens=s.max_batch_tokens, seed=s.seed)
        )
    else:
        s.steps_per_epoch = math.ceil(len(lengths) / s.batch_size)
    if s.max_steps is None and s.epochs is None:
        s.epoch_cap = DEFAULT_EPOCH_CAP if s.until_em is not None else DEFAULT_EPOCHS
    else:
        s.epoch_cap = s.epochs if s.epochs is not None else math.ceil(s.max_steps / s.steps_per_epoch)
    total = s.epoch_cap * s.steps_per_epoch
    s.step_cap = min(s.max_steps or total, total)


def make_optimizer(train_net, lr: float, s: LoopSettings):
    """(trainable parameters, AdamW, LambdaLR): linear warm-up over ``s.warmup_steps`` (default
    min(20, max(1, step_cap // 10))), then constant (criterion) or linear decay over the step cap to
    ``s.lr_floor`` (fixed budget): factor(step) = min(1, (step + 1) / warmup) x max(floor, 1 - step / cap)."""
    params = [p for p in train_net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = s.warmup_steps or min(20, max(1, s.step_cap // 10))
    fixed_budget = s.until_em is None
    step_cap, floor = s.step_cap, s.lr_floor

    def lr_factor(step: int) -> float:
        w = min(1.0, (step + 1) / warmup)
        return w * (max(floor, 1 - step / step_cap) if fixed_budget else 1.0)

    return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _train_epoch(train_net, data, batches, optim, s: LoopSettings, res: LoopResult, bar, epoch):
    """Optimizer steps over ``batches`` (until the step cap); returns (losses, token weights)."""
    examples, lengths, starts = data
    params, opt, sched = optim
    # shuffle pads every batch to the longest item (the demo's memorization padded the data once)
    width = max(lengths) if s.batching == "shuffle" else None
    losses, weights = [], []
    for b in batches:
        batch = collate(
            [examples[i] for i in b],
            s.pad_id,
            s.device,
            width=width,
            starts=None if starts is None else [starts[i] for i in b],
        )
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=s.autocast):
            loss = train_net(**batch).loss
        if not torch.isfinite(loss):
            raise UserError(f"the fine-tuning loss became {loss.item()} at step {res.step + 1}: lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        res.step += 1
        losses.append(loss.item())
        weights.append(sum(lengths[i] - max(1, 0 if starts is None else starts[i]) for i in b))
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
        if res.step >= s.step_cap:
            break
    return losses, weights


def _check_memorization(row: dict, train_net, tok, sample, s: LoopSettings, bar, t0: float) -> bool:
    """Score the sample into ``row``; whether the --until-em criterion is met."""
    t_eval = time.time()
    scores = memorization_scores(train_net, tok, sample, batch_size=max(s.batch_size, 16))
    row.update(em=scores["em"], rougeL=scores["rougeL"], eval_seconds=round(time.time() - t_eval, 2))
    row["seconds"] = round(time.time() - t0, 1)
    bar.set_postfix(
        epoch=row["epoch"],
        loss=f"{row['mean_loss']:.3f}",
        em="-" if scores["em"] is None else f"{scores['em']:.2f}",
        rougeL="-" if scores["rougeL"] is None else f"{scores['rougeL']:.2f}",
    )
    return s.until_em is not None and criterion_met(scores, s.until_em)


def _run_epoch(train_net, tok, data, sample, optim, s, res, bar, epoch, gen, t0) -> dict:
    """One epoch: its batches (epoch_batches), the steps, the epoch's row (with memorization when due)."""
    lengths = data[1]
    batches = epoch_batches(lengths, s, epoch, gen)
    res.pad_fracs.append(padding_fraction(lengths, batches))
    train_net.train()
    t_epoch = time.time()
    losses, weights = _train_epoch(train_net, data, batches, optim, s, res, bar, epoch)
    res.last_epoch_losses = losses
    row = {
        "epoch": epoch,
        "step": res.step,
        "mean_loss": sum(x * w for x, w in zip(losses, weights)) / max(sum(weights), 1),
        "seconds": round(time.time() - t0, 1),
        "train_seconds": round(time.time() - t_epoch, 2),
    }
    last = res.step >= s.step_cap or epoch == s.epoch_cap
    # the generation check is the criterion of --until-em; without it, one check at the end reports the
    # memorization reached (a greedy pass over the sample every epoch would cost more than the training)
    if sample and ((s.until_em is not None and epoch % s.eval_every == 0) or last):
        if _check_memorization(row, train_net, tok, sample, s, bar, t0):
            res.stopped = "criterion"
    return row


def train_epochs(
    train_net, tok, examples, sample, optim, s: LoopSettings, t0: float, label_from=None, desc="finetune"
) -> LoopResult:
    """Epochs until the criterion, the epoch cap or the step cap; a progress bar unless ``s.progress`` is
    False. ``examples``: token ids (EOS included), the loss on every token, or from ``label_from[i]`` on
    (a prompt before it is not trained on)."""
    from tqdm.auto import tqdm

    data = (examples, [len(e) for e in examples], label_from)
    gen = torch.Generator().manual_seed(s.seed)  # shuffle / sorted: one stream of permutations per run
    res = LoopResult()
    bar = tqdm(total=s.step_cap, desc=desc, unit="step", dynamic_ncols=True, disable=not s.progress)
    for epoch in range(1, s.epoch_cap + 1):
        row = _run_epoch(train_net, tok, data, sample, optim, s, res, bar, epoch, gen, t0)
        res.history.append(row)
        log.debug("finetune epoch %s", row)
        if res.stopped:
            break
        if res.step >= s.step_cap:
            res.stopped = "max_steps" if s.max_steps is not None and res.step >= s.max_steps else "epochs"
            break
    else:
        res.stopped = "epochs"
    bar.close()
    if s.until_em is not None and res.stopped != "criterion":
        log.warning(
            "finetune stopped after %d epochs without reaching --until-em %g (last: EM %s, ROUGE-L %s)",
            res.history[-1]["epoch"],
            s.until_em,
            res.history[-1].get("em"),
            res.history[-1].get("rougeL"),
        )
    return res
