"""The sweep's confirmation (sweep/confirm.py), with the training replaced by a table of proxies per
(trial, seed offset): which trials are confirmed, the mean that selects, the runs that cannot change it
skipped (the selection the same as with every run), the runs stored in the study and never run twice, a
killed confirmation continued, processes sharing the runs by claims."""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from llm_unlearn.sweep import report  # noqa: E402
from llm_unlearn.sweep.confirm import (  # noqa: E402
    BOUND,
    CLAIMS,
    candidates,
    cannot_win,
    confirm,
    runs_of,
    select,
    skipped_runs,
)


def _study(values, default=None):
    study = optuna.create_study(direction="maximize")
    for i, v in enumerate(values):
        attrs = {"options": {"train.learning_rate": 10.0**-i}, "default": i == default}
        study.add_trial(optuna.trial.create_trial(value=v, user_attrs=attrs))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    return study


class Table:
    """rescore(options, s, number) -> table[number][s - 1], recording each call."""

    def __init__(self, table, fail_after=None):
        self.table, self.calls, self.fail_after = table, [], fail_after

    def __call__(self, options, s, number):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt  # the process is killed during this run
        self.calls.append((number, s))
        assert options == {"train.learning_rate": 10.0**-number}  # the trial's own options
        return self.table[number][s - 1]


def test_candidates_are_the_best_k_and_the_default():
    study = _study([0.5, 0.9, 0.7, 0.9], default=0)
    assert [t.number for t in candidates(study, 2)] == [1, 3, 0]  # ties: the earlier first
    assert [t.number for t in candidates(study, 1)] == [1, 0]
    assert [t.number for t in candidates(study, 4)] == [1, 3, 2, 0]  # the default once
    assert candidates(study, 0) == []


def test_cannot_win_is_the_bound_on_the_missing_runs():
    # 3 runs each; trial 2 holds all three (mean 0.9)
    runs = {1: [0.95, 0.8], 2: [0.9, 0.9, 0.9], 3: [0.7]}
    assert not cannot_win(runs, 3, 2)  # complete: nothing to skip
    assert not cannot_win(runs, 3, 1)  # (0.95 + 0.8 + 1) / 3 = 0.917 >= 0.9
    assert not cannot_win(runs, 3, 3)  # (0.7 + 1 + 1) / 3 = 0.9: a tie is not excluded...
    assert not cannot_win({1: [0.7 - 1e-12], 2: [0.9, 0.9, 0.9]}, 3, 1)  # ...nor a tie up to rounding
    assert cannot_win({1: [0.69], 2: [0.9, 0.9, 0.9]}, 3, 1)  # 0.8967 < 0.9
    assert not cannot_win({1: [0.1], 2: [0.9, 0.9]}, 3, 1)  # nobody complete yet: no bound
    assert not cannot_win({1: [0.69], 2: [0.9, 0.9, 0.9]}, 3, 1, bound=1.05)  # a wider range keeps it
    assert BOUND == 1.0


def test_the_highest_mean_is_selected_not_the_highest_single_run(tmp_path):
    # trial 1 had the luckiest run (0.95) but its other seeds say 0.55; trial 2 holds 0.85 on every seed
    study = _study([0.6, 0.95, 0.85], default=0)
    rescore = Table({0: [0.6, 0.6], 1: [0.55, 0.55], 2: [0.85, 0.86]})
    assert select(study, 2)[0].number == 1  # before confirmation: the best single run
    # every candidate's first seed (by value), then the best mean's second: trial 2 ends at 0.853; trial 1
    # can reach (0.95 + 0.55 + 1) / 3 = 0.833 at most, the default 0.733: not run
    assert confirm(study, rescore, 2, 2, tmp_path / "lock") == 4
    assert rescore.calls == [(1, 1), (2, 1), (0, 1), (2, 2)]
    best, runs = select(study, 2)
    assert best.number == 2 and runs == [0.85, 0.85, 0.86]
    assert runs_of(study, study.trials[1]) == [0.95, 0.55]
    assert skipped_runs(study, 2) == 2
    res = report.method_result("m", study, confirm=2)
    assert res["best"]["number"] == 2 and res["best"]["value"] == pytest.approx((0.85 + 0.85 + 0.86) / 3)
    assert res["default"] == {"number": 0, "value": pytest.approx(0.6), "runs": [0.6, 0.6]}
    assert res["confirmation"] == {"runs": 4, "skipped": 2}
    # without confirmation (--confirm 0): the best single run, as before
    assert report.method_result("m", study, confirm=0)["best"]["number"] == 1


def _full_selection(values, table, k, seeds, default):
    """The selection with every run made: the highest mean over all seeds (ties: the earlier trial)."""
    done = sorted(range(len(values)), key=lambda n: (-values[n], n))
    cands = done[:k] + ([default] if default not in done[:k] else [])
    means = {n: statistics.fmean([values[n], *table[n][:seeds]]) for n in cands}
    return max(cands, key=lambda n: (means[n], -n)), means


