"""The evaluation's model passes (generation, answer NLL, document statistics): inputs, and batched vs official.

Every pass prepares its token lists the same way, then runs one of two implementations with the same
interface, chosen by :func:`select_passes`:

* :data:`BATCHED` (default, :mod:`.batched`): length-sorted, padded batches; generation with LEFT padding
  and early-stopping rows, NLL passes with RIGHT padding;
* :data:`OFFICIAL` (``official_compat=True``, ``--official-compat``, :mod:`.official`): one example at a
  time, no padding, exactly as the SemEval-2025 Task 4 organizers' script.

Prompts are tokenized as the tokenizer does by default (``tokenizer(text).input_ids``: special tokens
added as configured), generations are the decoded NEW tokens (``skip_special_tokens=True,
clean_up_tokenization_spaces=True`` as the organizers decode, see :func:`clean_up_tokenization`).
Items with nothing to do (an empty prompt, an answer or document without a token to score) are not
passed to the implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llm_unlearn.evaluation.passes import batched, official
from llm_unlearn.evaluation.passes.batched import forward_last_logits
from llm_unlearn.evaluation.passes.runtime import (
    clean_up_tokenization,
    decode_new_tokens,
    encode,
    eval_mode,
    length_batches,
    model_device,
    progress_bar,
)
from llm_unlearn.evaluation.passes.token_stats import token_statistics
from llm_unlearn.evaluation.passes.verify import known_continuations

__all__ = [
    "Passes",
    "BATCHED",
    "OFFICIAL",
    "select_passes",
    "model_device",
    "eval_mode",
    "encode",
    "clean_up_tokenization",
    "decode_new_tokens",
    "greedy_generate",
    "answer_nll",
    "document_statistics",
    "forward_last_logits",
    "length_batches",
]


@dataclass(frozen=True)
class Passes:
    """One implementation of the three model passes (all take the prepared, non-trivial items only):

    * ``generate(model, tokenizer, encoded, *, max_new_tokens, batch_size, max_tokens_per_batch,
      early_stop, bar) -> list[str]``;
    * ``answer_nll(model, tokenizer, seqs, starts, *, batch_size, max_tokens_per_batch, bar)
      -> list[float]``;
    * ``document_statistics(model, tokenizer, seqs, *, k_percent, batch_size, max_tokens_per_batch,
      bar) -> list[dict]``.
    """

    name: str
    generate: Callable[..., list[str]]
    answer_nll: Callable[..., list[float | None]]
    document_statistics: Callable[..., list[dict]]


BATCHED = Passes("batched", batched.generate, batched.answer_nll, batched.document_statistics)
OFFICIAL = Passes("official", official.generate, official.answer_nll, official.document_statistics)


def select_passes(official_compat: bool) -> Passes:
    """:data:`OFFICIAL` for ``official_compat`` (``--official-compat``), else :data:`BATCHED`."""
    return OFFICIAL if official_compat else BATCHED


def _prompt_ids(tokenizer, prompts: Sequence[str], prompt_ids) -> list[list[int]]:
    """Token lists of the prompts (``prompt_ids`` when given); a prompt that encodes to nothing (empty
    input, tokenizer without BOS) starts from BOS (else EOS) when the tokenizer has one."""
    if prompt_ids is not None:
        encoded = [list(e) for e in prompt_ids]
    else:
        encoded = [encode(tokenizer, p) for p in prompts]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [e if e else ([start] if start is not None else []) for e in encoded]


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    official_compat: bool = False,
    progress: bool = True,
    desc: str = "generate",
    prompt_ids: Sequence[Sequence[int]] | None = None,
    max_tokens_per_batch: int | None = 8192,
    early_stop: bool = True,
    expected: Sequence[str | None] | None = None,
) -> list[str]:
    """Greedy continuation of every prompt (the decoded new tokens), in the order of ``prompts``.
    ``prompt_ids`` (token ids, e.g. a rendered chat template) replaces encoding ``prompts``.
    ``early_stop``: finished rows leave their batch (batched mode); False runs ``model.generate`` on the
    whole batch until its last row finishes. A prompt without tokens gives "".

    ``expected`` (batched mode; one text or None per prompt, e.g. the record's answer): a row whose
    expected answer followed by EOS greedy decoding would reproduce token for token (checked by one
    teacher-forced pass, :func:`~llm_unlearn.evaluation.passes.verify.verify_continuations`) is
    answered from that check without decoding; only the others are decoded. The texts are the same:
    a memorized answer costs one forward instead of one decoding step per token. Not used with
    ``official_compat`` (the organizers' loop, exactly) or a generation config with logits processors."""
    encoded = _prompt_ids(tokenizer, prompts, prompt_ids)
    outputs: list[str] = [""] * len(encoded)
    todo = [i for i, e in enumerate(encoded) if e]
    bar = progress_bar(len(encoded), desc, progress)
    with eval_mode(model), bar:
        bar.update(len(encoded) - len(todo))
        if expected is not None and not official_compat and batched.plain_greedy(model):
            known = known_continuations(
                model, tokenizer, prompts, encoded, expected, todo, max_new_tokens, batch_size, prompt_ids
            )
            for i, text in known.items():
                outputs[i] = text
            todo = [i for i in todo if i not in known]
            bar.update(len(known))
        new = select_passes(official_compat).generate(
            model,
            tokenizer,
            [encoded[i] for i in todo],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            early_stop=early_stop,
            bar=bar,
        )
    for i, text in zip(todo, new):
        outputs[i] = text
    return outputs


@torch.no_grad()
def answer_nll(
    model,
    tokenizer,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    batch_size: int = 16,
    official_compat: bool = False,
    progress: bool = True,
    max_tokens_per_batch: int | None = None,
    desc: str = "answer NLL",
) -> list[float | None]:
    """Mean NLL of each expected output given its input, as the organizers compute it: encode
    ``input + output`` (no separator) and score the tokens after the first ``len(encode(input))``.
    None where nothing is left to score. ``max_tokens_per_batch`` (batched mode): padded tokens per
    forward batch; None: the device's default (:data:`~llm_unlearn.evaluation.passes.batched.TOKENS_PER_BATCH`)."""
    seqs: list[list[int]] = []
    starts: list[int] = []
    for q, a in zip(inputs, outputs):
        seqs.append(encode(tokenizer, q + a))
        starts.append(len(encode(tokenizer, q)))
    result: list[float | None] = [None] * len(seqs)
    todo = [i for i in range(len(seqs)) if len(seqs[i]) > max(starts[i], 1)]
    bar = progress_bar(len(seqs), desc, progress)
    with eval_mode(model), bar:
        bar.update(len(seqs) - len(todo))
        values = select_passes(official_compat).answer_nll(
            model,
            tokenizer,
            [seqs[i] for i in todo],
            [starts[i] for i in todo],
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            bar=bar,
        )
    for i, v in zip(todo, values):
        result[i] = v
    return result


@torch.no_grad()
def document_statistics(
    model,
    tokenizer,
    documents: Sequence[str],
    *,
    batch_size: int = 16,
    official_compat: bool = False,
    k_percent: float = 20,
    progress: bool = True,
    max_tokens_per_batch: int | None = None,
    desc: str = "MIA",
) -> list[dict]:
    """Per document: ``nll`` (mean token NLL of the whole document, labels = input ids, as the
    organizers' loss attack), ``n_tokens`` (predicted tokens), ``min_k``, ``min_k_plus_plus`` (see
    :mod:`llm_unlearn.evaluation.metrics.mia`), all from the same forward pass. A document of fewer than two
    tokens has NaN statistics."""
    seqs = [encode(tokenizer, d) for d in documents]
    nan_stats = token_statistics(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), k_percent)
    result: list[dict] = [dict(nan_stats) for _ in seqs]
    todo = [i for i in range(len(seqs)) if len(seqs[i]) >= 2]
    bar = progress_bar(len(seqs), desc, progress)
    with eval_mode(model), bar:
        bar.update(len(seqs) - len(todo))
        stats = select_passes(official_compat).document_statistics(
            model,
            tokenizer,
            [seqs[i] for i in todo],
            k_percent=k_percent,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            bar=bar,
        )
    for i, st in zip(todo, stats):
        result[i] = st
    return result
