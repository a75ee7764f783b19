"""The SemEval-2025 Task 4 organizers' evaluation loops: one example at a time, no padding (``--official-compat``).

Each function has the interface of its counterpart in :mod:`.batched` (the default, fast mode), so that
:func:`llm_unlearn.evaluation.passes.inference.select_passes` can pick either. They do exactly what the
organizers' script does: ``model.generate(input_ids, max_new_tokens, do_sample=False, use_cache=True,
pad_token_id=eos)`` per prompt, and ``model(ids, labels=...).loss`` per scored sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.evaluation.passes.runtime import decode_new_tokens, model_device
from llm_unlearn.evaluation.passes.token_stats import token_statistics

__all__ = ["generate", "answer_nll", "document_statistics"]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    encoded: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_tokens_per_batch: int | None,
    early_stop: bool,
    bar,
) -> list[str]:
    """Greedy continuation (decoded new tokens) of every non-empty token list, one ``model.generate``
    call each (``batch_size``, ``max_tokens_per_batch`` and ``early_stop`` do not apply)."""
    device = model_device(model)
    outputs: list[str] = []
    for ids in encoded:
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.eos_token_id,
        )
        outputs.append(decode_new_tokens(tokenizer, out[0, input_ids.shape[1] :].tolist()))
        bar.update(1)
    return outputs


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    seqs: Sequence[Sequence[int]],
    starts: Sequence[int],
    *,
    batch_size: int,
    max_tokens_per_batch: int | None,
    bar,
) -> list[float | None]:
    """Mean NLL of the tokens of each ``seqs[i]`` after its first ``starts[i]``: the loss of
    ``model(ids, labels=ids with the first starts[i] positions ignored)``, one sequence at a time."""
    device = model_device(model)
    result: list[float | None] = []
    for ids, start in zip(seqs, starts):
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        labels = input_ids.clone()
        labels[:, :start] = IGNORE_INDEX
        result.append(float(model(input_ids=input_ids, labels=labels).loss.item()))
        bar.update(1)
    return result


@torch.no_grad()
def document_statistics(
    model,
    tokenizer,
    seqs: Sequence[Sequence[int]],
    *,
    k_percent: float,
    batch_size: int,
    max_tokens_per_batch: int | None,
    bar,
) -> list[dict]:
    """:func:`~llm_unlearn.evaluation.passes.token_stats.token_statistics` of each token list (at least 2 tokens), one
    document at a time; ``nll`` is the organizers' ``model(ids, labels=ids).loss``."""
    device = model_device(model)
    result: list[dict] = []
    for ids in seqs:
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        out = model(input_ids=input_ids, labels=input_ids.clone())
        stats = token_statistics(out.logits[0], input_ids[0], k_percent)
        stats["nll"] = float(out.loss.item())
        result.append(stats)
        bar.update(1)
    return result
