"""One source of truth for options: the README table, the CLI flags and validate() all come from the
declarations in config/options.py; old names still work, with a deprecation warning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llm_unlearn.cli import build_parser, main
from llm_unlearn.cli.train import train_flags, train_overrides
from llm_unlearn.config import CHOICES, RANGES, build_config, option_specs
from llm_unlearn.config.options import ALIASES, FLAG_ALIASES
from llm_unlearn.config.reference import markdown_table
from llm_unlearn.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_is_the_generated_one():
    assert markdown_table() in README.read_text(), (
        "README is out of date: paste `llm-unlearn options --markdown`"
    )


def test_every_option_is_in_the_readme_table_once():
    text = README.read_text()
    for spec in option_specs():
        assert len(re.findall(rf"^\| `{re.escape(spec.key)}` \|", text, flags=re.M)) == 1, spec.key


def test_train_flags_come_from_the_declarations():
    declared = {s.flag: s.key for s in option_specs() if s.flag}
    parsed = {flag: key for flag, key, kw in train_flags() if flag not in FLAG_ALIASES}
    assert parsed == declared
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in declared:
        assert flag in help_text
    for old in FLAG_ALIASES:  # accepted, hidden from --help
        assert old not in help_text


def test_choices_and_ranges_come_from_the_declarations():
    for spec in option_specs():
        assert CHOICES.get(spec.key) == (tuple(spec.choices) if spec.choices is not None else None)
        assert RANGES.get(spec.key) == spec.range


def test_objective_method_choices_are_the_registry():
    from llm_unlearn.train.methods import OBJECTIVES

    assert CHOICES["objective.method"] == tuple(OBJECTIVES)
    with pytest.raises(ConfigError, match="objective.method must be one of"):
        build_config(overrides={"objective.method": "nope"})


@pytest.mark.parametrize(("old", "new"), sorted(ALIASES.items()))
def test_old_option_names_are_aliases_with_a_warning(old, new, tmp_path):
    section = old.split(".")[0]
    y = tmp_path / "c.yaml"
    y.write_text(f"{section}:\n  {old.split('.')[1]}: 3\n")
    with pytest.warns(DeprecationWarning, match=f"use {section}.{new}"):
        cfg = build_config(y)
    assert getattr(getattr(cfg, section), new) == 3
    with pytest.warns(DeprecationWarning):
        cfg = build_config(overrides={old: 2})
    assert getattr(getattr(cfg, section), new) == 2


def test_old_flags_still_work(caplog):
    args = build_parser().parse_args(["train", "--npo-mult", "0.5", "--positive-ratio", "2"])
    cfg = build_config(overrides=train_overrides(args))
    assert (cfg.objective.forget_weight, cfg.schedule.retain_per_forget) == (0.5, 2)


def test_a_run_saved_with_old_names_is_read_silently(recwarn):
    from llm_unlearn.config import config_from_dict

    cfg = config_from_dict({"objective": {"npo_mult": 0.25}, "schedule": {"positive_ratio": 3}})
    assert (cfg.objective.forget_weight, cfg.schedule.retain_per_forget) == (0.25, 3)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_method_defaults_apply_only_where_nothing_was_set(tmp_path):
    cfg = build_config(overrides={"objective.method": "simnpo"})
    assert (cfg.objective.forget_weight, cfg.objective.divergence_weight) == (0.125, 0.0)
    cfg = build_config(overrides={"objective.method": "simnpo", "objective.forget_weight": 2.0})
    assert (cfg.objective.forget_weight, cfg.objective.divergence_weight) == (2.0, 0.0)
    y = tmp_path / "c.yaml"
    y.write_text("objective:\n  method: npo\n  npo_beta: 0.3\n")
    cfg = build_config(y)
    assert (cfg.objective.npo_beta, cfg.objective.npo_level, cfg.objective.retain_weight) == (
        0.3,
        "sequence",
        1.0,  # open-unlearning NPO.yaml: alpha 1 with a retain NLL
    )
    assert build_config().objective.npo_beta == 0.5  # the default method keeps the project's defaults


def test_options_command_prints_every_option(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    assert all(s.key in out for s in option_specs())
    assert main(["options", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == markdown_table().strip()


def test_layer_lists_from_the_command_line_and_altpo_without_alternatives():
    args = build_parser().parse_args(["train", "--lora-layers", "5,6,7"])
    assert build_config(overrides=train_overrides(args)).lora.layers == [5, 6, 7]
    with pytest.raises(ConfigError, match="comma-separated integers"):
        build_config(overrides={"lora.layers": "a,b"})
    with pytest.raises(ConfigError, match="layer indices >= 0"):
        build_config(overrides={"lora.layers": [-1]})
    with pytest.raises(ConfigError, match="altpo needs plausible alternative answers"):
        build_config(overrides={"objective.method": "altpo"})
    assert build_config(overrides={"objective.method": "altpo", "objective.alternatives": "retain"})


def test_method_example_configs_load_with_their_methods_defaults():
    root = README.parent / "examples" / "configs" / "methods"
    paths = sorted(root.glob("*.yaml"))
    assert {p.stem for p in paths} >= {"simnpo", "idk_dpo", "rmu", "full_finetune"}
    for path in paths:
        cfg = build_config(path)
        if path.stem == "full_finetune":
            assert cfg.lora.enabled is False
            continue
        assert cfg.objective.method == path.stem
        assert cfg.objective.divergence_weight == 0.0  # the method's own default, not the project's
    assert build_config(root / "rmu.yaml").lora.target_modules == ["down_proj"]


def test_old_flags_warn_when_main_is_called_in_process(caplog):
    import logging

    args = build_parser().parse_args(["train", "--rt-mult", "0.5", "--retain-weight", "2"])
    with caplog.at_level(logging.WARNING):
        over = train_overrides(args)
    assert over["objective.retain_weight"] == 2.0  # the new flag wins over the old one
    assert "--rt-mult is deprecated; use --retain-weight" in caplog.text
