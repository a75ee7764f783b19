"""Issue 19.2: a gated calibrated run takes the options measured to keep its result stable under float
noise (config.GATED_DEFAULTS) for every option its preset, YAML file and flags leave unset; anything
set explicitly wins, uncalibrated runs and the upstream presets keep the plain defaults, and under FSDP
the optimizer stays per chunk (its state is sharded)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from llm_unlearn.config import GATED_DEFAULTS, build_config, config_from_dict, uses_gated_defaults
from llm_unlearn.config.presets import PRESETS

H = {"calibration.holdout": "holdout.jsonl"}


def _get(cfg, key):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _plain(key):
    """The option's declared default (what an uncalibrated run has)."""
    from llm_unlearn.config import UnlearnConfig

    return _get(UnlearnConfig(), key)


def test_the_gated_defaults_differ_from_the_plain_ones():
    # else the tests below could not tell whether anything was applied
    assert all(_plain(k) != v for k, v in GATED_DEFAULTS.items())


def test_a_gated_calibrated_run_takes_them():
    c = build_config(overrides=H)
    assert uses_gated_defaults(c)
    for key, value in GATED_DEFAULTS.items():
        assert _get(c, key) == value, key


@pytest.mark.parametrize(
    "over",
    [{}, {"calibration.mode": "stop"}, {"calibration.mode": "off"}, {"calibration.eval_every": "off"}],
    ids=["no holdout", "mode stop", "mode off", "no evaluations"],
)
def test_other_runs_keep_the_plain_defaults(over):
    c = build_config(overrides={**(H if over else {}), **over})
    assert not uses_gated_defaults(c)
    for key in GATED_DEFAULTS:
        assert _get(c, key) == _plain(key), key


@pytest.mark.parametrize("key", list(GATED_DEFAULTS))
def test_an_explicit_value_wins_on_the_command_line_and_in_a_file(key, tmp_path):
    value = _plain(key)
    assert _get(build_config(overrides={**H, key: value}), key) == value
    section, name = key.split(".")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({section: {name: value}}))
    c = build_config(p, H)
    assert _get(c, key) == value
    others = [k for k in GATED_DEFAULTS if k != key]
    assert all(_get(c, k) == GATED_DEFAULTS[k] for k in others)  # only that one


def test_under_fsdp_the_optimizer_stays_per_chunk(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    c = build_config(overrides=H)
    assert c.schedule.optimizer_scope == "chunk"
    assert c.calibration.pull == GATED_DEFAULTS["calibration.pull"]


def test_a_saved_config_is_rebuilt_as_it_ran():
    c = build_config(overrides=H)
    again = config_from_dict(c.to_dict())
    assert dataclasses.asdict(again) == dataclasses.asdict(c)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "default"])
def test_the_upstream_presets_are_not_gated_runs(name):
    # they reproduce their systems exactly: no holdout, so none of the gated defaults reaches them
    assert not uses_gated_defaults(build_config(preset=name))


@pytest.mark.parametrize("key", list(GATED_DEFAULTS))
def test_each_options_help_names_its_gated_value(key):
    """The options table (README) says what a gated run takes: the help of each option names it."""
    from llm_unlearn.config import option_specs

    spec = next(s for s in option_specs() if s.key == key)
    v = GATED_DEFAULTS[key]
    shown = "true" if v is True else (f"{v:g}" if isinstance(v, float) else str(v))
    assert f"a gated calibrated run that leaves it unset: {shown}" in spec.help, (key, spec.help)


def test_the_run_says_which_it_took(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="llm_unlearn.config"):
        build_config(overrides={**H, "calibration.pull": 0.0})
    line = next(r.getMessage() for r in caplog.records if "calibrated run with the gate" in r.getMessage())
    assert "calibration.push_answered=True" in line and "calibration.pull=" not in line
