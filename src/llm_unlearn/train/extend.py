"""calibration.extend in the training loop: while the last chunk's pass ends with the MIA AUC still above the
band and at its lowest of that pass (`calibration.should_extend`, decided by `Calibrator.extension_due`),
the last chunk is trained once more with the learning rates of its own pass (a run-long schedule is
rewound to the chunk's first step; a chunk-scope one is fresh anyway). Each extension is recorded in the
calibration's state before it trains, so a resumed run decides exactly as an uninterrupted one."""

from __future__ import annotations

import logging

from llm_unlearn.errors import TrainingInterrupted
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


def pass_start(calib, n_chunks: int) -> int:
    """The index of the evaluation the current pass of the last chunk began from: the latest extension's,
    else the end of the chunk before the last (the start itself with one chunk)."""
    if calib.extensions:
        return int(calib.extensions[-1]["from_evaluation"])
    idx = [i for i, e in enumerate(calib.evaluations) if "bisect" not in e and e.get("chunk", 0) < n_chunks]
    return idx[-1] if idx else 0


def extend_last_chunk(loop) -> None:
    """After the chunk loop ran to its end (no stop): the extensions calibration.extend asks for."""
    calib, p = loop.calib, loop.prep
    if calib is None or not p.plan:
        return
    last = len(p.plan) - 1
    while calib.extension_due(pass_start(calib, len(p.plan))):
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
            action = loop._train_chunk(last)
        finally:
            loop.summary_extra = {}
        if action == "stop":
            log.info("calibration: %s", calib.stop_reason)
            return
