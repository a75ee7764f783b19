"""The sweep's confirmation (sweep/confirm.py), with the training replaced by a table of proxies per
(trial, seed offset): which trials are confirmed, the mean that selects, the runs stored in the study
and never run twice, a killed confirmation continued, K processes sharing the runs."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from llm_unlearn.sweep import report  # noqa: E402
from llm_unlearn.sweep.confirm import candidates, confirm, runs_of, select  # noqa: E402


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


def test_the_highest_mean_is_selected_not_the_highest_single_run(tmp_path):
    # trial 1 had the luckiest run (0.95) but its other seeds say 0.55; trial 2 holds 0.85 on every seed
    study = _study([0.6, 0.95, 0.85], default=0)
    rescore = Table({0: [0.6, 0.6], 1: [0.55, 0.55], 2: [0.85, 0.86]})
    assert select(study, 2)[0].number == 1  # before confirmation: the best single run
    assert confirm(study, rescore, 2, 2, tmp_path / "lock") == 6
    assert sorted(rescore.calls) == [(n, s) for n in (0, 1, 2) for s in (1, 2)]
    best, runs = select(study, 2)
    assert best.number == 2 and runs == [0.85, 0.85, 0.86]
    assert runs_of(study, study.trials[1]) == [0.95, 0.55, 0.55]
    res = report.method_result("m", study, confirm=2)
    assert res["best"]["number"] == 2 and res["best"]["value"] == pytest.approx((0.85 + 0.85 + 0.86) / 3)
    assert res["default"] == {"number": 0, "value": pytest.approx(0.6), "runs": [0.6, 0.6, 0.6]}
    # without confirmation (--confirm 0): the best single run, as before
    assert report.method_result("m", study, confirm=0)["best"]["number"] == 1


def test_a_killed_confirmation_continues_and_nothing_runs_twice(tmp_path):
    study = _study([0.6, 0.9], default=0)
    table = {0: [0.5, 0.7], 1: [0.8, 0.6]}
    first = Table(table, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        confirm(study, first, 1, 2, tmp_path / "lock")
    assert first.calls == [(1, 1), (1, 2), (0, 1)]  # stored as each ended
    best, runs = select(study, 1)  # meanwhile: the candidates with the most runs stored
    assert best.number == 1 and runs == [0.9, 0.8, 0.6]
    again = Table(table)
    assert confirm(study, again, 1, 2, tmp_path / "lock") == 1
    assert again.calls == [(0, 2)]
    assert confirm(study, Table(table), 1, 2, tmp_path / "lock") == 0
    assert runs_of(study, study.trials[0]) == [0.6, 0.5, 0.7]
    assert select(study, 1)[0].number == 1  # 0.767 > 0.6


def test_processes_share_the_runs_and_the_first_stored_is_kept(tmp_path):
    study = _study([0.6, 0.9, 0.8], default=0)
    table = {n: [0.1 * n + 0.01 * s for s in (1, 2)] for n in range(3)}
    a, b = Table(table), Table(table)
    ran = confirm(study, a, 2, 2, tmp_path / "lock", share=(0, 2))
    ran += confirm(study, b, 2, 2, tmp_path / "lock", share=(1, 2))
    assert ran == 6 and not set(a.calls) & set(b.calls) and len(a.calls) == len(b.calls) == 3
    assert confirm(study, Table(table), 2, 2, tmp_path / "lock") == 0  # the leftover pass: none left

    # another process stored (trial 1, seed 1) while this one trained it: the stored value stays
    study = _study([0.6, 0.9], default=0)

    def racing(options, s, number):
        if (number, s) == (1, 1):
            study.set_user_attr("confirm-1", {"1": 0.42})
        return 0.99

    confirm(study, racing, 1, 1, tmp_path / "lock")
    assert runs_of(study, study.trials[1]) == [0.9, 0.42]
    assert runs_of(study, study.trials[0]) == [0.6, 0.99]


def test_trials_csv_rows_carry_the_seeds_and_mean(tmp_path):
    study = _study([0.6, 0.9], default=0)
    confirm(study, Table({0: [0.4, 0.5], 1: [0.7, 0.8]}), 1, 2, tmp_path / "lock")
    rows = report.trials_rows("m", study)
    assert [(r["seeds"], r["mean"]) for r in rows[:2]] == [(3, pytest.approx(0.5)), (3, pytest.approx(0.8))]
    assert rows[2]["state"] == "pruned" and rows[2]["seeds"] is None and rows[2]["mean"] is None


def test_a_slurm_array_splits_the_runs_over_its_tasks(monkeypatch):
    from llm_unlearn.sweep.run import confirm_share

    for k in ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(k, raising=False)
    assert confirm_share(1, 2) == (1, 2)  # one machine: its worker processes
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    shares = set()
    for task in (4, 5, 6):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        shares |= {confirm_share(i, 2) for i in range(2)}
    assert shares == {(i, 6) for i in range(6)}  # every process of the array once
