"""The cli/ package: one module per subcommand, and merge's / demo's flags generated from their
declarations (range-checked in config/declare.py)."""

from __future__ import annotations

import importlib

import pytest

from llm_unlearn.cli import SUBCOMMANDS, build_parser, main
from llm_unlearn.cli.demo import DemoOptions
from llm_unlearn.cli.merge import MergeOptions
from llm_unlearn.config.declare import fields_of


def _err(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _sub(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]


def test_every_subcommand_is_a_module_with_add_parser():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert list(choices) == list(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"llm_unlearn.cli.{name}")
        assert callable(module.add_parser), name
        assert callable(choices[name].get_default("func")), name


@pytest.mark.parametrize("name, cls", [("merge", MergeOptions), ("demo", DemoOptions)])
def test_flags_come_from_the_declarations(name, cls):
    declared = {f.metadata.get("flag") or f.metadata["switch"][0] for f, _ in fields_of(cls)}
    parser = _sub(name)
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    hidden = {"--overwrite"} if name == "demo" else set()  # demo: accepted, no effect
    assert flags - hidden == declared
    for f, _ in fields_of(cls):
        assert "".join(f.metadata["help"].split()) in "".join(parser.format_help().split()), f.name


def test_merge_defaults_and_required_flags():
    args = build_parser().parse_args(["merge", "--model", "m", "--adapter", "a", "--output-dir", "o"])
    assert (args.dtype, args.trust_remote_code, args.allow_pickle, args.overwrite) == (
        "auto",
        False,
        False,
        False,
    )
    with pytest.raises(SystemExit) as e:  # argparse: a required flag missing, an unknown dtype
        build_parser().parse_args(["merge", "--model", "m", "--adapter", "a"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["merge", "--model", "m", "--adapter", "a", "--output-dir", "o", "--dtype", "x"]
        )


@pytest.mark.parametrize(
    "argv, line",
    [
        (["demo", "--limit", "-1"], "error: --limit must be positive, got -1"),
        (["demo", "--seed", "-1"], "error: option --seed must be >= 0, got -1"),
        (
            ["demo", "--output-dir", ""],
            "error: option --output-dir is an empty string; leave it out or give a path",
        ),
        (
            ["merge", "--model", "", "--adapter", "a", "--output-dir", "o"],
            "error: option --model is an empty string; leave it out or give a path",
        ),
    ],
)
def test_bad_values_are_one_line_before_anything_loads(argv, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert _err(capsys) == [line]
    assert list(tmp_path.iterdir()) == []


def test_non_numbers_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--seed", "1.5"])
    assert e.value.code == 2
    assert "expected an integer, got '1.5'" in capsys.readouterr().err
