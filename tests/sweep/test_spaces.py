"""Every registered method has a search space, and every point sampled from it is a valid config."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

from llm_unlearn.config import build_config  # noqa: E402
from llm_unlearn.errors import ConfigError  # noqa: E402
from llm_unlearn.sweep import spaces  # noqa: E402
from llm_unlearn.sweep.objective import flat  # noqa: E402
from llm_unlearn.train.methods import OBJECTIVES  # noqa: E402

# what a base config must give for the method to run at all (not searched: altpo has no default source)
REQUIRED = {"altpo": {"objective.alternatives": "retain"}}


def test_every_registered_method_has_a_space():
    assert set(spaces.SPACES) == set(OBJECTIVES)


@pytest.mark.parametrize("method", list(OBJECTIVES))
def test_every_sampled_point_passes_validation(method):
    given = {"objective.method": method, **REQUIRED.get(method, {})}
    base = flat(build_config(overrides=given).to_dict())
    space = spaces.space_for(method)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        point = spaces.suggest(trial, space, base, last_layer=3)
        cfg = build_config(overrides={**given, **point})  # validate() runs inside
        got = flat(cfg.to_dict())
        for key, value in point.items():
            assert got[key] == pytest.approx(value), key
        lr = point["train.learning_rate"]
        assert 0.2 * base["train.learning_rate"] <= lr <= 5 * base["train.learning_rate"]  # relative range
        study.tell(trial, 0.0)


def test_space_file_overrides_and_drops_entries(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(
        "common:\n  train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}\n"
        "methods:\n  rmu:\n    objective.rmu_layer: {choices: [1, 2]}\n    objective.forget_weight: 2.0\n"
        "    objective.retain_weight: base\n"
    )
    space = spaces.space_for("rmu", spaces.load_space_file(f))
    assert space["train.learning_rate"] == {"low": 1e-5, "high": 1e-3, "log": True}
    assert "objective.retain_weight" not in space
    trial = optuna.create_study().ask()
    point = spaces.suggest(trial, space, {"schedule.epochs": 2.0}, last_layer=None)
    assert 1.0 <= point["schedule.epochs"] <= 4.0
    assert point["objective.rmu_layer"] in (1, 2) and point["objective.forget_weight"] == 2.0
    assert 1e-5 <= point["train.learning_rate"] <= 1e-3


@pytest.mark.parametrize(
    "text, message",
    [
        ("common:\n  train.nope: {low: 1, high: 2}\n", "not an option"),
        ("common:\n  train.learning_rate: {low: 2, high: 1}\n", "below high"),
        ("common:\n  train.learning_rate: {low: 0, high: 1, log: true}\n", "low > 0"),
        ("methods:\n  nope: {}\n", "unknown method"),
    ],
)
def test_bad_space_files_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "space.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        spaces.load_space_file(f)


def test_last_layer_bound_uses_the_model_depth():
    space = {"objective.rmu_layer": {"low": 0, "high": "last_layer", "int": True}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {spaces.suggest(study.ask(), space, {}, last_layer=2)["objective.rmu_layer"] for _ in range(40)}
    assert seen == {0, 1, 2}
    assert spaces.suggest(study.ask(), space, {}, last_layer=None) == {}  # unknown depth: the base value
