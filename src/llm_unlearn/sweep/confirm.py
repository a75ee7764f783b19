"""The sweep's selection, stable under the noise of one training run.

A trial's value is one run's proxy: one training seed, a small validation split. The best of 30 such
values is biased upward (the maximum of noisy draws: the winner's curse): on the demo's 30-trial
leaderboard, 3 of 14 tuned configurations scored above their method's default on validation and below it
on the units no trial saw (task aggregate + MIA score). So after the trial budget is met, the
``confirm`` best complete trials, and the default configuration's trial, are each trained again with
``confirm_seeds`` other seeds (``train.seed + 1``, ``+ 2``, ...), on the same validation data, unpruned; the
best configuration is the one with the highest **mean** proxy over its runs (its trial's and these).

The confirmation runs are stored in the study itself (study user attribute ``confirm-N`` for trial N:
{seed offset: proxy}), each as soon as it ends: a killed sweep, run again, continues with the
run it had not finished, and the outputs can be written by any process from the study alone. K processes
on one machine (and the tasks of a Slurm array, ``run.confirm_share``) share the runs; a run is stored
under the study's file lock, and only if no other process stored it first.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["candidates", "confirm", "runs_of", "select", "KEY"]

KEY = "confirm-{}"


def _complete(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def candidates(study, k: int) -> list:
    """The `k` best complete trials (ties: the earlier), and the default configuration's trial, in that
    order, each once."""
    done = sorted(_complete(study), key=lambda t: (-t.value, t.number))
    out = done[:k]
    default = next((t for t in done if t.user_attrs.get("default")), None)
    if default is not None and default not in out and k > 0:
        out.append(default)
    return out


def _stored(study, trial) -> dict[str, float]:
    return dict(study.user_attrs.get(KEY.format(trial.number)) or {})  # read from the storage


def runs_of(study, trial) -> list[float]:
    """Every proxy of `trial`'s configuration: its own run's, then its confirmation runs' (seed order)."""
    extra = _stored(study, trial)
    return [float(trial.value), *(float(extra[s]) for s in sorted(extra, key=int))]


def confirm(
    study,
    rescore: Callable[[dict[str, Any], int, int], float],
    k: int,
    seeds: int,
    lock_path: str | Path,
    *,
    share: tuple[int, int] = (0, 1),
    on_run: Callable | None = None,
) -> int:
    """Run the confirmation runs the study does not hold yet (module docstring); returns how many ran
    here. ``rescore(options, seed_index, trial_number)`` trains the options with the seed offset
    ``seed_index`` (1, 2, ...) and returns the kept state's proxy. ``share = (i, K)``: this is process i
    of K on one machine and runs the runs j with j % K == i (the others', those of a process that died
    included, are left to the call with the default share, which runs every missing one). Call it after
    the trial budget is met: the candidates are then the same in every process."""
    from llm_unlearn.sweep.study import FileLock

    if k <= 0 or seeds <= 0:
        return 0
    ran = 0
    lock = FileLock(lock_path)
    jobs = [(t, s) for t in candidates(study, k) for s in range(1, seeds + 1)]
    index, of = share
    for trial, s in (job for j, job in enumerate(jobs) if j % of == index):
        if str(s) in _stored(study, trial):
            continue
        value = float(rescore(trial.user_attrs.get("options") or {}, s, trial.number))
        lock.acquire()
        try:  # read again under the lock: another process may have stored another run meanwhile
            runs = _stored(study, trial)
            runs.setdefault(str(s), value)  # a run stored first by another process is kept
            study.set_user_attr(KEY.format(trial.number), runs)
        finally:
            lock.release()
        ran += 1
        if on_run is not None:
            on_run(trial, s, value)
    return ran


def select(study, k: int) -> tuple[Any, list[float]] | tuple[None, list[float]]:
    """(best trial, its runs' proxies). With confirmation (`k` > 0): the candidate with the highest mean
    over its runs, among the candidates with the most runs stored (a sweep killed during its confirmation
    compares those it finished; its rerun, all of them; ties: the earlier trial); without, or before any
    confirmation run is stored: the trial with the highest value."""
    done = _complete(study)
    if not done:
        return None, []
    cands = candidates(study, k)
    runs = {t.number: runs_of(study, t) for t in cands}  # one storage read each
    pool = [t for t in cands if len(runs[t.number]) > 1]
    if not pool:
        best = max(done, key=lambda t: (t.value, -t.number))
        return best, runs_of(study, best)
    n = max(len(runs[t.number]) for t in pool)
    pool = [t for t in pool if len(runs[t.number]) == n]  # compare means over as many runs
    best = max(pool, key=lambda t: (statistics.fmean(runs[t.number]), -t.number))
    return best, runs[best.number]
