"""Every knob of an unlearning run: option dataclasses, presets, YAML loading, command-line overrides.

A run's configuration is an `UnlearnConfig` made of sections (model, data, lora, objective, schedule,
train, calibration) plus `training_args`: any field of `transformers.TrainingArguments` (bf16,
gradient_checkpointing, report_to, logging_steps, deepspeed, fsdp, ...), passed through as is.

Resolution order (later wins): dataclass defaults -> preset -> YAML file -> command-line flags.
Each option is declared once in ``options.py`` (type, default, help, flag, domain); ``validate.py``
checks them all; old option names are read as aliases with a deprecation warning.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.config.options import (  # noqa: F401  (re-exported)
    ALIASES,
    FLAG_ALIASES,
    SECTIONS,
    SEED_TARGET_MODULES,
    CalibrationOptions,
    DataOptions,
    LoraOptions,
    ModelOptions,
    ObjectiveOptions,
    OptionSpec,
    ScheduleOptions,
    TrainOptions,
    option_specs,
)
from llm_unlearn.config.presets import METHOD_DEFAULTS, PRESETS
from llm_unlearn.config.validate import (  # noqa: F401  (re-exported)
    CHOICES,
    OWN_CHECK,
    PATH_OPTIONS,
    RANGES,
    eval_interval,
    validate,
)
from llm_unlearn.errors import ConfigError, UserError

log = logging.getLogger(__name__)


@dataclass
class UnlearnConfig:
    preset: str = "default"
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    objective: ObjectiveOptions = field(default_factory=ObjectiveOptions)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    training_args: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments

    def to_dict(self) -> dict[str, Any]:
        """Every option, secrets (e.g. training_args.hub_token) replaced by "<redacted>": this is what
        run.json, the checkpoint and resolved_config.yaml hold."""
        return redact_secrets(asdict(self))

    def fingerprint(self) -> dict[str, Any]:
        """The options that change what a run computes (for resume checks): all but bookkeeping."""
        d = self.to_dict()
        for k in ("output_dir", "overwrite", "plots", "progress", "merge"):
            d["train"].pop(k, None)
        return d


_SECRET_KEY = re.compile(
    r"(?:^|_)(?:token|secret|password|passwd|api_?key|auth|credentials?)$", re.IGNORECASE
)
_NOT_SECRET = {"pad_token", "bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token"}
_SECRET_VALUE = re.compile(r"^(?:hf_|api_|sk-)[A-Za-z0-9_\-]{20,}$")


def redact_secrets(obj: Any) -> Any:
    """A copy of `obj` (nested dicts / lists) whose secret-looking entries read "<redacted>": keys
    such as hub_token, token, api_key, password, and values shaped like access tokens (hf_...)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            secret = isinstance(k, str) and bool(_SECRET_KEY.search(k)) and k.lower() not in _NOT_SECRET
            out[k] = "<redacted>" if secret and v not in (None, "", False, True) else redact_secrets(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_secrets(v) for v in obj)
    if isinstance(obj, str) and _SECRET_VALUE.match(obj):
        return "<redacted>"
    return obj


def _coerce(value: Any, current: Any, name: str) -> Any:
    """Coerce a value (often a string from the command line) to the type of the current default."""
    if isinstance(value, str):
        low = value.strip().lower()
        if isinstance(current, bool):
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"option {name}: expected true/false, got {value!r}")
        if low in ("none", "null"):
            return None
        if isinstance(current, int) and not isinstance(current, bool):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise ConfigError(f"option {name}: expected a number, got {value!r}") from None
                return int(f) if f.is_integer() else f
        if isinstance(current, float):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"option {name}: expected a number, got {value!r}") from None
        if isinstance(current, list) or (current is None and "," in value):
            return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _coerce_declared(value: Any, current: Any, name: str, cls, field_name: str) -> Any:
    """_coerce, plus a list of integers given as text ("5,6,7" on the command line) for an option
    declared list[int] (lora.layers)."""
    import typing

    from llm_unlearn.config.options import type_hints

    hint = type_hints(cls)[field_name]
    args = typing.get_args(hint) or (hint,)
    if isinstance(value, str) and list[int] in args:
        parts = [x.strip() for x in str(value).split(",") if x.strip()]
        try:
            return [int(x) for x in parts]
        except ValueError:
            raise ConfigError(f"option {name}: expected comma-separated integers, got {value!r}") from None
    return _coerce(value, current, name)


