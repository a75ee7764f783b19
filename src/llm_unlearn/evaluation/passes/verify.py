"""Greedy continuations known without decoding them: a row whose expected answer greedy decoding would
reproduce is answered from one teacher-forced forward over ``prompt + answer + EOS``.

Greedy decoding feeds back its own argmax. So when, in one forward over the prompt followed by a
candidate continuation, the argmax at every position is the candidate's next token, decoding emits
exactly the candidate, token for token (induction over the positions); where it is not, the candidate
up to the first differing token followed by the argmax there is still what decoding emits first. The
same tokens up to the float rounding that already separates a cached decoding step from a full forward
(or one batch size from another). On a model that still knows its answers (a memorization check, the
retain side of a calibration evaluation, an unlearning target) one forward replaces one decoding step
per token. Used by :func:`~llm_unlearn.evaluation.passes.inference.greedy_generate` (``expected=``) in
the batched mode only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_unlearn.data.batching import pad_batch
from llm_unlearn.evaluation.passes.batched import (
    MAX_PADDING,
    _right_padded_forward,
    _until_eos,
    token_budget,
)
from llm_unlearn.evaluation.passes.runtime import (
    decode_new_tokens,
    encode,
    eos_ids,
    forward_params,
    length_batches,
    model_device,
    pad_token_id,
)

__all__ = ["known_continuations", "verify_continuations"]


@torch.no_grad()
def verify_continuations(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[int]],
    *,
    batch_size: int,
    max_tokens_per_batch: int | None,
) -> list[list[int]]:
    """For each row, the first tokens greedy decoding from ``prompts[i]`` emits, as far as one
    teacher-forced forward over ``prompt + candidate`` shows them: the whole candidate when every
    argmax is the candidate's next token, else the candidate up to its first differing token followed
    by the model's argmax there. Greedy decoding feeds back its own argmax, so by induction over the
    positions this prefix IS what decoding emits first, token for token (up to the float rounding that
    already separates a cached decoding step from a full forward, or one batch size from another), at
    the cost of one forward instead of one decoding step per token. A row whose result equals its
    candidate decodes to exactly the candidate. Right-padded length buckets as the NLL passes (causal
    attention: padding after a row changes nothing before it). An empty prompt or candidate gives []."""
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    result: list[list[int]] = [[] for _ in prompts]
    todo = [i for i in range(len(prompts)) if prompts[i] and candidates[i]]
    seqs = [list(prompts[i]) + list(candidates[i]) for i in todo]
    budget = token_budget(max_tokens_per_batch, device)
    slices = "logits_to_keep" in forward_params(model)
    for group in length_batches([len(s) for s in seqs], batch_size, budget, MAX_PADDING):
        input_ids, mask = pad_batch([seqs[g] for g in group], pad_id, side="right", device=device)
        starts = [len(prompts[todo[g]]) for g in group]
        # the prediction of a candidate's first token is made at its prompt's last position; logits
        # from the batch's first such position on, as answer_nll keeps them (all where not sliceable)
        offset = min(starts) - 1 if slices else 0
        kw = {"logits_to_keep": input_ids.shape[1] - offset} if slices else {}
        logits = _right_padded_forward(model, input_ids, mask, **kw).logits
        for r, g in enumerate(group):
            cand = list(candidates[todo[g]])
            first = starts[r] - 1 - offset
            predicted = logits[r, first : first + len(cand)].argmax(-1).tolist()
            k = next((j for j, (a, b) in enumerate(zip(predicted, cand)) if a != b), len(cand))
            result[todo[g]] = cand if k == len(cand) else cand[:k] + [int(predicted[k])]
    return result


def _answer_tokenizations(tokenizer, prompt: str | None, ids: list[int], answer: str) -> list[list[int]]:
    """The token lists a model may have learned ``answer`` as after the prompt ``ids``, most likely
    first: the rest of ``prompt + " " + answer`` (how fine-tuning and unlearning join them) and of
    ``prompt + answer`` (the organizers' NLL) encoded together, where that starts with the prompt's own
    tokens, then the answer encoded alone, with and without a leading space; no duplicates."""
    out: list[list[int]] = []
    if prompt is not None:
        for joiner in (" ", ""):
            joint = encode(tokenizer, prompt + joiner + answer)
            if len(joint) > len(ids) and joint[: len(ids)] == ids:
                out.append(joint[len(ids) :])
    for text in (answer, " " + answer):
        out.append(list(tokenizer(text, add_special_tokens=False).input_ids))
    unique: list[list[int]] = []
    for c in out:
        if c and c not in unique:
            unique.append(c)
    return unique


def known_continuations(
    model, tokenizer, prompts, encoded, expected, todo, max_new_tokens: int, batch_size: int, prompt_ids
) -> dict[int, str]:
    """``{row: decoded text}`` of the rows of ``todo`` whose greedy continuation is their expected
    answer followed by EOS (cut at ``max_new_tokens``, where decoding would stop), verified by a
    teacher-forced pass (:func:`verify_continuations`). The
    answer's most likely tokenization is checked first; a row whose decoding provably starts like
    another tokenization (the first pass shows its first greedy tokens) is checked once more with
    that one. A row whose model would decode anything else is not in the result (decoded as usual)."""
    eos = eos_ids(model, tokenizer)
    if not eos or len(expected) != len(encoded):
        return {}
    stop = tokenizer.eos_token_id if tokenizer.eos_token_id in eos else min(eos)
    variants: dict[int, list[list[int]]] = {}
    for i in todo:
        if expected[i]:
            prompt = prompts[i] if prompt_ids is None else None
            found = _answer_tokenizations(tokenizer, prompt, encoded[i], str(expected[i]))
            variants[i] = [(ids + [stop])[:max_new_tokens] for ids in found]
    known: dict[int, list[int]] = {}

    def verify(rows: list[int], candidates: list[list[int]]) -> list[list[int]]:
        prompts_ = [encoded[i] for i in rows]
        return verify_continuations(
            model, tokenizer, prompts_, candidates, batch_size=batch_size, max_tokens_per_batch=None
        )

    rows = [i for i in variants if variants[i]]
    shown = verify(rows, [variants[i][0] for i in rows])
    again, second = [], []
    for i, prefix in zip(rows, shown):
        if prefix == variants[i][0]:
            known[i] = prefix
            continue
        # another tokenization that decoding provably starts with, and that says more than the prefix
        fits = [c for c in variants[i][1:] if len(c) > len(prefix) and c[: len(prefix)] == prefix]
        if fits:
            again.append(i)
            second.append(fits[0])
    if again:
        shown = verify(again, second)
        known.update({i: c for i, c, prefix in zip(again, second, shown) if prefix == c})
    return {i: decode_new_tokens(tokenizer, _until_eos(c, eos)) for i, c in known.items()}
