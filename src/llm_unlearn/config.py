"""Every knob of an unlearning run: dataclasses, presets, YAML loading, command-line overrides.

A run's configuration is an `UnlearnConfig` made of sections (model, data, lora, objective,
schedule, train) plus `training_args`: any field of `transformers.TrainingArguments` (bf16,
gradient_checkpointing, report_to, logging_steps, deepspeed, fsdp, ...), passed through as is.

Resolution order (later wins): dataclass defaults -> preset -> YAML file -> command-line flags.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.errors import ConfigError, UserError

SEED_TARGET_MODULES = ["q_proj", "v_proj", "up_proj", "down_proj"]

OBJECTIVES = ("npo_rt_div", "gradient_ascent", "gradient_difference", "sugd")
RETAIN_DIVERGENCES = ("renyi", "kl", "token_renyi_legacy", "none")
NPO_LEVELS = ("token", "sequence")
OPTIMIZER_SCOPES = ("chunk", "run")
REFERENCE_CACHE_MODES = ("auto", "off", "full", "topk")


@dataclass
class ModelOptions:
    name_or_path: str | None = None  # local directory or hub id (hub ids need network)
    tokenizer: str | None = None  # defaults to the model path
    gguf_file: str | None = None  # load a GGUF checkpoint (transformers' gguf support)
    dtype: str = "auto"  # auto = bf16 on GPUs that support it, fp32 otherwise
    trust_remote_code: bool = False  # never run model repository code unless asked
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin) when a model has no safetensors


@dataclass
class DataOptions:
    data: str | None = None  # directory in one of the accepted layouts
    split: str | None = None  # e.g. "train" for <dir>/train/forget.jsonl
    forget: str | None = None  # explicit forget file
    retain: str | None = None  # explicit retain file
    joiner: str = " "  # text = input + joiner + output
    add_eos: bool = False  # append EOS after the answer (labelled)
    max_length: int | None = 512  # truncate longer rows (a warning counts them)
    limit: int | None = None  # use only the first N rows of each of forget and retain


@dataclass
class LoraOptions:
    r: int = 16
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] | None = field(default_factory=lambda: list(SEED_TARGET_MODULES))


@dataclass
class ObjectiveOptions:
    method: str = "npo_rt_div"  # npo_rt_div | gradient_ascent | gradient_difference | sugd
    npo_mult: float = 1.0
    rt_mult: float = 1.0
    renyi_mult: float = 1.0  # weight of the retain divergence term (whatever its kind)
    npo_beta: float = 0.5
    renyi_alpha: float = 0.5
    npo_level: str = "token"  # token (seed, Atyaephyra) | sequence (NPO paper, open-unlearning)
    retain_divergence: str = "renyi"  # renyi | kl | token_renyi_legacy | none
    sugd_forget_factor: float = -1.0  # AILS-NTUA SUGD weights
    sugd_retain_factor: float = 0.5


@dataclass
class ScheduleOptions:
    chunk_size: int = 32
    positive_ratio: float = 7
    split_retain: bool = True
    sequential: bool = True
    epochs: float = 5  # passes over each chunk
    optimizer_scope: str = "chunk"  # chunk = fresh optimizer + LR decay per chunk (seed); run = one for all


@dataclass
class TrainOptions:
    output_dir: str | None = None
    learning_rate: float = 1e-4
    batch_size: int = 8  # global batch (split across processes under accelerate)
    gradient_accumulation_steps: int = 1
    seed: int = 9550
    optimizer: str = "adamw"  # adamw | adam (adam = AdamW with weight decay 0)
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"  # any transformers scheduler name; per chunk when scope = chunk
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    merge: bool = True  # also write DIR/model (merged weights + tokenizer)
    overwrite: bool = False
    reference_cache: str = "auto"  # auto (full if it fits the budget, else off) | off | full | topk
    reference_cache_budget_gib: float = 8.0
    reference_cache_topk: int = 256
    reference_cache_dtype: str = "float16"  # float16 | bfloat16 | float32
    plots: bool = True
    progress: bool = True


@dataclass
class CalibrationOptions:
    """Evaluation during training, the calibration gate, stopping and checkpoint selection
    (see calibration.py). Without a holdout there is nothing to calibrate against: `auto` then
    evaluates nothing and the run is uncalibrated (one warning says so)."""

    mode: str = "gate"  # gate (stop pushing forget units that look unseen) | stop (stop/select only) | off
    eval_every: str = "auto"  # auto (4 per chunk when a holdout is given) | off | chunk | N steps
    holdout: str | None = None  # never-trained documents / records (see data/holdout.py)
    forget_documents: str | None = None  # the forget side's documents (e.g. SemEval mia/member.jsonl)
    unlearn_documents: bool = (
        True  # the forget documents are unlearned too (one forget row each, all labelled)
    )
    tolerance: float = 0.05  # stop when |MIA AUC - 0.5| <= tolerance (last chunk)
    gate_quantile: float = 0.5  # tau = this quantile of the holdout losses
    select: str = "best"  # best (highest proxy of the final score) | last
    eval_items: int = 32  # sampled forget and retain records per evaluation
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 16
    mmlu: str | None = None  # MMLU data (a directory `llm-unlearn mmlu` reads): MMLU enters the proxy
    mmlu_items: int = 5  # test questions per subject per evaluation (the MMLU budget), 5-shot


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


SECTIONS = {
    "model": ModelOptions,
    "data": DataOptions,
    "lora": LoraOptions,
    "objective": ObjectiveOptions,
    "schedule": ScheduleOptions,
    "train": TrainOptions,
    "calibration": CalibrationOptions,
}

# Presets are partial dicts applied over the defaults. They reproduce the upstream systems.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Clausen (2025) with the retain term replaced by a true Rényi divergence (our default).
    "default": {},
    # Clausen (2025) exactly: the seed's token-level "Rényi" term (not a divergence), uncalibrated.
    "clausen2025": {
        "objective": {"retain_divergence": "token_renyi_legacy"},
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
    # Atyaephyra (SemEval-2025 Task 4): token NPO + retain NLL + 0.5 x token-level F.kl_div,
    # LoRA r=5 alpha=5 on q/v, Adam without schedule, 20 epochs, no chunking.
    "atyaephyra": {
        "objective": {
            "retain_divergence": "token_renyi_legacy",
            "renyi_alpha": 1.0,  # the legacy alpha = 1 branch is their F.kl_div term
            "renyi_mult": 0.5,
            "npo_beta": 0.5,
            "npo_level": "token",
        },
        "lora": {"r": 5, "alpha": 5, "target_modules": ["q_proj", "v_proj"]},
        "schedule": {"sequential": False, "positive_ratio": 1, "epochs": 20},
        "train": {
            "learning_rate": 1e-4,
            "batch_size": 4,
            "optimizer": "adam",
            "lr_scheduler": "constant",
            "seed": 42,
        },
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
    # AILS-NTUA (SemEval-2025 Task 4): SUGD = per-sample CE x factor (-1 forget, +0.5 retain), chunked.
    "ails-ntua": {
        "objective": {"method": "sugd", "sugd_forget_factor": -1.0, "sugd_retain_factor": 0.5},
        "lora": {"r": 16, "alpha": 64},
        "schedule": {"chunk_size": 32, "positive_ratio": 7, "split_retain": True, "epochs": 7},
        "train": {"learning_rate": 1e-5, "batch_size": 1},
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
}


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


def apply_overrides(cfg: UnlearnConfig, overrides: dict[str, Any], source: str) -> UnlearnConfig:
    """Apply a nested dict {section: {key: value}} (or dotted keys) onto cfg, checking every name."""
    for key, value in overrides.items():
        if key == "preset":
            continue
        if key == "training_args":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: training_args must be a mapping")
            cfg.training_args.update(value)
            continue
        if "." in key:
            sec, sub = key.split(".", 1)
            apply_overrides(cfg, {sec: {sub: value}}, source)
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
            if sub not in names:
                raise ConfigError(f"{source}: unknown option {key}.{sub} (known: {', '.join(sorted(names))})")
            setattr(section, sub, _coerce(v, getattr(section, sub), f"{key}.{sub}"))
    return cfg


def preset_config(name: str) -> UnlearnConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    cfg = UnlearnConfig(preset=name)
    return apply_overrides(cfg, copy.deepcopy(PRESETS[name]), f"preset {name}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    return data


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> UnlearnConfig:
    """defaults -> preset -> YAML -> overrides (dotted keys such as 'train.learning_rate')."""
    file_data = load_yaml(yaml_path) if yaml_path else {}
    name = preset or file_data.get("preset") or "default"
    cfg = preset_config(name)
    if file_data:
        apply_overrides(cfg, file_data, str(yaml_path))
    if overrides:
        apply_overrides(cfg, overrides, "command line")
    validate(cfg)
    return cfg


def config_from_dict(d: dict[str, Any]) -> UnlearnConfig:
    """Rebuild a config from its `to_dict()` form (e.g. run.json)."""
    cfg = UnlearnConfig(preset=d.get("preset", "default"))
    apply_overrides(
        cfg, {k: v for k, v in d.items() if k in SECTIONS or k == "training_args"}, "saved config"
    )
    return cfg


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
REFERENCE_CACHE_DTYPES = ("float16", "bfloat16", "float32")
PATH_OPTIONS = {
    "model.name_or_path",
    "model.tokenizer",
    "model.gguf_file",
    "data.data",
    "data.split",
    "data.forget",
    "data.retain",
    "train.output_dir",
    "calibration.holdout",
    "calibration.forget_documents",
    "calibration.mmlu",
}
OWN_CHECK = {"calibration.eval_every"}  # a word or a number of steps: eval_interval() checks it
# Every option's domain, checked by validate() before anything is loaded. Numbers must be finite; a
# bool is never a number; an int option takes no fraction. (low, high, low_open, high_open); None = no bound.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.max_length": (1, None, False, False),  # null = no truncation
    "data.limit": (1, None, False, False),  # null = all rows (0 is refused: it would mean "no rows")
    "lora.r": (1, 65536, False, False),
    "lora.alpha": (1, None, False, False),
    "lora.dropout": (0, 1, False, True),
    "objective.npo_mult": (0, None, False, False),
    "objective.rt_mult": (0, None, False, False),
    "objective.renyi_mult": (0, None, False, False),
    "objective.npo_beta": (0, None, True, False),
    "objective.renyi_alpha": (0, None, True, False),
    "schedule.chunk_size": (1, None, False, False),
    "schedule.positive_ratio": (0, 1e6, False, False),
    "schedule.epochs": (0, 1e6, True, False),
    "train.learning_rate": (0, None, True, False),
    "train.batch_size": (1, None, False, False),
    "train.gradient_accumulation_steps": (1, None, False, False),
    "train.seed": (0, 2**32 - 1, False, False),  # numpy's seed range
    "train.weight_decay": (0, None, False, False),
    "train.warmup_ratio": (0, 1, False, True),
    "train.max_grad_norm": (0, None, False, False),  # 0 = no clipping
    "train.logging_steps": (1, None, False, False),
    "train.reference_cache_budget_gib": (0, None, True, False),
    "train.reference_cache_topk": (1, 2**31 - 1, False, False),
    "calibration.tolerance": (0, 0.5, False, False),
    "calibration.gate_quantile": (0, 1, False, False),
    "calibration.eval_items": (1, None, False, False),
    "calibration.eval_max_new_tokens": (1, None, False, False),
    "calibration.eval_batch_size": (1, None, False, False),
    "calibration.mmlu_items": (1, None, False, False),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": DTYPES,
    "objective.method": OBJECTIVES,
    "objective.retain_divergence": RETAIN_DIVERGENCES,
    "objective.npo_level": NPO_LEVELS,
    "schedule.optimizer_scope": OPTIMIZER_SCOPES,
    "train.optimizer": ("adamw", "adam"),
    "train.reference_cache": REFERENCE_CACHE_MODES,
    "train.reference_cache_dtype": REFERENCE_CACHE_DTYPES,
}


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


def validate(cfg: UnlearnConfig) -> None:
    """Every option against its declared type and domain (RANGES, CHOICES), and training_args against
    transformers.TrainingArguments; raises ConfigError (one line) on the first bad value. Called by
    build_config and again by run_unlearning, before any data or model is loaded."""
    import typing

    if not isinstance(cfg.preset, str) or cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
    for section, cls in SECTIONS.items():
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            name, value = f"{section}.{f.name}", getattr(obj, f.name)
            if name in OWN_CHECK:
                continue
            err = _type_error(name, value, hints[f.name])
            if err:
                raise ConfigError(err)
            if value is None:
                continue
            if name in PATH_OPTIONS and value == "":
                raise ConfigError(f"option {name} is an empty string; leave it out (null) or give a path")
            if name in CHOICES and value not in CHOICES[name]:
                raise ConfigError(f"option {name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
            if name in RANGES:
                lo, hi, lo_open, hi_open = RANGES[name]
                bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
                    hi is not None and (value > hi or (hi_open and value == hi))
                )
                if bad and hi is None:
                    raise ConfigError(f"option {name} must be {'>' if lo_open else '>='} {lo:g}, got {value}")
                if bad:
                    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
                    raise ConfigError(f"option {name} must be in {left}{lo:g}, {hi:g}{right}, got {value}")
    if cfg.lora.target_modules is not None and (not cfg.lora.target_modules or "" in cfg.lora.target_modules):
        raise ConfigError(
            "option lora.target_modules must be null (the architecture's default) or non-empty names"
        )
    _validate_calibration(cfg.calibration)
    _validate_training_args(cfg)


_TRAINING_ARGS_OWN = {"output_dir", "learning_rate", "per_device_train_batch_size", "seed"}


def _validate_training_args(cfg: UnlearnConfig) -> None:
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


def section_field_names() -> dict[str, list[str]]:
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}


CALIBRATION_MODES = ("gate", "stop", "off")
SELECTIONS = ("best", "last")
CHOICES.update({"calibration.mode": CALIBRATION_MODES, "calibration.select": SELECTIONS})


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
