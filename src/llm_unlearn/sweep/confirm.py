"""The sweep's selection, stable under the noise of one training run.

A trial's value is one run's proxy: one training seed, a small validation split. The best of 30 such
values is biased upward (the maximum of noisy draws: the winner's curse): on the demo's 30-trial
leaderboard, 3 of 14 tuned configurations scored above their method's default on validation and below it
on the units no trial saw (task aggregate + MIA score). So after the trial budget is met, the
``confirm`` best complete trials, and the default configuration's trial, are each trained again with
``confirm_seeds`` other seeds (``train.seed + 1``, ``+ 2``, ...), on the same validation data, unpruned; the
best configuration is the one with the highest **mean** proxy over its runs (its trial's and these).

**Runs that cannot change the selection are skipped** (racing). A proxy lies in ``[0, BOUND]`` (each
part of ``train/calibration.proxy_score`` is in [0, 1]; a diverged run scores 0), so a candidate with
``j`` of its ``n = confirm_seeds + 1`` runs stored, summing to ``S``, ends with a mean of at most
``(S + (n - j) * BOUND) / n``. When that is below the mean of a candidate whose ``n`` runs are all stored,
it can never be selected, whatever its missing runs give: they are not run. Every stored value is the
same as with every run, so the selection is the one of the full confirmation (and the default's
reported mean, over fewer runs then, is below the best's: each value is at most ``BOUND``). The order
makes skips likely: every candidate's next seed before anyone's later one, and within a seed the
candidate with the highest mean so far first, so the leader's runs end first.

The confirmation runs are stored in the study itself (study user attribute ``confirm-N`` for trial N:
{seed offset: proxy}), each as soon as it ends: a killed sweep, run again, continues with the runs it
had not finished, and the outputs can be written by any process from the study alone. K processes on
one machine (and the tasks of a Slurm array) share the runs: each claims the next run under the study's
file lock (``confirm-claims``: host and process id), a claim of a process that is gone is void, and a
run is stored only if no other process stored it first.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["candidates", "cannot_win", "confirm", "runs_of", "select", "skipped_runs", "BOUND", "KEY"]

KEY = "confirm-{}"
CLAIMS = "confirm-claims"
BOUND = 1.0  # the largest proxy a run can score
_ROUNDING = (
    1e-9  # far above the rounding of a mean of a few numbers in [0, 1] (n * 2**-53), far below any gap
)


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


def _with(trial, extra: dict[str, float]) -> list[float]:
    return [float(trial.value), *(float(extra[s]) for s in sorted(extra, key=int))]


def runs_of(study, trial) -> list[float]:
    """Every proxy of `trial`'s configuration: its own run's, then its confirmation runs' (seed order)."""
    return _with(trial, _stored(study, trial))


def cannot_win(runs: dict[int, list[float]], n: int, number: int, bound: float = BOUND) -> bool:
    """True when trial `number` (``runs``: every candidate's stored proxies) cannot reach, with `n` runs,
    the mean of a candidate that has all `n` stored, whatever its missing runs give (each ``<= bound``;
    a tie is not excluded: it keeps the run)."""
    mine = runs[number]
    if len(mine) >= n:
        return False
    full = [statistics.fmean(r) for k, r in runs.items() if k != number and len(r) >= n]
    if not full:
        return False
    upper = (sum(mine) + (n - len(mine)) * bound) / n
    return upper + _ROUNDING < max(full)


def skipped_runs(study, k: int) -> int:
    """How many confirmation runs were left out because they could not change the selection (counted
    against the candidates with the most runs stored)."""
    cands = candidates(study, k)
    if not cands:
        return 0
    runs = {t.number: runs_of(study, t) for t in cands}
    n = max(len(r) for r in runs.values())
    return sum(n - len(runs[t.number]) for t in cands if cannot_win(runs, n, t.number))


def _alive(claim: dict, host: str) -> bool:
    """Whether the process that claimed a run may still be making it: one of this machine that still
    exists (not this one: it makes one run at a time), or any of another machine."""
    if claim.get("host") != host:
        return True
    pid = int(claim.get("pid") or 0)
    if pid <= 0 or pid == os.getpid():  # this process runs one run at a time: an old claim of its own
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds that id: it is alive
        return True
    return True


def _next_job(study, cands: list, seeds: int, claimed: dict, host: str):
    """The next run to make, (trial, seed offset), or None: not stored, not claimed by a live process,
    able to change the selection; every candidate's next seed first, then the highest mean so far."""
    stored = {t.number: _stored(study, t) for t in cands}  # one storage read each
    runs = {t.number: _with(t, stored[t.number]) for t in cands}
    n = seeds + 1
    open_jobs = []
    for t in cands:
        if cannot_win(runs, n, t.number):
            continue
        for s in range(1, seeds + 1):
            key = f"{t.number}:{s}"
            if str(s) in stored[t.number]:
                continue
            if key in claimed and _alive(claimed[key], host):
                continue
            open_jobs.append((s, -statistics.fmean(runs[t.number]), t.number, t))
    if not open_jobs:
        return None
    s, _, _, t = min(open_jobs, key=lambda j: j[:3])
    return t, s


def confirm(
    study,
    rescore: Callable[[dict[str, Any], int, int], float],
    k: int,
    seeds: int,
    lock_path: str | Path,
    *,
    claims: bool = True,
    on_run: Callable | None = None,
) -> int:
    """Make the confirmation runs the study does not hold yet and that can change the selection (module
    docstring); returns how many ran here. ``rescore(options, seed_index, trial_number)`` trains the
    options with the seed offset ``seed_index`` (1, 2, ...) and returns the kept state's proxy. A run
    another process claimed is left to it while that process may live (a process of this machine that
    exists, or any of another machine); ``claims=False`` (the last pass, after the workers ended) runs
    every run still missing. Call it after the trial budget is met: the candidates are then the same in
    every process."""
    from llm_unlearn.sweep.study import FileLock

    if k <= 0 or seeds <= 0:
        return 0
    ran = 0
    lock = FileLock(lock_path)
    cands = candidates(study, k)
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid()}
    while True:
        lock.acquire()
        try:
            claimed = dict(study.user_attrs.get(CLAIMS) or {})
            job = _next_job(study, cands, seeds, claimed if claims else {}, host)
            if job is not None:
                claimed[f"{job[0].number}:{job[1]}"] = me
                study.set_user_attr(CLAIMS, claimed)
        finally:
            lock.release()
        if job is None:
            return ran
        trial, s = job
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


def select(study, k: int) -> tuple[Any, list[float]] | tuple[None, list[float]]:
    """(best trial, its runs' proxies). With confirmation (`k` > 0): the candidate with the highest mean
    over its runs, among the candidates with the most runs stored (a sweep killed during its confirmation
    compares those it finished; its rerun, all of them; the candidates left out because they could not
    win have fewer; ties: the earlier trial); without, or before any confirmation run is stored: the
    trial with the highest value."""
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
