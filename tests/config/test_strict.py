"""Strict configuration (issue 18): a config that would silently run something else is refused."""

from __future__ import annotations

import pytest

from llm_unlearn.config import build_config
from llm_unlearn.config.validate import _training_arg_type_error
from llm_unlearn.errors import ConfigError, UserError


def test_a_key_given_twice_in_yaml_is_refused_with_both_lines(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  learning_rate: 1.0e-4\n  epochs: 2\n  learning_rate: 0.5\n")
    with pytest.raises(ConfigError, match=r"'learning_rate' is given twice \(lines 2 and 4\)"):
        build_config(cfg)
    cfg.write_text("train:\n  learning_rate: 1.0e-4\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="'train' is given twice"):
        build_config(cfg)
    cfg.write_text("train:\n  learning_rate: 1.0e-4\n")
    assert build_config(cfg).train.learning_rate == 1e-4


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"train:\n  note: caf\xe9\n")
    with pytest.raises(UserError, match="not UTF-8 text") as e:
        build_config(cfg)
    assert "\n" not in str(e.value)


def test_an_unknown_preset_in_set_is_refused():
    with pytest.raises(ConfigError, match="unknown preset 'nosuch'"):
        build_config(overrides={"preset": "nosuch"})
    assert build_config(overrides={"preset": "clausen2025"}).preset == "clausen2025"
    with pytest.raises(ConfigError, match="two presets"):
        build_config(overrides={"preset": "clausen2025"}, preset="default")


def test_an_unknown_option_in_set_is_refused():
    with pytest.raises(ConfigError, match="unknown option train.learnig_rate"):
        build_config(overrides={"train.learnig_rate": 0.1})


@pytest.mark.parametrize(
    "name, value, ok",
    [
        ("bf16", [1], False),
        ("bf16", 1, False),
        ("bf16", True, True),
        ("gradient_checkpointing", None, True),
        ("logging_steps", 5, True),
        ("logging_steps", "5", False),
        ("dataloader_num_workers", 1.5, False),
        ("report_to", ["none"], True),
        ("report_to", 3, False),
        ("lr_scheduler_type", "cosine", True),
        ("lr_scheduler_type", 3, False),
    ],
)
def test_training_args_are_checked_against_trainingarguments_types(name, value, ok):
    assert (_training_arg_type_error(name, value) is None) == ok


def test_training_args_type_error_reaches_build_config():
    with pytest.raises(ConfigError, match="training_args.bf16 must be bool"):
        build_config(overrides={"training_args": {"bf16": [1]}})
