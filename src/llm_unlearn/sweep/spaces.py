"""Search spaces: one per registered method (keyed by its registry name), and the `space.yaml` that
overrides any part of them.

A space maps dotted option keys (``train.learning_rate``, ``objective.npo_beta``, ...) to one of:

- a **range** ``{low: L, high: H}`` with ``log: true`` for a log-uniform draw, ``int: true`` for
  integers, ``step: S`` for a grid; ``relative: true`` multiplies both bounds by the base config's value
  of the option (the learning rate of a 7B model and of the tiny demo model differ by 50x: a relative
  range fits both); a bound may be ``last_layer`` (the model's number of decoder layers minus one);
- **choices** ``{choices: [a, b, ...]}``;
- a plain **value**: fixed for every trial (not searched);
- ``base``: not searched, the base config's value (removes a default entry).

The defaults below are every method's learning rate and epochs (relative to the base config) and the
method's own weights and β/γ/δ/layer/steering, with log ranges for scales and linear ranges for signs
and offsets. ``space.yaml`` is ``{common: {...}, methods: {NAME: {...}}}``; its entries replace the
defaults key by key (``common`` for every method, ``methods.NAME`` for one).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_unlearn.errors import ConfigError

__all__ = ["COMMON", "SPACES", "space_for", "load_space_file", "suggest", "check_space", "last_layer_of"]


def _log(low: float, high: float) -> dict:
    return {"low": low, "high": high, "log": True}


def _lin(low: float, high: float) -> dict:
    return {"low": low, "high": high}


# every method: the step size and the length of training, relative to the base config
COMMON: dict[str, Any] = {
    "train.learning_rate": {"low": 0.2, "high": 5.0, "log": True, "relative": True},
    "schedule.epochs": {"low": 0.5, "high": 2.0, "relative": True},
}
_W = _log(0.25, 4.0)  # a term weight around 1

SPACES: dict[str, dict[str, Any]] = {
    "npo_rt_div": {
        "objective.npo_beta": _log(0.05, 2.0),
        "objective.retain_weight": _W,
        "objective.divergence_weight": _log(0.1, 4.0),
        "objective.renyi_alpha": _lin(0.25, 1.0),
    },
    "npo": {"objective.npo_beta": _log(0.05, 1.0), "objective.retain_weight": _lin(0.0, 2.0)},
    "gradient_ascent": {},  # the forget NLL alone: only the step size and the length
    "gradient_difference": {"objective.retain_weight": _W},
    "sugd": {
        "objective.sugd_forget_factor": _lin(-2.0, -0.25),
        "objective.sugd_retain_factor": _log(0.1, 2.0),
    },
    "simnpo": {
        "objective.simnpo_beta": _log(1.0, 10.0),
        "objective.simnpo_delta": _lin(0.0, 2.0),
        "objective.forget_weight": _log(0.05, 1.0),
        "objective.retain_weight": _W,
    },
    "idk_dpo": {
        "objective.dpo_beta": _log(0.05, 1.0),
        "objective.forget_weight": _W,
        "objective.retain_weight": _W,
    },
    "altpo": {
        "objective.dpo_beta": _log(0.05, 1.0),
        "objective.forget_weight": _W,
        "objective.retain_weight": _W,
    },
    "rmu": {
        "objective.rmu_steering": _log(2.0, 50.0),
        "objective.rmu_layer": {"low": 0, "high": "last_layer", "int": True},
        "objective.forget_weight": _W,
        "objective.retain_weight": _W,
    },
    "undial": {"objective.undial_strength": _log(1.0, 30.0), "objective.retain_weight": _lin(0.0, 2.0)},
    "ce_u": {"objective.retain_weight": _lin(0.0, 2.0)},
    "wga": {"objective.wga_beta": _log(0.1, 5.0), "objective.retain_weight": _W},
    "satimp": {
        "objective.satimp_beta1": _log(0.5, 10.0),
        "objective.satimp_beta2": _log(0.1, 5.0),
        "objective.forget_weight": _log(0.05, 2.0),
        "objective.retain_weight": _log(0.1, 4.0),
    },
    "pdu": {"objective.pdu_dual_step": _log(0.1, 10.0), "objective.forget_weight": _W},
}


def space_for(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The search space of `method`: COMMON, then its own entries, then `overrides`' ``common`` and
    ``methods.<method>`` entries (``base`` drops an entry); checked by :func:`check_space`."""
    if method not in SPACES:
        raise ConfigError(f"no search space for method {method!r} (known: {', '.join(SPACES)})")
    space = {**copy.deepcopy(COMMON), **copy.deepcopy(SPACES[method])}
    over = overrides or {}
    space.update(copy.deepcopy(dict(over.get("common") or {})))
    space.update(copy.deepcopy(dict((over.get("methods") or {}).get(method) or {})))
    space = {k: v for k, v in space.items() if v != "base"}
    check_space(space, f"the search space of {method}")
    return space