def _alias(section: str, sub: str, source: str) -> str:
    """The current name of option `section.sub`, warning once per use of an old name."""
    new = ALIASES.get(f"{section}.{sub}")
    if new is None:
        return sub
    if source != "saved config":  # a run saved by an older version is read silently
        msg = f"{source}: option {section}.{sub} is deprecated; use {section}.{new}"
        warnings.warn(msg, DeprecationWarning, stacklevel=3)
        log.warning(msg)
    return new


def apply_overrides(
    cfg: UnlearnConfig, overrides: dict[str, Any], source: str, explicit: set[str] | None = None
) -> UnlearnConfig:
    """Apply a nested dict {section: {key: value}} (or dotted keys) onto cfg, checking every name.
    `explicit` collects the dotted keys that were set."""
    for key, value in overrides.items():
        if key == "preset":  # chosen by build_config before the layers apply; null = not given
            if value is not None and (not isinstance(value, str) or value not in PRESETS):
                raise ConfigError(f"{source}: unknown preset {value!r} (known: {', '.join(PRESETS)})")
            continue
        if key == "training_args":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: training_args must be a mapping")
            cfg.training_args.update(value)
            continue
        if "." in key:
            sec, sub = key.split(".", 1)
            apply_overrides(cfg, {sec: {sub: value}}, source, explicit)
            continue
        if key not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section {key!r} (known: {', '.join([*SECTIONS, 'training_args', 'preset'])})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {key!r} must be a mapping")
        section = getattr(cfg, key)
        names = {f.name for f in fields(section)}
        for sub, v in value.items():
            sub = _alias(key, sub, source)
            if sub not in names:
                raise ConfigError(f"{source}: unknown option {key}.{sub} (known: {', '.join(sorted(names))})")
            setattr(
                section, sub, _coerce_declared(v, getattr(section, sub), f"{key}.{sub}", type(section), sub)
            )
            if explicit is not None:
                explicit.add(f"{key}.{sub}")
    return cfg


def preset_config(name: str, explicit: set[str] | None = None) -> UnlearnConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    cfg = UnlearnConfig(preset=name)
    return apply_overrides(cfg, copy.deepcopy(PRESETS[name]), f"preset {name}", explicit)


