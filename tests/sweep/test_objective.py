"""One trial's bookkeeping, with the run replaced by a scripted sequence of calibration evaluations:
the best proxy so far reported per evaluation, pruning after one, the kept state's proxy as the value,
the hooks put back, the trial's own directory removed."""

from __future__ import annotations

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from llm_unlearn.sweep import spaces  # noqa: E402
from llm_unlearn.sweep.objective import TrialObjective, Validation  # noqa: E402
from llm_unlearn.sweep.shared import Shared  # noqa: E402
from llm_unlearn.train import loop  # noqa: E402
from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS  # noqa: E402


class _Model:
    class config:  # noqa: N801 - what spaces.last_layer_of reads
        num_hidden_layers = 4

    def eval(self):
        return self


def _objective(tmp_path, proxies, selected):
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump({"model": {"name_or_path": "some/model"}, "data": {"data": str(tmp_path)}})
    )
    calls = []

    def fake_run(cfg, *, model=None, tokenizer=None):
        calls.append(cfg)
        assert SWEEP_HOOKS["reference_dir"] is not None
        (tmp_path / "sweep" / "trials").mkdir(parents=True, exist_ok=True)
        evs = [{"step": i, "proxy": p} for i, p in enumerate(proxies)]
        for ev in evs:
            SWEEP_HOOKS["on_evaluation"](ev)
        return {"calibration": {"evaluations": evs, "selected_index": selected}, "steps_done": 10}

    shared = Shared(tmp_path / "sweep", _Model(), object())
    space = spaces.space_for("npo_rt_div")
    obj = TrialObjective(base, "npo_rt_div", space, Validation({}, {}), tmp_path / "sweep", shared)
    return obj, fake_run, calls


def test_value_is_the_kept_states_proxy_and_reports_are_the_best_so_far(tmp_path, monkeypatch):
    obj, fake, calls = _objective(tmp_path, [0.1, 0.5, 0.3], selected=1)
    monkeypatch.setattr(loop, "run_unlearning", fake)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    before = dict(SWEEP_HOOKS)
    study.optimize(obj, n_trials=1)
    t = study.trials[0]
    assert t.value == 0.5
    assert t.intermediate_values == {0: 0.1, 1: 0.5, 2: 0.5}  # a running maximum, by evaluation index
    assert SWEEP_HOOKS == before  # put back
    assert calls[0].objective.method == "npo_rt_div" and not calls[0].train.merge
    assert t.user_attrs["options"]["train.learning_rate"] == calls[0].train.learning_rate


def test_a_trial_below_the_median_is_pruned_after_an_evaluation(tmp_path, monkeypatch):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    obj, fake, _ = _objective(tmp_path, [0.2, 0.9, 0.9], selected=2)
    monkeypatch.setattr(loop, "run_unlearning", fake)
    study.optimize(obj, n_trials=1)
    obj, fake, _ = _objective(tmp_path, [0.2, 0.3, 0.95], selected=2)
    monkeypatch.setattr(loop, "run_unlearning", fake)
    study.optimize(obj, n_trials=1)
    t = study.trials[1]
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.intermediate_values == {0: 0.2, 1: 0.3}  # stopped at the first evaluation below the median


def test_sweep_without_holdout_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from llm_unlearn.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump({"model": {"name_or_path": "some/model"}, "data": {"data": str(tmp_path)}})
    )
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(base), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: a sweep needs a holdout")
    assert not out.exists()
