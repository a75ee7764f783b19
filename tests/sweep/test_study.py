"""The study loop across processes: an exact trial budget with two workers, and a sweep killed with
kill -9 that, run again, ends with the same number of finished trials, none lost or counted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from llm_unlearn.sweep.study import make_storage, open_study  # noqa: E402

WORKER = Path(__file__).with_name("fake_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _start(
    url: str, n: int, lock: Path, sleep: float, seed: int, hold: Path | None = None, nobeat: bool = False
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [sys.executable, str(WORKER), url, str(n), str(lock), str(sleep), str(seed)]
    args += [str(hold) if hold else "", "1" if nobeat else "0"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(url: str):
    return open_study(make_storage(url, heartbeat=1), "fake", sampler="random").get_trials(deepcopy=False)


def _states(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_two_workers_on_one_sqlite_study_finish_exactly_n_trials(tmp_path):
    url, lock = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "study.lock"
    open_study(make_storage(url, heartbeat=1), "fake", sampler="random")  # create the tables once
    procs = [_start(url, 5, lock, 0.3, seed) for seed in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(url)
    assert _states(trials) == {"COMPLETE": 5}  # not one more: the budget is claimed under the lock
    ran = [int(o[0].split()[-1]) for o in outs]
    assert sum(ran) == 5
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes ran trials


@pytest.mark.parametrize("nobeat", [False, True], ids=["optuna-beats", "killed-before-first-beat"])
def test_sweep_killed_with_kill_9_and_rerun_keeps_the_budget(tmp_path, nobeat):
    """killed-before-first-beat: the process dies before Optuna's heartbeat thread has beaten once (a
    race that a loaded machine loses); a RUNNING trial without any heartbeat never goes stale, so
    run_trials beats once itself before it lets the trial run."""
    n = 4
    # the uninterrupted reference
    ref = f"sqlite:///{tmp_path / 'ref.db'}"
    p = _start(ref, n, tmp_path / "ref.lock", 0.05, 0)
    assert p.wait(timeout=120) == 0, p.communicate()
    assert _states(_trials(ref)) == {"COMPLETE": n}

    url, lock = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "study.lock"
    hold = tmp_path / "in-trial-1"
    p = _start(url, n, lock, 0.05, 0, hold, nobeat)
    deadline = time.time() + 90
    while not hold.exists() and time.time() < deadline:  # kill it in the middle of its second trial
        time.sleep(0.05)
    assert hold.exists(), p.communicate()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = _trials(url)
    killed = [t for t in before if t.state.name == "RUNNING"]
    assert len(killed) == 1
    p = _start(url, n, lock, 0.05, 1, nobeat=nobeat)  # the same command again
    assert p.wait(timeout=120) == 0, p.communicate()
    after = _trials(url)
    states = _states(after)
    assert states == {"COMPLETE": n, "FAIL": 1}, states  # the same finished count as uninterrupted
    failed = next(t for t in after if t.state.name == "FAIL")
    assert failed.number == killed[0].number
    retries = [t for t in after if t.state.name == "COMPLETE" and t.params == failed.params]
    assert len(retries) == 1 and retries[0].number > failed.number  # retried once, with its options
    done_before = {t.number for t in before if t.state.name == "COMPLETE"}
    assert done_before <= {t.number for t in after if t.state.name == "COMPLETE"}  # nothing lost


def test_progress_names_the_trial_this_process_ran(tmp_path):
    """With other processes on the study, the newest trial in the storage is often theirs (running):
    the progress line must show the one this process finished."""
    from llm_unlearn.sweep.study import run_trials

    study = open_study(make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=1), "fake")
    seen = []

    def objective(trial):
        study.ask()  # another process's trial starts meanwhile: RUNNING, numbered after this one
        return 0.25

    run_trials(study, objective, 1, tmp_path / "lock", on_trial=lambda t, done, n: seen.append(t))
    assert [(t.number, t.state.name, t.value) for t in seen] == [(0, "COMPLETE", 0.25)]
    assert study.get_trials(deepcopy=False)[-1].state.name == "RUNNING"  # the premise
