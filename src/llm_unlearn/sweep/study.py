"""The Optuna side of a sweep: the storage, one study per method, and the loop that runs its trials.

- **Storage**: any Optuna RDB URL: ``sqlite:///DIR/study.db`` on one machine, ``postgresql://...`` or
  ``mysql://...`` across machines; heartbeats every ``heartbeat`` seconds, so that a trial whose process
  died (kill -9, a lost node) is marked FAIL after ``3 x heartbeat`` and **retried once with the same
  options** (``RetryFailedTrialCallback``): a killed sweep, run again, continues where it stopped.
- **Study**: ``NAME-METHOD``, maximized, ``load_if_exists``; the TPE (or random) sampler seeded with
  ``seed + worker`` (workers on one study must not draw the same points); a median pruner (after 3
  trials, never on the starting evaluation) or successive halving, or none.
- **Exact budget**: :func:`run_trials` starts a trial only while ``finished + running < n_trials``
  (finished = complete or pruned), counted and claimed under a file lock that every process on the
  machine shares, so that K processes end with exactly ``n_trials`` finished trials, a trial of a dead
  process counting only once (its retry). With an RDB shared by several machines the lock is per
  machine: each machine may start one trial past the budget.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["make_storage", "open_study", "run_trials", "finished", "FileLock", "storage_path"]

MAX_RETRY = 1


def storage_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for another database)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def quiet_optuna() -> None:
    """Optuna's heartbeat and plots are marked experimental: say nothing of it on every trial."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_storage(url: str, heartbeat: int):
    import optuna.storages as st
    from optuna.storages import RDBStorage

    quiet_optuna()
    retry = getattr(st, "RetryHeartbeatStaleTrialCallback", None) or st.RetryFailedTrialCallback

    kw = {}
    path = storage_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kw["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # several writers wait, not fail
    return RDBStorage(
        url,
        heartbeat_interval=heartbeat,
        grace_period=3 * heartbeat,
        heartbeat_stale_trial_callback=retry(max_retry=MAX_RETRY),
        **kw,
    )


def _pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(storage, name: str, *, sampler: str = "tpe", pruner: str = "median", seed: int = 0):
    import optuna

    smp = (
        optuna.samplers.TPESampler(seed=seed)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=smp,
        pruner=_pruner(pruner),
        load_if_exists=True,
    )


def finished(study) -> list:
    """The complete and pruned trials of `study`."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


class FileLock:
    """An exclusive ``flock`` on a file (released by the kernel when the process dies)."""

    def __init__(self, path: str | Path):
        self.path, self.fd = Path(path), None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def run_trials(
    study,
    objective: Callable,
    n_trials: int,
    lock_path: str | Path,
    *,
    poll: float = 1.0,
    on_trial: Callable | None = None,
) -> int:
    """Run trials of `study` until it holds `n_trials` finished ones (module docstring); returns how many
    this process ran. While the budget is taken by trials running elsewhere, waits for them (or for
    their heartbeats to go stale: then their retries run here)."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    ran = 0
    lock = FileLock(lock_path)
    while True:
        lock.acquire()
        try:
            fail_stale_trials(study)  # a dead process's RUNNING trial -> FAIL, and its retry WAITING
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            start = done + running < n_trials
        except BaseException:
            lock.release()
            raise
        if done >= n_trials:
            lock.release()
            return ran
        if not start:
            lock.release()
            time.sleep(poll)
            continue

        mine: list[int] = []  # the storage id of the trial this process runs (others' run meanwhile)

        def claimed(trial, _lock=lock, _mine=mine):  # RUNNING in the storage: the slot is taken
            _mine.append(trial._trial_id)
            # Its first heartbeat before the lock goes: Optuna's heartbeat thread may not have beaten
            # yet, and a RUNNING trial without one is never stale (a process killed in that instant
            # would hold a slot of the budget for ever, and every rerun would wait on it).
            if is_heartbeat_enabled(study._storage):
                study._storage.record_heartbeat(trial._trial_id)
            _lock.release()
            return objective(trial)

        try:
            study.optimize(claimed, n_trials=1, gc_after_trial=False)
        finally:
            lock.release()  # when optimize failed before the trial began
        ran += 1
        if on_trial is not None:
            on_trial(study._storage.get_trial(mine[0]) if mine else None, done + 1, n_trials)
