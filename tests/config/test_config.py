"""Configuration: defaults, presets, YAML, command-line overrides, validation, CLI train."""

from __future__ import annotations

import json

import pytest
import yaml

from llm_unlearn.cli import main
from llm_unlearn.cli.train import train_overrides
from llm_unlearn.config import PRESETS, build_config, config_from_dict, preset_config
from llm_unlearn.errors import ConfigError


def test_defaults_are_the_seeds_with_the_correct_renyi():
    c = build_config()
    assert c.preset == "default"
    assert (c.train.learning_rate, c.train.batch_size, c.schedule.epochs, c.train.seed) == (1e-4, 8, 5, 9550)
    assert (c.objective.npo_beta, c.objective.renyi_alpha) == (0.5, 0.5)
    assert (c.objective.forget_weight, c.objective.retain_weight, c.objective.divergence_weight) == (
        1.0,
        1.0,
        1.0,
    )
    assert (c.schedule.chunk_size, c.schedule.retain_per_forget, c.schedule.split_retain) == (32, 7, True)
    assert (c.lora.r, c.lora.alpha, c.lora.dropout) == (16, 64, 0.0)
    assert c.lora.target_modules == ["q_proj", "v_proj", "up_proj", "down_proj"]
    assert c.objective.retain_divergence == "renyi" and c.objective.npo_level == "token"
    assert c.schedule.optimizer_scope == "chunk" and c.train.lr_scheduler == "linear"


def test_clausen2025_preset_is_the_seed_with_the_legacy_term():
    c = preset_config("clausen2025")
    d = build_config().to_dict()
    e = c.to_dict()
    assert e["objective"].pop("retain_divergence") == "token_renyi_legacy"
    d["objective"].pop("retain_divergence")
    e.pop("preset"), d.pop("preset")
    # the seed was uncalibrated: no evaluation during training, the last state kept
    assert e.pop("calibration") == {
        **d.pop("calibration"),
        "mode": "off",
        "eval_every": "off",
        "select": "last",
        "unlearn_documents": False,
    }
    assert d == e


def test_atyaephyra_preset():
    c = preset_config("atyaephyra")
    o = c.objective
    assert (o.method, o.npo_level, o.npo_beta) == ("npo_rt_div", "token", 0.5)
    assert (o.retain_divergence, o.renyi_alpha, o.divergence_weight) == ("token_renyi_legacy", 1.0, 0.5)
    assert (c.lora.r, c.lora.alpha, c.lora.target_modules) == (5, 5, ["q_proj", "v_proj"])
    assert (c.train.learning_rate, c.train.batch_size, c.schedule.epochs, c.train.seed) == (1e-4, 4, 20, 42)
    assert c.schedule.sequential is False
    assert (c.train.optimizer, c.train.lr_scheduler) == ("adam", "constant")


def test_ails_ntua_preset():
    c = preset_config("ails-ntua")
    assert c.objective.method == "sugd"
    assert (c.objective.sugd_forget_factor, c.objective.sugd_retain_factor) == (-1.0, 0.5)
    assert (
        c.schedule.chunk_size,
        c.schedule.retain_per_forget,
        c.schedule.split_retain,
        c.schedule.epochs,
    ) == (
        32,
        7,
        True,
        7,
    )
    assert (c.train.learning_rate, c.train.batch_size, c.lora.r, c.lora.alpha) == (1e-5, 1, 16, 64)


def test_every_preset_validates_and_roundtrips():
    for name in PRESETS:
        c = build_config(preset=name)
        assert config_from_dict(json.loads(json.dumps(c.to_dict()))).to_dict() == c.to_dict()


def test_yaml_then_flags_win(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "preset": "clausen2025",
                "train": {"learning_rate": 2e-4, "batch_size": 4},
                "training_args": {"logging_steps": 5},
            }
        )
    )
    c = build_config(p, {"train.batch_size": "16", "schedule.split_retain": "false"})
    assert c.preset == "clausen2025" and c.objective.retain_divergence == "token_renyi_legacy"
    assert c.train.learning_rate == 2e-4 and c.train.batch_size == 16 and c.schedule.split_retain is False
    assert c.training_args == {"logging_steps": 5}


@pytest.mark.parametrize(
    "over, match",
    [
        ({"schedule.chunk_size": 0}, "chunk_size"),
        ({"schedule.retain_per_forget": -1}, "retain_per_forget"),
        ({"objective.renyi_alpha": 0}, "renyi_alpha"),
        ({"objective.npo_beta": -0.5}, "npo_beta"),
        ({"objective.retain_weight": -1}, "retain_weight"),
        ({"objective.retain_divergence": "js"}, "retain_divergence"),
        ({"train.colour": 1}, "unknown option train.colour"),
        ({"nosuch.x": 1}, "unknown section"),
        ({"train.batch_size": "eight"}, "expected a number"),
        ({"training_args": {"learning_rate": 1.0}}, "through the train section"),
    ],
)
def test_bad_options_raise_config_error(over, match):
    with pytest.raises(ConfigError, match=match):
        build_config(overrides=over)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(preset="nope")


def test_cli_flags_map_onto_config():
    from llm_unlearn.cli import build_parser

    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "m",
            "--data",
            "d",
            "--output-dir",
            "o",
            "--lr",
            "3e-4",
            "--no-split-retain",
            "--renyi-alpha",
            "0.7",
            "--lora-targets",
            "q_proj,k_proj",
            "--set",
            "objective.npo_level=sequence",
            "--training-arg",
            "bf16=true",
        ]
    )
    c = build_config(overrides=train_overrides(args))
    assert c.train.learning_rate == 3e-4 and c.schedule.split_retain is False
    assert c.objective.renyi_alpha == 0.7 and c.objective.npo_level == "sequence"
    assert c.lora.target_modules == ["q_proj", "k_proj"] and c.training_args == {"bf16": True}


def test_cli_train_end_to_end_and_saved_config(tiny_world, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "--quiet",
            "train",
            "--model",
            str(tiny_world["model_dir"]),
            "--data",
            str(tiny_world["data_dir"]),
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--chunk-size",
            "15",
            "--retain-per-forget",
            "1",
            "--lr",
            "1e-3",
            "--no-progress",
            "--no-merge",
            "--add-eos",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert saved["schedule"]["chunk_size"] == 15 and saved["train"]["learning_rate"] == 1e-3
    run = json.loads((out / "run.json").read_text())
    assert run["config"] == saved and run["chunk_count"] == 2
    # same command again: the finished run is recognised, nothing is redone
    rc = main(
        [
            "--quiet",
            "train",
            "--model",
            str(tiny_world["model_dir"]),
            "--data",
            str(tiny_world["data_dir"]),
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--chunk-size",
            "15",
            "--retain-per-forget",
            "1",
            "--lr",
            "1e-3",
            "--no-progress",
            "--no-merge",
            "--add-eos",
        ]
    )
    assert rc == 0


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:")