@pytest.mark.parametrize("seed", range(40))
def test_skipping_never_changes_the_selection(tmp_path, seed):
    """Random tables (proxies in [0, 1], some near-ties and some diverged runs at 0): the racing makes
    fewer runs and selects exactly what the full confirmation would; the default's reported mean is
    never above the best's."""
    rng = random.Random(seed)
    n_trials, k, seeds = rng.randint(2, 7), rng.randint(1, 4), rng.randint(1, 3)
    base = [rng.choice([rng.random(), 0.9, 0.9 + rng.random() * 0.05]) for _ in range(n_trials)]
    table = {
        n: [min(1.0, max(0.0, v + rng.gauss(0, 0.05))) if rng.random() > 0.1 else 0.0 for _ in range(seeds)]
        for n, v in enumerate(base)
    }
    default = rng.randrange(n_trials)
    study = _study(base, default=default)
    rescore = Table(table)
    ran = confirm(study, rescore, k, seeds, tmp_path / "lock")
    want, means = _full_selection(base, table, k, seeds, default)
    best, runs = select(study, k)
    assert best.number == want
    assert statistics.fmean(runs) == pytest.approx(means[want], abs=1e-12)
    assert len(set(rescore.calls)) == len(rescore.calls) == ran
    assert ran + skipped_runs(study, k) == len(means) * seeds
    res = report.method_result("m", study, confirm=k)
    assert res["default"]["value"] <= res["best"]["value"] + 1e-12


def test_a_killed_confirmation_continues_and_nothing_runs_twice(tmp_path):
    study = _study([0.6, 0.9], default=0)
    table = {0: [0.5, 0.7], 1: [0.8, 0.6]}
    first = Table(table, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        confirm(study, first, 1, 2, tmp_path / "lock")
    assert first.calls == [(1, 1), (0, 1)]  # stored as each ended; killed in (1, 2), which it had claimed
    best, runs = select(study, 1)  # meanwhile: the candidates with the most runs stored
    assert best.number == 1 and runs == [0.9, 0.8]
    again = Table(table)  # this process's own old claim is void: it makes one run at a time
    assert confirm(study, again, 1, 2, tmp_path / "lock") == 1
    assert again.calls == [(1, 2)]  # trial 1 ends at 0.767; the default can reach 0.7: skipped
    assert confirm(study, Table(table), 1, 2, tmp_path / "lock") == 0
    assert runs_of(study, study.trials[0]) == [0.6, 0.5]
    assert select(study, 1)[0].number == 1


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claims_of_live_processes_are_left_to_them_and_the_last_pass_runs_every_missing_run(tmp_path):
    table = {n: [0.5 + 0.1 * n] * 2 for n in range(3)}
    host = socket.gethostname()
    study = _study([0.6, 0.9, 0.8], default=0)
    study.set_user_attr(
        CLAIMS,
        {
            "1:1": {"host": host, "pid": os.getppid()},  # a live process of this machine
            "2:1": {"host": "another-node", "pid": 1},  # a process of another machine
            "0:1": {"host": host, "pid": _dead_pid()},  # a process that is gone: void
        },
    )
    here = Table(table)
    confirm(study, here, 2, 1, tmp_path / "lock")
    assert here.calls == [(0, 1)]  # the others' claims are theirs
    assert (0, 1) in {(int(k.split(":")[0]), int(k.split(":")[1])) for k in study.user_attrs[CLAIMS]}
    last = Table(table)
    assert confirm(study, last, 2, 1, tmp_path / "lock", claims=False) == 2  # after the workers ended
    assert sorted(last.calls) == [(1, 1), (2, 1)]


def _claiming_process(url: str, name: str, lock: str, out: str) -> None:
    import json
    import time

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    made = []

    def rescore(options, s, number):
        made.append((number, s))
        time.sleep(0.2)
        return 0.5 + 0.01 * number + 0.001 * s

    confirm(study, rescore, 3, 2, lock)
    with open(out, "w") as f:
        json.dump(made, f)


def test_two_processes_share_the_runs_by_claims_and_none_is_made_twice(tmp_path):
    import json
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(direction="maximize", storage=url, study_name="s")
    for i, v in enumerate([0.6, 0.9, 0.8, 0.7]):
        attrs = {"options": {"train.learning_rate": 10.0**-i}, "default": i == 0}
        study.add_trial(optuna.trial.create_trial(value=v, user_attrs=attrs))
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"made{i}.json" for i in range(2)]
    procs = [
        ctx.Process(target=_claiming_process, args=(url, "s", str(tmp_path / "lock"), str(o))) for o in outs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    made = [tuple(x) for o in outs for x in json.loads(o.read_text())]
    assert len(made) == len(set(made))  # no run twice
    assert all(json.loads(o.read_text()) for o in outs)  # both made runs
    # every run that could change the selection is stored; the rest cannot win
    study = optuna.load_study(study_name="s", storage=url)
    assert len(made) + skipped_runs(study, 3) == 4 * 2
    assert confirm(study, Table({}), 3, 2, tmp_path / "lock", claims=False) == 0


def test_trials_csv_rows_carry_the_seeds_and_mean(tmp_path):
    study = _study([0.6, 0.9], default=0)
    confirm(study, Table({0: [0.4, 0.5], 1: [0.7, 0.8]}), 1, 2, tmp_path / "lock")
    rows = report.trials_rows("m", study)
    # trial 1 ends at 0.8; the default could reach (0.6 + 0.4 + 1) / 3 = 0.667: its second seed skipped
    assert [(r["seeds"], r["mean"]) for r in rows[:2]] == [(2, pytest.approx(0.5)), (3, pytest.approx(0.8))]
    assert rows[2]["state"] == "pruned" and rows[2]["seeds"] is None and rows[2]["mean"] is None


def test_the_confirmation_plot_shows_every_candidate_and_only_with_confirmation(tmp_path):
    study = _study([0.6, 0.95, 0.85], default=0)
    assert not report.confirmation_plot("m", study, 2, tmp_path / "none.png")  # no runs yet
    assert not (tmp_path / "none.png").exists()
    confirm(study, Table({0: [0.6, 0.6], 1: [0.55, 0.55], 2: [0.85, 0.86]}), 2, 2, tmp_path / "lock")
    path = tmp_path / "c.png"
    assert report.confirmation_plot("m", study, 2, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
