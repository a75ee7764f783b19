"""validate(): every option against its declaration (options.py: type, choices, range, path), the
calibration's own rules and training_args against transformers.TrainingArguments. One ConfigError
line on the first bad value, before any data or model is loaded."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from llm_unlearn.config.options import CALIBRATION_MODES, SELECTIONS, CalibrationOptions, option_specs
from llm_unlearn.errors import ConfigError


def _declared():
    """(RANGES, CHOICES, PATH_OPTIONS, OWN_CHECK) from the option declarations."""
    specs = option_specs()
    ranges = {s.key: s.range for s in specs if s.range is not None}
    choices = {s.key: tuple(s.choices) for s in specs if s.choices is not None}
    paths = {s.key for s in specs if s.path}
    own = {s.key for s in specs if s.own_check}
    return ranges, choices, paths, own


# Every option's domain: (low, high, low_open, high_open), None = no bound. Numbers must be finite; a
# bool is never a number; an int option takes no fraction.
RANGES, CHOICES, PATH_OPTIONS, OWN_CHECK = _declared()


def _type_error(name: str, value: Any, hint: Any) -> str | None:
    """Why `value` does not have the declared type `hint` of option `name` (None if it does)."""
    import types
    import typing

    args = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if value is None:
        return None if type(None) in args else f"option {name} may not be null"
    kinds = [a for a in args if a is not type(None)]
    for kind in kinds:
        origin = typing.get_origin(kind)
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None if math.isfinite(value) else f"option {name} must be a finite number, got {value}"
        if kind is str and isinstance(value, str):
            return None
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                return None
            return f"option {name} must be a list of {item.__name__}, got {value!r}"
        if origin is dict and isinstance(value, dict):
            return None
    want = " or ".join(
        "a list"
        if typing.get_origin(k) is list
        else {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(k, str(k))
        for k in kinds
    )
    return f"option {name} must be {want}{' or null' if type(None) in args else ''}, got {value!r}"


def _check_range(name: str, value, bounds) -> None:
    lo, hi, lo_open, hi_open = bounds
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
        hi is not None and (value > hi or (hi_open and value == hi))
    )
    if bad and hi is None:
        raise ConfigError(f"option {name} must be {'>' if lo_open else '>='} {lo:g}, got {value}")
    if bad:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"option {name} must be in {left}{lo:g}, {hi:g}{right}, got {value}")


def validate(cfg) -> None:
    """Every option against its declared type and domain, and training_args against
    transformers.TrainingArguments; raises ConfigError (one line) on the first bad value. Called by
    build_config and again by run_unlearning, before any data or model is loaded."""
    from llm_unlearn.config.presets import PRESETS

    if not isinstance(cfg.preset, str) or cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
    for spec in option_specs():
        section, field_name = spec.key.split(".")
        name, value = spec.key, getattr(getattr(cfg, section), field_name)
        if spec.own_check:
            continue
        err = _type_error(name, value, spec.type)
        if err:
            raise ConfigError(err)
        if value is None:
            continue
        if spec.path and value == "":
            raise ConfigError(f"option {name} is an empty string; leave it out (null) or give a path")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"option {name} must be one of {', '.join(spec.choices)}, got {value!r}")
        if spec.range is not None:
            _check_range(name, value, spec.range)
    if cfg.lora.target_modules is not None and (not cfg.lora.target_modules or "" in cfg.lora.target_modules):
        raise ConfigError(
            "option lora.target_modules must be null (the architecture's default) or non-empty names"
        )
    layers = cfg.lora.layers
    if layers is not None and (not layers or any(i < 0 for i in layers)):
        raise ConfigError(
            f"option lora.layers must be null (all layers) or layer indices >= 0, got {layers!r}"
        )
    if cfg.objective.method == "altpo" and not cfg.objective.alternatives:
        raise ConfigError(
            "altpo needs plausible alternative answers: give objective.alternatives (--alternatives FILE, "
            ".jsonl rows with id + text for per-record alternatives, or 'retain': answers of retain records "
            "of the same task)"
        )
    _validate_calibration(cfg.calibration)
    _validate_training_args(cfg)


_TRAINING_ARGS_OWN = {"output_dir", "learning_rate", "per_device_train_batch_size", "seed"}


def _validate_training_args(cfg) -> None:
    ta = cfg.training_args
    if not isinstance(ta, dict):
        raise ConfigError("training_args must be a mapping of transformers.TrainingArguments fields")
    bad = set(ta) & _TRAINING_ARGS_OWN
    if bad:
        raise ConfigError(
            f"training_args: set {', '.join(sorted(bad))} through the train section / flags, not training_args"
        )
    if not ta:
        return
    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    unknown = sorted(k for k in ta if k not in known)
    if unknown:
        raise ConfigError(
            f"training_args: unknown field(s) {', '.join(map(str, unknown))} of "
            "transformers.TrainingArguments"
        )
    for k, v in ta.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"training_args.{k} must be a finite number, got {v}")
        err = _training_arg_type_error(k, v)
        if err:
            raise ConfigError(err)
    if "gradient_accumulation_steps" in ta and (
        isinstance(ta["gradient_accumulation_steps"], bool)
        or not isinstance(ta["gradient_accumulation_steps"], int)
        or ta["gradient_accumulation_steps"] < 1
    ):
        raise ConfigError(
            f"training_args.gradient_accumulation_steps must be an integer >= 1, "
            f"got {ta['gradient_accumulation_steps']!r}"
        )
    if "report_to" in ta:
        from transformers.integrations import get_available_reporting_integrations

        wanted = ta["report_to"]
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise ConfigError(
                f"training_args.report_to must be a name or a list of names, got {ta['report_to']!r}"
            )
        available = set(get_available_reporting_integrations())
        missing = [w for w in wanted if w not in available | {"none", "all"}]
        if missing:
            raise ConfigError(
                f"training_args.report_to: {', '.join(missing)} is not an installed reporting "
                f"integration (installed: {', '.join(sorted(available)) or 'none'})"
            )
    # the values themselves are checked by TrainingArguments on this machine's devices, still before the
    # model loads (run.build_training_args, called first thing by run_unlearning)


_PLAIN = (bool, int, float, str, type(None))


def _training_arg_type_error(name: str, value: Any, hints: dict | None = None) -> str | None:
    """Why `value` does not fit the declared type of TrainingArguments field `name` (None if it does).
    Checked where the declared type is made of plain kinds (bool, int, float, str, None, list, dict); a
    field that also takes an enum accepts its string names (TrainingArguments checks them)."""
    import types
    import typing

    if hints is None:
        from transformers import TrainingArguments

        hints = typing.get_type_hints(TrainingArguments)
    hint = hints.get(name)
    if hint is None:
        return None
    kinds = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    plain = [k for k in kinds if k in _PLAIN or typing.get_origin(k) in (list, dict) or k in (list, dict)]
    if len(plain) < len(kinds):  # an enum or another class: its string names are accepted
        if isinstance(value, str):
            return None
        kinds = tuple(plain)
    if not kinds:
        return None
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is str and isinstance(value, str):
            return None
        if kind is type(None) and value is None:
            return None
        if origin in (list, dict) and isinstance(value, origin):
            return None
    want = " or ".join(getattr(k, "__name__", str(k)).replace("NoneType", "null") for k in kinds)
    return f"training_args.{name} must be {want}, got {value!r}"


def eval_interval(value: Any) -> str | int:
    """`calibration.eval_every` as "auto" | "off" | "chunk" | a positive number of steps."""
    if isinstance(value, bool):
        raise ConfigError(
            f"calibration.eval_every must be auto, off, chunk or a positive integer, got {value!r}"
        )
    text = str(value).strip().lower()
    if text in ("auto", "off", "chunk"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0 or str(n) != text:
        raise ConfigError(
            f"calibration.eval_every must be auto, off, chunk or a positive integer, got {value!r}"
        )
    return n


def _validate_calibration(c: CalibrationOptions) -> None:
    if c.mode not in CALIBRATION_MODES:
        raise ConfigError(f"calibration.mode must be one of {CALIBRATION_MODES}, got {c.mode!r}")
    if c.select not in SELECTIONS:
        raise ConfigError(f"calibration.select must be one of {SELECTIONS}, got {c.select!r}")
    eval_interval(c.eval_every)
    for name, lo, hi in (("tolerance", 0.0, 0.5), ("gate_quantile", 0.0, 1.0)):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ConfigError(f"calibration.{name} must be a number in [{lo}, {hi}], got {v!r}")
    for name in ("eval_items", "eval_max_new_tokens", "eval_batch_size"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"calibration.{name} must be a positive integer, got {v!r}")
    for name in ("holdout", "forget_documents", "mmlu"):
        v = getattr(c, name)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"calibration.{name} must be a file path, got {v!r}")
