"""calibration.backtrack in the training loop: after an overshoot, the anchor's adapter weights (kept by the
calibrator), its optimizer state (kept here, by the loop that owns the optimizer) and a smaller learning
rate. The rules are `calibration.is_anchor` / `should_backtrack`; `calibrated.Calibrator` decides."""

from __future__ import annotations

import copy
import logging

log = logging.getLogger(__name__)


def _inner(obj, attr: str = "optimizer"):
    """The torch object under accelerate's wrapper: AcceleratedOptimizer.optimizer (a torch optimizer has
    no such attribute), AcceleratedScheduler.scheduler (``attr="scheduler"``; a LambdaLR has none)."""
    inner = getattr(obj, attr, None)
    return obj if inner is None else inner


def optimizer_snapshot(opt) -> dict | None:
    """A deep copy of the optimizer's state dict (None: no optimizer yet, i.e. no state: a fresh start)."""
    return None if opt is None else copy.deepcopy(_inner(opt).state_dict())


def load_optimizer_snapshot(opt, snapshot: dict | None) -> None:
    """Put ``snapshot`` (from `optimizer_snapshot`) back into ``opt``; None clears its state (the moments of
    a state taken before any step), keeping its parameter groups."""
    if opt is None:
        return
    inner = _inner(opt)
    if snapshot is None:
        inner.state.clear()
        return
    lrs = [g["lr"] for g in inner.param_groups]  # the learning rate is the schedule's, not the snapshot's
    inner.load_state_dict(copy.deepcopy(snapshot))
    for g, lr in zip(inner.param_groups, lrs):
        g["lr"] = lr


def scale_learning_rate(args, opt, sched, factor: float) -> None:
    """Multiply the learning rate by ``factor`` from now on: the schedule's base rates (a LambdaLR computes
    every later rate from them), the rate of the next step (already set by the schedule's last step), and
    ``args.learning_rate`` (what a fresh optimizer of a later chunk starts from, optimizer_scope chunk)."""
    if sched is not None and hasattr(_inner(sched, "scheduler"), "base_lrs"):
        s = _inner(sched, "scheduler")
        s.base_lrs = [b * factor for b in s.base_lrs]
    if opt is not None:
        for g in _inner(opt).param_groups:
            g["lr"] *= factor
    args.learning_rate *= factor


def after_evaluation(loop, action: str | None, step: int) -> str | None:
    """The loop's side of one evaluation: keep the optimizer state of a new anchor; carry out a backtrack
    (then the loop trains on: returns None); any other action is returned as it is."""
    calib, trainer = loop.calib, loop.trainer
    if calib.anchor_taken:
        loop.anchor_optimizer = optimizer_snapshot(trainer.optimizer or loop.run_opt)
        calib.anchor_taken = False
    if action != "backtrack":
        return action
    factor = float(calib.c.backtrack_factor)
    entry = calib.take_backtrack(trainer.model, step=step, factor=factor)
    opt = trainer.optimizer or loop.run_opt
    load_optimizer_snapshot(opt, getattr(loop, "anchor_optimizer", None))
    scale_learning_rate(trainer.args, opt, trainer.lr_scheduler or loop.run_sched, factor)
    if calib.c.mode == "gate":
        calib.refresh_gate(trainer)  # the gate and caps of the state gone back to
    log.info(
        "calibration: step %d: overshoot (MIA AUC %.3f); back to evaluation %d (step %s, MIA AUC %.3f), "
        "learning rate x %g from now on (backtrack %d of %d)",
        step,
        entry["mia_auc"],
        entry["to_evaluation"],
        entry["to_step"],
        entry["to_mia_auc"],
        entry["lr_factor"],
        len(calib.backtracks),
        int(calib.c.backtrack),
    )
    return None
