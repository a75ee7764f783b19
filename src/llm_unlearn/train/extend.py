"""calibration.extend in the training loop: while the last chunk's pass ends with the MIA AUC still above the
band and still falling (at its lowest of that pass, or the loss gap still falling: `calibration.should_extend`,
decided by `extension_due`),
the last chunk is trained once more with the learning rates of its own pass (a run-long schedule is
rewound to the chunk's first step; a chunk-scope one is fresh anyway). Each extension is recorded in the
calibration's state before it trains, so a resumed run decides exactly as an uninterrupted one.

What an extension pass trains on (:func:`extension_rows`): with the gate and `calibration.extend_revisit`
(on), every chunk's rows, forget and retain, in the schedule's order, the gate deciding which forget rows
are pushed.
The AUC is measured over all forget documents, so a run above the band whose last chunk's units are all
past their targets is held there by units of earlier chunks that relapsed while later chunks trained;
the last chunk alone would end its pass within a few steps, every one of its rows gated off, with the
AUC where it was. The pass keeps the last chunk's number of steps (its budget), only over more rows."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from llm_unlearn.errors import TrainingInterrupted
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.backtrack import _inner
from llm_unlearn.train.process import any_process

log = logging.getLogger(__name__)


def rewind_schedule(opt, sched, step: int) -> None:
    """Put a LambdaLR schedule (every transformers schedule is one) back at ``step``: the next optimizer
    step takes the rate it took at that step, and the later ones follow. None: nothing to do."""
    if opt is None or sched is None:
        return
    s = _inner(sched, "scheduler")
    if not hasattr(s, "lr_lambdas"):
        return
    lrs = [base * lam(step) for base, lam in zip(s.base_lrs, s.lr_lambdas)]
    for g, lr in zip(_inner(opt).param_groups, lrs):
        g["lr"] = lr
    s.last_epoch = step
    s._last_lr = list(lrs)


def extension_rows(plan: Sequence[list], *, revisit: bool) -> list:
    """The ``(kind, row)`` pairs of an extension pass: the last chunk's; with ``revisit`` every chunk's,
    chunk after chunk, each in its own interleaving, so that the pass keeps the schedule's ratio of
    retain rows to forget rows (the last chunk's retain rows alone would leave most batches without a
    retain row). A plan whose last chunk already revisits (calibration.revisit) is given with
    ``revisit`` False."""
    if not revisit:
        return list(plan[-1])
    return [pair for chunk in plan for pair in chunk]


def revisits(cfg) -> bool:
    """Whether this run's extensions revisit the earlier chunks' rows: the gate decides which of their
    forget rows are pushed, so only with it (calibration.mode gate), and not when the last chunk already holds
    them all (calibration.revisit)."""
    c = cfg.calibration
    return bool(c.extend_revisit) and c.mode == "gate" and not c.revisit


@contextlib.contextmanager
def _pass_over(loop, last: int, rows: list):
    """The last chunk's entry of the plan replaced by ``rows`` and the trainer held to the last chunk's
    steps (``max_steps``) for one extension pass; both restored after."""
    p, args = loop.prep, loop.trainer.args
    own, own_max = p.plan[last], args.max_steps
    p.plan[last] = rows
    args.max_steps = p.per_chunk_steps[last]
    try:
        yield
    finally:
        p.plan[last], args.max_steps = own, own_max


def pass_start(calib, n_chunks: int) -> int:
    """The index of the evaluation the current pass of the last chunk began from: the latest extension's,
    else the end of the chunk before the last (the start itself with one chunk)."""
    if calib.extensions:
        return int(calib.extensions[-1]["from_evaluation"])
    idx = [i for i, e in enumerate(calib.evaluations) if "bisect" not in e and e.get("chunk", 0) < n_chunks]
    return idx[-1] if idx else 0


def extension_due(calib, pass_start: int) -> bool:
    """calibration.extend: train the last chunk once more? ``pass_start``: the index of the evaluation the
    pass began from (the end of the chunk before it); bisected states are not the path."""
    if calib.c.mode == "off" or not calib.evaluations:
        return False
    own = [e for e in calib.evaluations[pass_start:] if "bisect" not in e]
    return cal.should_extend(
        [e.get("mia_auc") for e in own],
        gaps=[e.get("loss_gap") for e in own],
        tolerance=float(calib.c.tolerance),
        done=len(calib.extensions),
        allowed=int(calib.c.extend),
        stopped=calib.stop_reason is not None,
        ended_early=_ended_early(calib, own),
    )


def _ended_early(calib, own: list) -> bool:
    """Whether the gate ended the last chunk's current pass (an entry in chunk_ends) at that pass's latest
    evaluation (``own``: the pass's evaluations, its start first)."""
    if len(own) < 2 or not calib.chunk_ends:
        return False
    end = calib.chunk_ends[-1]
    return end.get("chunk") == len(calib.per_chunk_steps) and end.get("step") == own[-1].get("step")


def extend_last_chunk(loop) -> None:
    """After the chunk loop ran to its end (no stop): the extensions calibration.extend asks for."""
    calib, p = loop.calib, loop.prep
    if calib is None or not p.plan:
        return
    last = len(p.plan) - 1
    rows = extension_rows(p.plan, revisit=revisits(p.cfg))
    while extension_due(calib, pass_start(calib, len(p.plan))):
        if any_process(loop.stop_flag):
            raise TrainingInterrupted(
                f"interrupted after chunk {len(p.plan)}/{len(p.plan)} (saved in {p.out}). "
                "Run the same command again to resume."
            )
        ev = calib.evaluations[-1]
        entry = {
            "step": loop.offset,
            "mia_auc": ev.get("mia_auc"),
            "from_evaluation": len(calib.evaluations) - 1,
            "steps": p.per_chunk_steps[last],
        }
        calib.extensions.append(entry)
        log.info(
            "calibration: step %d: MIA AUC %.3f is still above the band and falling: the last chunk once "
            "more (%d steps; extension %d of %d)",
            entry["step"],
            entry["mia_auc"],
            entry["steps"],
            len(calib.extensions),
            int(calib.c.extend),
        )
        rewind_schedule(loop.run_opt, loop.run_sched, sum(p.per_chunk_steps[:last]))
        loop.progress.grow(p.per_chunk_steps[last])
        loop.summary_extra = {"extension": len(calib.extensions)}
        try:
            with _pass_over(loop, last, rows):
                action = loop._train_chunk(last)
        finally:
            loop.summary_extra = {}
        if action == "stop":
            log.info("calibration: %s", calib.stop_reason)
            return
