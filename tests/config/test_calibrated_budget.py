"""Issue 19.3: a calibrated run that does not set its epochs takes the calibration's ceiling
(calibration.max_epochs): the gate and the calibrated stop end chunks and the run early, so the budget
is a ceiling, not the point where training ends. Uncalibrated runs, upstream presets and any explicit
schedule.epochs keep their budget."""

from __future__ import annotations

import pytest
import yaml

from llm_unlearn.config import build_config, config_from_dict, uses_calibrated_budget

H = {"calibration.holdout": "holdout.jsonl"}


def test_uncalibrated_default_keeps_five_epochs():
    c = build_config()
    assert c.schedule.epochs == 5 and not uses_calibrated_budget(c)


def test_calibrated_default_takes_the_ceiling():
    c = build_config(overrides=H)
    assert c.calibration.max_epochs == 10
    assert c.schedule.epochs == 10 and uses_calibrated_budget(c)


def test_ceiling_is_an_option():
    assert build_config(overrides={**H, "calibration.max_epochs": 12}).schedule.epochs == 12
    # null: the schedule's own budget, calibrated or not
    assert build_config(overrides={**H, "calibration.max_epochs": None}).schedule.epochs == 5


@pytest.mark.parametrize("epochs", [3, 5, 7.5])
def test_explicit_epochs_win(epochs, tmp_path):
    assert build_config(overrides={**H, "schedule.epochs": epochs}).schedule.epochs == epochs
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"schedule": {"epochs": epochs}}))
    assert build_config(p, H).schedule.epochs == epochs


@pytest.mark.parametrize(
    "over",
    [
        {"calibration.mode": "off"},
        {"calibration.eval_every": "off"},
    ],
)
def test_not_calibrated_keeps_the_budget(over):
    c = build_config(overrides={**H, **over})
    assert c.schedule.epochs == 5 and not uses_calibrated_budget(c)


def test_stop_mode_is_calibrated_too():
    assert build_config(overrides={**H, "calibration.mode": "stop"}).schedule.epochs == 10


@pytest.mark.parametrize("preset", ["clausen2025", "atyaephyra", "ails-ntua"])
def test_upstream_presets_keep_their_budget(preset):
    plain = build_config(preset=preset).schedule.epochs
    assert build_config(preset=preset, overrides=H).schedule.epochs == plain


def test_saved_config_keeps_the_resolved_budget():
    c = build_config(overrides=H)
    again = config_from_dict(c.to_dict())
    assert again.schedule.epochs == 10
    # a resumed or re-read run does not re-resolve: a saved explicit value stays
    d = c.to_dict()
    d["schedule"]["epochs"] = 4
    assert config_from_dict(d).schedule.epochs == 4


def test_bad_ceiling_is_one_clear_error():
    from llm_unlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="max_epochs"):
        build_config(overrides={**H, "calibration.max_epochs": 0})
