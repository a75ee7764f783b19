"""Validation as a property: every option of every section (found by introspecting the dataclasses
of config.py, so a new option is covered the day it is added) is fed wrong types, NaN, inf, zero,
negative and huge values. Each value is either accepted unchanged (its documented meaning: the
type and domain of config.RANGES / CHOICES) or refused with one `error:` line and exit 2, before
any model is loaded."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest

from llm_unlearn import cli
from llm_unlearn.config import CHOICES, OWN_CHECK, PATH_OPTIONS, RANGES, SECTIONS, build_config
from llm_unlearn.errors import UserError

PROBES: list[typing.Any] = [
    "abc",
    "",
    [1, 2],
    ["x"],
    {"a": 1},
    True,
    False,
    None,
    math.nan,
    math.inf,
    -math.inf,
    0,
    -1,
    0.5,
    1,
    10**18,
    1e300,
    -1e300,
]


def every_option() -> list[str]:
    return [f"{sec}.{f.name}" for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _yaml(value: typing.Any) -> str:
    """The command-line spelling (YAML) of a probe."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


def _documented(name: str, value: typing.Any) -> bool:
    """Whether `value` is in the documented domain of option `name` (its type, choices, range)."""
    sec, key = name.split(".")
    cls = SECTIONS[sec]
    hint = typing.get_type_hints(cls)[key]
    args = typing.get_args(hint) or (hint,)
    if value is None:
        return type(None) in args
    ok_type = False
    for kind in args:
        if kind is bool:
            ok_type |= isinstance(value, bool)
        elif kind is int:
            ok_type |= isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok_type |= (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            )
        elif kind is str:
            ok_type |= isinstance(value, str)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            ok_items = (
                all(isinstance(v, item) and not isinstance(v, bool) for v in value)
                if isinstance(value, list)
                else False
            )
            if item is int:  # layer indices
                ok_items = ok_items and all(v >= 0 for v in value)
            ok_type |= isinstance(value, list) and ok_items and bool(value)
    if not ok_type:
        return False
    if name in PATH_OPTIONS and value == "":
        return False
    if name in CHOICES:
        return value in CHOICES[name]
    if name in RANGES:
        lo, hi, lo_open, hi_open = RANGES[name]
        return not (
            (lo is not None and (value < lo or (lo_open and value == lo)))
            or (hi is not None and (value > hi or (hi_open and value == hi)))
        )
    return True


def test_every_option_and_probe_is_accepted_as_documented_or_refused():
    """Library path (YAML / --set values arrive here as Python objects)."""
    outcomes = {"accepted": 0, "refused": 0}
    for name in every_option():
        for value in PROBES:
            try:
                cfg = build_config(overrides={name: value})
            except UserError:
                outcomes["refused"] += 1
                assert name in OWN_CHECK or not _documented(name, value), (name, value)
                continue
            sec, key = name.split(".")
            got = getattr(getattr(cfg, sec), key)
            if (
                name in OWN_CHECK
            ):  # a word or a number (calibration.eval_every): accepted values kept as given
                assert got == value, (name, value, got)
                outcomes["accepted"] += 1
                continue
            # accepted: exactly what was given (no bool turned into 1, no 0 turned into "no limit"), and
            # inside the documented domain; a string given for a list option is its comma-separated form
            if isinstance(value, str) and isinstance(got, list):
                assert got == [v for v in value.split(",") if v], (name, value, got)
            else:
                assert got == value and type(got) is type(value), (name, value, got)
                assert _documented(name, value), (name, value)
            outcomes["accepted"] += 1
    print(f"{len(every_option())} options x {len(PROBES)} probes: {outcomes}")
    assert len(every_option()) >= 50


@pytest.fixture
def no_model_load(monkeypatch):
    import llm_unlearn.modeling as modeling

    class ModelLoaded(BaseException):
        pass

    def boom(*a, **k):
        raise ModelLoaded

    monkeypatch.setattr(modeling, "load_model", boom)
    monkeypatch.setattr(modeling, "load_tokenizer", boom)
    return ModelLoaded


def test_every_probe_on_the_command_line_is_refused_in_one_line_or_reaches_the_model_load(
    tiny_world, no_model_load, tmp_path, monkeypatch, capsys
):
    """Command-line path: `--set section.key=VALUE` (YAML) for every probe of every option, on valid data.
    Refused: exit 2, exactly one `error:` line, no output directory left. Accepted: the run gets as far
    as loading the model (monkeypatched to stop there)."""
    monkeypatch.chdir(tmp_path)  # an accepted relative output_dir probe ("abc") lands here
    counts = {"refused": 0, "reached model load": 0}
    for name in every_option():
        for value in PROBES:
            out = tmp_path / "out"
            argv = [
                "--quiet",
                "train",
                "--model",
                str(tiny_world["model_dir"]),
                "--data",
                str(tiny_world["data_dir"]),
                "--output-dir",
                str(out),
                "--set",
                f"{name}={_yaml(value)}",
            ]
            try:
                rc = cli.main(argv)
            except no_model_load:
                counts["reached model load"] += 1
                continue
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2, (name, value, err)
            assert len(err) == 1 and err[0].startswith("error: "), (name, value, err)
            assert not out.exists() or not any(out.iterdir()), (name, value)
            counts["refused"] += 1
    print(f"command line, {len(every_option())} options x {len(PROBES)} probes: {counts}")
    assert counts["refused"] > 300


@pytest.mark.parametrize(
    "ta,expect",
    [
        ({"report_to": "nonexistent_tracker"}, "report_to"),
        ({"report_to": ["none", 3]}, "report_to"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"gradient_accumulation_steps": True}, "gradient_accumulation_steps"),
        ({"adam_beta1": math.nan}, "finite"),
        ({"not_a_field": 1}, "unknown field"),
        ({"seed": 3}, "train section"),
    ],
)
def test_training_args_are_checked_up_front(ta, expect, no_model_load, tmp_path, capsys):
    argv = [
        "--quiet",
        "train",
        "--model",
        str(tmp_path / "m"),
        "--data",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    for k, v in ta.items():
        argv += ["--training-arg", f"{k}={_yaml(v)}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err


def test_bad_training_arg_values_are_refused_before_the_model_loads(
    tiny_world, no_model_load, tmp_path, capsys
):
    """A value only TrainingArguments can judge (an unknown scheduler) is refused after the data is read
    but before any model loads."""
    rc = cli.main(
        [
            "--quiet",
            "train",
            "--model",
            str(tiny_world["model_dir"]),
            "--data",
            str(tiny_world["data_dir"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--training-arg",
            "lr_scheduler_type=nope",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: training_args"), err
