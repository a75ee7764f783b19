"""A sweep worker with a cheap objective (sleeps, returns a function of its point), run as a subprocess by
test_study.py: `python fake_worker.py STORAGE N_TRIALS LOCK SLEEP SEED [HOLD]`; with HOLD (a file
path), trial 1 creates HOLD and then waits there for a minute (the test kills the process meanwhile).
With NOBEAT set to 1, Optuna's heartbeat thread never beats: the worst case of the race in which the
process dies before the thread's first beat (only run_trials' own first heartbeat is left)."""

from __future__ import annotations

import sys
import time

from llm_unlearn.sweep.study import make_storage, open_study, run_trials


def main() -> None:
    url, n, lock, sleep, seed = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        float(sys.argv[4]),
        int(sys.argv[5]),
    )
    hold = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
    if len(sys.argv) > 7 and sys.argv[7] == "1":
        import contextlib

        import optuna.study._optimize as optimize

        optimize.get_heartbeat_thread = lambda *a, **k: contextlib.nullcontext()
    study = open_study(make_storage(url, heartbeat=1), "fake", sampler="random", pruner="none", seed=seed)

    def objective(trial):
        x = trial.suggest_float("x", -1.0, 1.0)
        trial.set_user_attr("pid", __import__("os").getpid())
        if hold and trial.number == 1:
            open(hold, "w").close()
            time.sleep(60)
        time.sleep(sleep)
        return 1.0 - x * x

    ran = run_trials(study, objective, n, lock, poll=0.2)
    print(f"ran {ran}", flush=True)


if __name__ == "__main__":
    main()
