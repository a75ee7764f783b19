"""Quantization attack: merge the adapter, round the weights as users load the model, evaluate again.

Users load a model in 4 bits (``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")``) or in
8 bits (``load_in_8bit=True``, LLM.int8). Both round the weights of every ``nn.Linear`` of the decoder;
the output layer (``lm_head``) and the embeddings stay in full precision (transformers keeps the output
embedding out of the conversion). A LoRA adapter is a small delta on unchanged base weights: when the
delta is below the rounding step, the quantized unlearned model *is* the quantized target model.

Schemes (the weights are rounded and dequantized back into a float model, evaluated on the CPU; the
matrix products then see exactly the weights the quantized kernels use):

* ``nf4``: ``bitsandbytes.functional.quantize_4bit(w, blocksize=64, quant_type="nf4")`` then
  ``dequantize_4bit`` (blocks of 64 consecutive weights of the row-major matrix, absmax per block,
  the 16 NormalFloat levels; the defaults of ``Linear4bit``, no double quantization). Needs bitsandbytes
  (the ``quant`` extra);
* ``int8``: LLM.int8's weight rounding: per output row, ``q = round(127 w / max|w_row|)``, ``w' = q
  max|w_row| / 127`` (bitsandbytes' ``int8_vectorwise_quant`` / ``int8_vectorwise_dequant``; computed
  here in torch so that it runs without bitsandbytes, and tested against bitsandbytes). LLM.int8 also
  rounds activations outside its outlier columns at run time; that part is not reproduced: the
  activations stay in float.
"""

from __future__ import annotations

import copy
import importlib.util

import torch

__all__ = [
    "SCHEMES",
    "bnb_available",
    "merged_copy",
    "quantized_linears",
    "nf4_roundtrip",
    "int8_roundtrip",
    "quantize_model",
]

SCHEMES = ("nf4", "int8")
NF4_BLOCKSIZE = 64


def bnb_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def merged_copy(model):
    """A copy of ``model`` with its PEFT adapter merged (a plain model is copied as it is)."""
    merged = copy.deepcopy(model)
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()
    return merged


def quantized_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` users' quantization converts: all but the output layer."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not out_emb]


def nf4_roundtrip(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded to bitsandbytes NF4 (blocksize 64) and dequantized, in its own dtype."""
    import bitsandbytes.functional as bnbf

    w = weight.detach().to(torch.float32).contiguous()
    q, state = bnbf.quantize_4bit(w, blocksize=NF4_BLOCKSIZE, quant_type="nf4")
    return bnbf.dequantize_4bit(q, state, blocksize=NF4_BLOCKSIZE, quant_type="nf4").to(weight.dtype)


def int8_roundtrip(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded row-wise to int8 with absmax scaling and dequantized (all-zero rows stay 0)."""
    w = weight.detach().to(torch.float32)
    absmax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    q = torch.round(w * (127.0 / scale)).clamp(-127, 127)
    return (q * (scale / 127.0)).to(weight.dtype)


_ROUNDTRIP = {"nf4": nf4_roundtrip, "int8": int8_roundtrip}


@torch.no_grad()
def quantize_model(model, scheme: str):
    """A merged copy of ``model`` whose decoder linear weights went through ``scheme`` (see the module
    docstring); ``model`` itself is not changed."""
    if scheme not in _ROUNDTRIP:
        raise ValueError(f"unknown quantization scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    q = merged_copy(model)
    for _, module in quantized_linears(q):
        module.weight.copy_(_ROUNDTRIP[scheme](module.weight))
    q.eval()
    return q


def run_quantization(ctx, schemes) -> dict:
    """The attack on the stage's context: per scheme, the quantized unlearned model scored on forget and
    retain; returns ``{scheme: {"forget": rows, "retain": rows}}`` (schemes needing bitsandbytes are
    left out with a note when it is missing)."""
    out = {}
    for scheme in schemes:
        if scheme == "nf4" and not bnb_available():
            ctx.notes.append(
                "quantization nf4 skipped: bitsandbytes is not installed (pip install llm-unlearn[quant])"
            )
            continue
        ctx.say(f"quantization: {scheme}")
        model = quantize_model(ctx.unlearned, scheme)
        out[scheme] = ctx.score_all(f"unlearned+{scheme}", model, f"quantized {scheme}")
        del model
    return out