def apply_method_defaults(cfg: UnlearnConfig, explicit: set[str]) -> UnlearnConfig:
    """The chosen method's own defaults (METHOD_DEFAULTS: its paper's or the peer framework's), for
    every option the preset, the YAML file and the flags left unset."""
    method = cfg.objective.method
    defaults = (
        METHOD_DEFAULTS.get(method, {}) if isinstance(method, str) else {}
    )  # a bad value: validate() says so
    for key, value in defaults.items():
        if key not in explicit:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, copy.deepcopy(value))
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain YAML keeps
    the last one silently: `learning_rate: 1e-4` then `learning_rate: 0.5` would train at 0.5)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}: the key {key!r} is given twice (lines {seen[key]} and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data() or {}
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    return data


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> UnlearnConfig:
    """defaults -> method defaults -> preset -> YAML -> overrides (dotted keys such as
    'train.learning_rate'). The method's defaults apply to what the later layers leave unset."""
    file_data = load_yaml(yaml_path) if yaml_path else {}
    over_preset = (overrides or {}).get("preset")
    if preset is not None and over_preset is not None and preset != over_preset:
        raise ConfigError(f"two presets given: --preset {preset} and preset={over_preset}; keep one")
    name = preset or over_preset or file_data.get("preset") or "default"
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    explicit: set[str] = set()
    cfg = preset_config(name, explicit)
    if file_data:
        apply_overrides(cfg, file_data, str(yaml_path), explicit)
    if overrides:
        apply_overrides(cfg, overrides, "command line", explicit)
    apply_method_defaults(cfg, explicit)
    apply_calibrated_budget(cfg, explicit)
    apply_gated_defaults(cfg, explicit)
    validate(cfg)
    return cfg


def _evaluates_against_a_holdout(cfg: UnlearnConfig, modes: tuple[str, ...]) -> bool:
    """A holdout, calibration.mode in `modes`, evaluations during training on."""
    c = cfg.calibration
    if not c.holdout or c.mode not in modes:
        return False
    try:
        return eval_interval(c.eval_every) != "off"
    except ConfigError:  # a bad value: validate() says so
        return False


def uses_calibrated_budget(cfg: UnlearnConfig) -> bool:
    """Whether the run is calibrated (a holdout, the gate or the calibrated stop, evaluations on), so
    that its epochs are a ceiling the calibration ends early (calibration.max_epochs)."""
    return cfg.calibration.max_epochs is not None and _evaluates_against_a_holdout(cfg, ("gate", "stop"))


# What a gated calibrated run uses for the options its preset, YAML file and flags leave unset (issue
# 19.2, measured over 5 seeds x a one-ulp perturbation of the weights: README "Calibrated unlearning").
# One optimizer for the run (a fresh Adam per chunk moved the AUC by 0.3-0.6 in its first steps), pull
# and push_answered (the documents' losses held at the holdout's while the answers are still forgotten),
# the quality floors of the selection (the retain floor held in training too: retain_guard), and denser
# evaluations near the crossing of 0.5; the last chunk
# once or twice more while the AUC is still falling above the band, a jump over the band bisected, and a
# kept state outside the band bisected towards its neighbours on the other side of the band's edge.
GATED_DEFAULTS = {
    "schedule.optimizer_scope": "run",
    "calibration.push_answered": True,
    "calibration.pull": 1.0,
    "calibration.pull_band": 0.25,
    "calibration.retain_floor": 0.9,
    "calibration.retain_guard": True,
    "calibration.forget_em_max": 0.2,
    "calibration.dense_near": 0.15,
    "calibration.last_chunk_factor": 2.0,
    "calibration.extend": 2,
    "calibration.bisect": 3,
    "calibration.bisect_selected": 3,
    "calibration.npo_beta_from_gap": True,
}
# A gated default that is not taken when the user set the option it decides (their value wins).
GATED_UNLESS_SET = {"calibration.npo_beta_from_gap": "objective.npo_beta"}


def uses_gated_defaults(cfg: UnlearnConfig) -> bool:
    """A calibrated run with the gate (a holdout, mode gate, evaluations on): GATED_DEFAULTS apply."""
    return _evaluates_against_a_holdout(cfg, ("gate",))


def fsdp_asked() -> bool:
    """accelerate was asked for FSDP over several processes (its environment; train/sharding.py adds
    the device check)."""
    import os

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return fsdp and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def apply_gated_defaults(cfg: UnlearnConfig, explicit: set[str]) -> UnlearnConfig:
    """GATED_DEFAULTS for every option the user left unset, in a gated calibrated run; under FSDP the
    optimizer stays per chunk (its state is sharded: train/sharding.py)."""
    if not uses_gated_defaults(cfg):
        return cfg
    taken = []
    for key, value in GATED_DEFAULTS.items():
        if key in explicit or (key == "schedule.optimizer_scope" and fsdp_asked()):
            continue
        if GATED_UNLESS_SET.get(key) in explicit:
            continue
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
        taken.append(f"{key}={value}")
    if taken:
        log.info("calibrated run with the gate: %s (set any of them to change it)", ", ".join(taken))
    return cfg


def apply_calibrated_budget(cfg: UnlearnConfig, explicit: set[str]) -> UnlearnConfig:
    """A calibrated run whose preset, YAML file and flags leave schedule.epochs unset trains for
    calibration.max_epochs passes per chunk (issue 19.3: the plain default reaches the target by itself);
    every other run keeps schedule.epochs."""
    ceiling = cfg.calibration.max_epochs
    valid = isinstance(ceiling, (int, float)) and not isinstance(ceiling, bool) and ceiling > 0
    if "schedule.epochs" not in explicit and valid and uses_calibrated_budget(cfg):  # else: validate()
        cfg.schedule.epochs = ceiling
        log.info(
            "calibrated run: up to %g epochs a chunk (calibration.max_epochs; the gate and the stop end "
            "chunks early; --epochs N sets the budget)",
            ceiling,
        )
    return cfg


def config_from_dict(d: dict[str, Any]) -> UnlearnConfig:
    """Rebuild a config from its `to_dict()` form (e.g. run.json)."""
    cfg = UnlearnConfig(preset=d.get("preset", "default"))
    apply_overrides(
        cfg, {k: v for k, v in d.items() if k in SECTIONS or k == "training_args"}, "saved config"
    )
    return cfg