def load_space_file(path: str | Path) -> dict[str, Any]:
    """A `space.yaml` (module docstring): ``{common: {...}, methods: {NAME: {...}}}``, checked."""
    from llm_unlearn.config import load_yaml
    from llm_unlearn.config.presets import METHOD_NAMES

    data = load_yaml(path)
    unknown = set(data) - {"common", "methods"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (expected common, methods)")
    for name, entries in (data.get("methods") or {}).items():
        if name not in METHOD_NAMES:
            raise ConfigError(
                f"{path}: unknown method {name!r} under methods (known: {', '.join(METHOD_NAMES)})"
            )
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: methods.{name} must be a mapping of option: range")
    if not isinstance(data.get("common") or {}, dict):
        raise ConfigError(f"{path}: common must be a mapping of option: range")
    for section in [data.get("common") or {}, *(data.get("methods") or {}).values()]:
        check_space({k: v for k, v in section.items() if v != "base"}, str(path))
    return data


def _is_range(spec: Any) -> bool:
    return isinstance(spec, dict) and ("low" in spec or "high" in spec)


def check_space(space: Mapping[str, Any], where: str) -> None:
    """Every key a declared option (``section.name``); every range with both bounds, low < high (numbers
    or ``last_layer``), a positive low on a log range; choices a non-empty list. One ConfigError line."""
    from llm_unlearn.config.options import option_specs

    keys = {s.key for s in option_specs(resolve_choices=False)}
    for key, spec in space.items():
        if key not in keys:
            raise ConfigError(f"{where}: {key!r} is not an option (see `llm-unlearn options`)")
        if isinstance(spec, dict) and "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{where}: {key}: choices must be a non-empty list")
            continue
        if isinstance(spec, dict) and not _is_range(spec):
            raise ConfigError(f"{where}: {key}: expected {{low, high}} or {{choices}}, got {spec}")
        if not _is_range(spec):
            continue
        extra = set(spec) - {"low", "high", "log", "int", "step", "relative"}
        if extra or "low" not in spec or "high" not in spec:
            raise ConfigError(
                f"{where}: {key}: a range needs low and high (and only log, int, step, relative)"
            )
        lo, hi = spec["low"], spec["high"]
        if not all(_is_bound(b) for b in (lo, hi)):
            raise ConfigError(f"{where}: {key}: bounds must be numbers or 'last_layer', got {lo!r}, {hi!r}")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not lo < hi:
            raise ConfigError(f"{where}: {key}: low {lo} must be below high {hi}")
        if spec.get("log") and isinstance(lo, (int, float)) and lo <= 0:
            raise ConfigError(f"{where}: {key}: a log range needs low > 0, got {lo}")


def _is_bound(b: Any) -> bool:
    if b == "last_layer":
        return True
    return isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)


def last_layer_of(model) -> int | None:
    """The index of the model's last decoder layer (``num_hidden_layers - 1``), None when unknown."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return int(n) - 1 if n else None


def suggest(
    trial, space: Mapping[str, Any], base: Mapping[str, Any], last_layer: int | None
) -> dict[str, Any]:
    """One point of `space` from the Optuna `trial`: {dotted key: value}. `base`: the base config's
    values by dotted key (for ``relative`` ranges); `last_layer`: what ``last_layer`` means (an entry
    that needs it is left out when None: the option keeps the base value)."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, dict) and "choices" in spec:
            out[key] = trial.suggest_categorical(key, spec["choices"])
            continue
        if not _is_range(spec):
            out[key] = spec
            continue
        lo, hi = spec["low"], spec["high"]
        if "last_layer" in (lo, hi):
            if last_layer is None:
                continue
            lo, hi = (last_layer if b == "last_layer" else b for b in (lo, hi))
            if lo >= hi:
                out[key] = int(lo)
                continue
        if spec.get("relative"):
            scale = base.get(key)
            if not isinstance(scale, (int, float)) or scale <= 0:
                raise ConfigError(f"{key}: a relative range needs a positive base value, got {scale!r}")
            lo, hi = lo * scale, hi * scale
        if spec.get("int"):
            out[key] = trial.suggest_int(
                key, int(lo), int(hi), step=int(spec.get("step") or 1), log=bool(spec.get("log"))
            )
        else:
            step = spec.get("step")
            out[key] = trial.suggest_float(key, float(lo), float(hi), log=bool(spec.get("log")), step=step)
    return out
