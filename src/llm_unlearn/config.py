"""Every knob of an unlearning run: dataclasses, presets, YAML loading, command-line overrides.

A run's configuration is an `UnlearnConfig` made of sections (model, data, lora, objective,
schedule, train) plus `training_args`: any field of `transformers.TrainingArguments` (bf16,
gradient_checkpointing, report_to, logging_steps, deepspeed, fsdp, ...), passed through as is.

Resolution order (later wins): dataclass defaults -> preset -> YAML file -> command-line flags.
"""

from __future__ import annotations

import copy
import dataclasses
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
    reference_cache: str = "off"  # off | auto | full | topk (reference log-probs computed once per run)
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
    unlearn_documents: bool = True  # the forget documents are unlearned too (one forget row each, all labelled)
    tolerance: float = 0.05  # stop when |MIA AUC - 0.5| <= tolerance (last chunk)
    gate_quantile: float = 0.5  # tau = this quantile of the holdout losses
    select: str = "best"  # best (highest proxy of the final score) | last
    eval_items: int = 32  # sampled forget and retain records per evaluation
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 16


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


_SECRET_KEY = re.compile(r"(?:^|_)(?:token|secret|password|passwd|api_?key|auth|credentials?)$", re.IGNORECASE)
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
    "clausen2025": {"objective": {"retain_divergence": "token_renyi_legacy"},
                    "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False}},
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
        "train": {"learning_rate": 1e-4, "batch_size": 4, "optimizer": "adam", "lr_scheduler": "constant", "seed": 42},
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
            raise ConfigError(f"{source}: unknown section {key!r} (known: {', '.join([*SECTIONS, 'training_args', 'preset'])})")
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
    apply_overrides(cfg, {k: v for k, v in d.items() if k in SECTIONS or k == "training_args"}, "saved config")
    return cfg


def validate(cfg: UnlearnConfig) -> None:
    o, s, t, lo = cfg.objective, cfg.schedule, cfg.train, cfg.lora
    if o.method not in OBJECTIVES:
        raise ConfigError(f"objective.method must be one of {OBJECTIVES}, got {o.method!r}")
    if o.retain_divergence not in RETAIN_DIVERGENCES:
        raise ConfigError(f"objective.retain_divergence must be one of {RETAIN_DIVERGENCES}, got {o.retain_divergence!r}")
    if o.npo_level not in NPO_LEVELS:
        raise ConfigError(f"objective.npo_level must be one of {NPO_LEVELS}, got {o.npo_level!r}")
    if o.npo_beta <= 0:
        raise ConfigError(f"objective.npo_beta must be > 0, got {o.npo_beta}")
    if o.renyi_alpha <= 0:
        raise ConfigError(f"objective.renyi_alpha must be > 0, got {o.renyi_alpha}")
    for name in ("npo_mult", "rt_mult", "renyi_mult"):
        if getattr(o, name) < 0:
            raise ConfigError(f"objective.{name} must be >= 0, got {getattr(o, name)}")
    if s.chunk_size <= 0:
        raise ConfigError(f"schedule.chunk_size must be > 0, got {s.chunk_size}")
    if s.positive_ratio < 0:
        raise ConfigError(f"schedule.positive_ratio must be >= 0, got {s.positive_ratio}")
    if s.epochs <= 0:
        raise ConfigError(f"schedule.epochs must be > 0, got {s.epochs}")
    if s.optimizer_scope not in OPTIMIZER_SCOPES:
        raise ConfigError(f"schedule.optimizer_scope must be one of {OPTIMIZER_SCOPES}, got {s.optimizer_scope!r}")
    if t.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate must be > 0, got {t.learning_rate}")
    if t.batch_size <= 0:
        raise ConfigError(f"train.batch_size must be > 0, got {t.batch_size}")
    if t.optimizer not in ("adamw", "adam"):
        raise ConfigError(f"train.optimizer must be adamw or adam, got {t.optimizer!r}")
    if t.reference_cache not in REFERENCE_CACHE_MODES:
        raise ConfigError(f"train.reference_cache must be one of {REFERENCE_CACHE_MODES}, got {t.reference_cache!r}")
    if lo.r <= 0 or lo.alpha <= 0:
        raise ConfigError(f"lora.r and lora.alpha must be > 0, got r={lo.r} alpha={lo.alpha}")
    if not 0 <= lo.dropout < 1:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {lo.dropout}")
    if cfg.data.max_length is not None and cfg.data.max_length <= 0:
        raise ConfigError(f"data.max_length must be > 0, got {cfg.data.max_length}")
    _validate_calibration(cfg.calibration)
    bad = set(cfg.training_args) & {"output_dir", "learning_rate", "per_device_train_batch_size", "seed"}
    if bad:
        raise ConfigError(
            f"training_args: set {', '.join(sorted(bad))} through the train section / flags, not training_args"
        )


def section_field_names() -> dict[str, list[str]]:
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}


CALIBRATION_MODES = ("gate", "stop", "off")
SELECTIONS = ("best", "last")


def eval_interval(value: Any) -> str | int:
    """`calibration.eval_every` as "auto" | "off" | "chunk" | a positive number of steps."""
    if isinstance(value, bool):
        raise ConfigError(f"calibration.eval_every must be auto, off, chunk or a positive integer, got {value!r}")
    text = str(value).strip().lower()
    if text in ("auto", "off", "chunk"):
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0 or str(n) != text:
        raise ConfigError(f"calibration.eval_every must be auto, off, chunk or a positive integer, got {value!r}")
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
    for name in ("holdout", "forget_documents"):
        v = getattr(c, name)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"calibration.{name} must be a file path, got {v!r}")
