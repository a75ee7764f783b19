"""config/declare.py: flags generated from a dataclass of opt() fields, and one check of every value."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from llm_unlearn.config.declare import add_flags, check_options, read_flags
from llm_unlearn.config.options import opt
from llm_unlearn.errors import ConfigError


@dataclass
class Demo:
    model: str | None = opt(None, "the model", flag="--model", path=True)
    threshold: float = opt(0.5, "a threshold", flag="--threshold", range=(0, 1, False, False))
    ntrain: int = opt(5, "shots", flag="--ntrain", range=(0, None, False, False))
    batch: int = opt(8, "batch", flag="--batch-size", range=(1, None, False, False))
    subjects: list[str] | None = opt(None, "subjects", flag="--subjects")
    mode: str = opt("fast", "mode", flag="--mode", choices=("fast", "exact"))
    prefix_cache: bool = opt(True, "cache", switch=("--no-prefix-cache", False))
    hidden: int = opt(3, "no flag")


def _parse(argv, **base):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_flags(p, Demo, required=("model",))
    return read_flags(p.parse_args(argv), Demo, **base)


def test_defaults_flags_and_base():
    d = _parse(["--model", "m"])
    assert (d.threshold, d.ntrain, d.batch, d.subjects, d.mode, d.prefix_cache, d.hidden) == (
        0.5,
        5,
        8,
        None,
        "fast",
        True,
        3,
    )
    d = _parse(["--model", "m", "--ntrain", "0", "--subjects", "a", "b", "--no-prefix-cache"], hidden=7)
    assert (d.ntrain, d.subjects, d.prefix_cache, d.hidden) == (0, ["a", "b"], False, 7)
    d = _parse(["--model", "m", "--batch-size", "2"], batch=4)  # a given flag wins over base
    assert d.batch == 2


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--threshold", "nan"], "--threshold must be a finite number"),
        (["--threshold", "inf"], "--threshold must be a finite number"),
        (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
        (["--ntrain", "-1"], "--ntrain must be >= 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--model", ""], "--model is an empty string"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_flag(argv, needle):
    argv = argv if argv[0] == "--model" else ["--model", "m", *argv]
    with pytest.raises(ConfigError) as e:
        _parse(argv)
    assert needle in str(e.value)


def test_non_numbers_and_unknown_choices_are_refused_by_the_parser():
    p = argparse.ArgumentParser(exit_on_error=False)
    add_flags(p, Demo)
    with pytest.raises(argparse.ArgumentError, match="expected an integer"):
        p.parse_args(["--ntrain", "1.5"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        p.parse_args(["--mode", "slow"])


def test_check_options_on_an_instance():
    check_options(Demo())
    with pytest.raises(ConfigError, match="--ntrain must be an integer"):
        check_options(Demo(ntrain=1.5))
    with pytest.raises(ConfigError, match="--no-prefix-cache must be true/false"):
        check_options(Demo(prefix_cache="yes"))


def test_declared_defaults_in_the_namespace():
    """With declared_defaults the parsed namespace holds the declared values (a subcommand without a
    configuration layer below its flags reads args.NAME); read_flags still checks every value."""
    p = argparse.ArgumentParser(exit_on_error=False)
    add_flags(p, Demo, declared_defaults=True)
    args = p.parse_args([])
    assert (args.model, args.threshold, args.ntrain, args.mode, args.prefix_cache) == (
        None,
        0.5,
        5,
        "fast",
        True,
    )
    assert not hasattr(args, "hidden")  # no flag declared, no destination
    args = p.parse_args(["--no-prefix-cache", "--ntrain", "2"])
    assert (args.prefix_cache, args.ntrain) == (False, 2)
    assert read_flags(args, Demo).ntrain == 2
    with pytest.raises(ConfigError, match="--ntrain must be >= 0"):
        read_flags(p.parse_args(["--ntrain", "-3"]), Demo)
    assert "(default 0.5)" in p.format_help()


_NAMES = ["a", "b"]


@dataclass
class Spread:
    pick: str = opt("a", "one of the names known now", flag="--pick", choices=lambda: tuple(_NAMES))
    k: float = opt(20, "k of the Min-K% attack", flag="--k")
    adapter: str | None = opt(None, "an adapter", flag="--adapter")
    quiet: bool = opt(False, "no bars", switch=("--quiet", True))


def test_only_exclude_and_other_help_texts():
    p = argparse.ArgumentParser(exit_on_error=False)
    g = p.add_argument_group("first")
    add_flags(g, Spread, only=("pick", "k"), helps={"k": "100% of it"})
    add_flags(p, Spread, exclude=("pick", "k"), helps={"adapter": "the unlearned adapter"})
    text = p.format_help()  # "%" in a help text is escaped for argparse
    assert "100% of it (default 20)" in text and "the unlearned adapter" in text and "an adapter" not in text
    d = read_flags(p.parse_args(["--pick", "b", "--quiet"]), Spread)
    assert (d.pick, d.k, d.adapter, d.quiet) == ("b", 20, None, True)
    q = argparse.ArgumentParser()
    add_flags(q, Spread, only=("quiet",))
    assert "Min-K" not in q.format_help() and "--pick" not in q.format_help()


def test_choices_from_a_callable_are_resolved_when_used():
    _NAMES.append("c")
    try:
        p = argparse.ArgumentParser(exit_on_error=False)
        add_flags(p, Spread)
        assert read_flags(p.parse_args(["--pick", "c"]), Spread).pick == "c"
        with pytest.raises(argparse.ArgumentError, match="invalid choice"):
            p.parse_args(["--pick", "d"])
        with pytest.raises(ConfigError, match="--pick must be one of a, b, c"):
            check_options(Spread(pick="d"))
    finally:
        _NAMES.remove("c")
