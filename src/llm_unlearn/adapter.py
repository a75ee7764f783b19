"""A PEFT adapter and its base model: attaching it, checking that it fits (module names and shapes) and
that it was trained on this base model (the record `llm_unlearn_base.json` beside its config)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from llm_unlearn.data.formats import read_json_object
from llm_unlearn.errors import UserError

log = logging.getLogger(__name__)

BASE_FILE = "llm_unlearn_base.json"  # beside adapter_config.json: the base model the adapter was trained on
_BASE_CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")


def base_fingerprint(model) -> dict:
    """What identifies a base model cheaply and independently of the dtype it was loaded in: a few
    config fields and the sha256 of 64 evenly spaced rows of its input embedding rounded to bfloat16
    (a bf16 checkpoint loaded in fp32 and the same checkpoint loaded in bf16 give the same bytes)."""
    import hashlib

    cfg = getattr(model, "config", None)
    out = {k: getattr(cfg, k, None) for k in _BASE_CONFIG_KEYS}
    try:
        weight = model.get_input_embeddings().weight.detach()
        idx = torch.linspace(0, weight.shape[0] - 1, steps=min(64, weight.shape[0])).long()
        rows = weight[idx].to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
        out["embedding_sha256"] = hashlib.sha256(rows).hexdigest()
    except Exception:  # a sharded parameter (FSDP / ZeRO-3): the config fields alone
        out["embedding_sha256"] = None
    return out


def write_base_fingerprint(adapter_dir: str | Path, model, name_or_path: str | None = None) -> None:
    """Record in `adapter_dir` which base model the adapter belongs to (checked by attach_adapter)."""
    import json

    data = {"base_model": name_or_path, **base_fingerprint(model)}
    Path(adapter_dir, BASE_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def check_adapter_base(model, adapter_dir: str | Path, force: bool = False) -> None:
    """Refuse an adapter recorded for another base model (same shapes or not): the adapter's
    `llm_unlearn_base.json` against `model`. An adapter without that file (made elsewhere) is not
    checked beyond its shapes; `force` skips the check with a warning."""
    saved = read_json_object(Path(adapter_dir, BASE_FILE), "the adapter's base-model record")
    if saved is None:
        return
    now = base_fingerprint(model)
    differ = [k for k, v in now.items() if saved.get(k) is not None and v is not None and saved.get(k) != v]
    if not differ:
        return
    what = ", ".join(differ)
    if force:
        log.warning(
            "the adapter %s was trained on another base model (%s differ); --force: used anyway",
            adapter_dir,
            what,
        )
        return
    raise UserError(
        f"the adapter {adapter_dir} was trained on another base model ({saved.get('base_model') or 'unknown'}; "
        f"{what} differ{'s' if len(differ) == 1 else ''}); give that model, or --force to use it anyway"
    )


def attach_adapter(
    model, adapter_dir: str, is_trainable: bool = False, allow_pickle: bool = False, force: bool = False
):
    from peft import PeftModel

    if not Path(adapter_dir, "adapter_config.json").is_file():
        raise UserError(f"not a PEFT adapter directory (no adapter_config.json): {adapter_dir}")
    if not Path(adapter_dir, "adapter_model.safetensors").is_file() and not allow_pickle:
        raise UserError(
            f"{adapter_dir} has no adapter_model.safetensors (pickle adapter weights are loaded only "
            "with --allow-pickle)"
        )
    read_json_object(Path(adapter_dir, "adapter_config.json"), "a PEFT adapter config", ("peft_type",))
    check_adapter_fits(model, adapter_dir)
    check_adapter_base(model, adapter_dir, force=force)
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=is_trainable)


def check_adapter_fits(model, adapter_dir: str | Path) -> None:
    """Refuse (one line) an adapter that was not made for `model`'s architecture: every LoRA weight
    must name a linear (or embedding) module of the model, with matching shapes (lora_A [r, in],
    lora_B [out, r]); an adapter for a deeper model names layers this one lacks. Reads only the
    safetensors header; a corrupt file is reported as such."""
    import re

    from safetensors import safe_open

    f = Path(adapter_dir, "adapter_model.safetensors")
    if not f.is_file():
        return  # pickle adapter (--allow-pickle): PEFT checks what it can
    try:
        with safe_open(str(f), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # SafetensorError and friends
        raise UserError(f"{f} is not a readable safetensors file (corrupt or truncated?): {exc}") from None
    modules = dict(model.named_modules())
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for key, shape in shapes.items():
        m = re.match(
            r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?\.weight$",
            key,
        )
        if not m:
            continue
        name, part = m.group(1), m.group(2)
        mod = modules.get(name)
        if mod is None:
            layer = re.search(r"\.layers\.(\d+)\.", key)
            deeper = (
                f" (the adapter has layer {layer.group(1)}, the model {n_layers} layers)"
                if layer and n_layers is not None and int(layer.group(1)) >= n_layers
                else ""
            )
            raise UserError(
                f"the adapter {adapter_dir} does not fit the model: it adapts {name}, which the model "
                f"does not have{deeper}; was it trained on another base model?"
            )
        base = getattr(mod, "base_layer", mod)
        in_f, out_f = getattr(base, "in_features", None), getattr(base, "out_features", None)
        if in_f is None and isinstance(base, torch.nn.Embedding):
            in_f, out_f = base.num_embeddings, base.embedding_dim
        want = {
            "lora_A": (None, in_f),
            "lora_B": (out_f, None),
            "lora_embedding_A": (None, in_f),
            "lora_embedding_B": (out_f, None),
        }[part]
        if len(shape) != 2 or any(w is not None and w != g for w, g in zip(want, shape)):
            raise UserError(
                f"the adapter {adapter_dir} does not fit the model: {key} has shape {list(shape)}, the "
                f"model's {name} is {in_f} -> {out_f}; was it trained on another base model?"
            )
