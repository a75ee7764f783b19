"""Logit lens (nostalgebraist 2020): read every layer's residual stream through the final norm and the
output layer, at the answer positions.

For an item (prompt, answer) the sequence ``encode(prompt + answer)`` is scored after its first
``len(encode(prompt))`` tokens, as the evaluation's answer NLL does. With ``h_l`` the output of decoder
layer ``l`` (1 .. L) at the position before each answer token ``y``::

    logits_l = lm_head(norm(h_l))          (norm: the model's final norm; at l = L: the model's logits)
    nll_l    = mean over answer tokens of  -log softmax(logits_l)[y]
    rank_l   = mean over answer tokens of  #{v : logits_l[v] > logits_l[y]}     (0 = ranked first)
    top1_l   = share of answer tokens with rank 0

Per model and layer: the means over items of ``nll_l``, ``exp(-nll_l)`` (``prob``), ``rank_l`` and
``top1_l``. The **best layer** is the one with the lowest mean NLL: when it is an intermediate layer
with a much lower NLL than the last, the answer is still in the residual stream and the last layers
suppress it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from llm_unlearn.data.batching import pad_batch
from llm_unlearn.evaluation.metrics.tofu_muse import mean

__all__ = ["lens_parts", "layer_statistics", "lens_summary", "run_logit_lens"]


def lens_parts(model):
    """(decoder layers, final norm, output layer) of a causal LM (through a PEFT wrapper)."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = m.get_decoder() if hasattr(m, "get_decoder") else m.model
    return decoder.layers, decoder.norm, m.get_output_embeddings()


@torch.no_grad()
def layer_statistics(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16
) -> list[list[dict] | None]:
    """Per item: per layer ``{"nll", "rank", "top1"}`` (list of L dicts), None when no answer token."""
    from llm_unlearn.evaluation.passes.runtime import encode, eval_mode, model_device, pad_token_id

    layers, norm, head = lens_parts(model)
    seqs = [encode(tokenizer, q + a) for q, a in zip(prompts, answers)]
    starts = [len(encode(tokenizer, q)) for q in prompts]
    result: list[list[dict] | None] = [None] * len(seqs)
    todo = [i for i in range(len(seqs)) if len(seqs[i]) > max(starts[i], 1)]
    captured: list[torch.Tensor] = []

    def hook(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    dev = model_device(model)
    try:
        with eval_mode(model):
            for b in range(0, len(todo), batch_size):
                idx = todo[b : b + batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], pad_token_id(tokenizer), device=dev)
                captured.clear()
                model(input_ids=ids, attention_mask=mask, use_cache=False)
                for row, i in enumerate(idx):
                    pos = torch.arange(max(starts[i], 1) - 1, len(seqs[i]) - 1, device=dev)
                    target = ids[row, pos + 1]
                    per_layer = []
                    for h in captured:
                        logits = head(norm(h[row, pos])).float()
                        logp = torch.log_softmax(logits, dim=-1)
                        tgt = logits.gather(1, target[:, None])
                        rank = (logits > tgt).sum(dim=1).float()
                        per_layer.append(
                            {
                                "nll": float(-logp.gather(1, target[:, None]).mean()),
                                "rank": float(rank.mean()),
                                "top1": float((rank == 0).float().mean()),
                            }
                        )
                    result[i] = per_layer
    finally:
        for hd in handles:
            hd.remove()
    return result


def lens_summary(stats: Sequence[list[dict] | None]) -> dict:
    """Per layer the means over items; ``best_layer`` (1-based, lowest mean NLL), ``final_layer``, and
    ``best`` / ``final``: that layer's row."""
    items = [s for s in stats if s is not None]
    if not items:
        return {"layers": [], "best_layer": None, "final_layer": None, "best": None, "final": None}
    n_layers = len(items[0])
    layers = []
    for l_ in range(n_layers):
        nll = mean([s[l_]["nll"] for s in items])
        layers.append(
            {
                "layer": l_ + 1,
                "nll": nll,
                "prob": mean([math.exp(-s[l_]["nll"]) for s in items]),
                "rank": mean([s[l_]["rank"] for s in items]),
                "top1": mean([s[l_]["top1"] for s in items]),
            }
        )
    best = min(range(n_layers), key=lambda k: (layers[k]["nll"], -k))
    return {
        "layers": layers,
        "best_layer": best + 1,
        "final_layer": n_layers,
        "best": layers[best],
        "final": layers[-1],
    }


def run_logit_lens(ctx) -> dict:
    """The attack on the stage's context: per model (target, unlearned, never-trained if given) the
    forget set's :func:`lens_summary` (and the retain set's for the unlearned model)."""
    forget = ctx.probes.forget
    prompts, answers = [p.prompt for p in forget], [p.answer for p in forget]
    out = {}
    for name, model in ctx.models():
        ctx.say(f"logit lens: {name} ({len(forget)} items)")
        out[name] = lens_summary(
            layer_statistics(model, ctx.tokenizer, prompts, answers, batch_size=ctx.batch_size)
        )
    return out
