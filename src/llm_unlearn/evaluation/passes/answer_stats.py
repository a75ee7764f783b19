"""Prompt formats and batched per-token answer statistics for the TOFU and MUSE evaluators.

Prompt formats (``--prompt-format``):

* ``chat``: the tokenizer's chat template: ``[system?] + few-shot (user, assistant) pairs + user
  question``, rendered with ``add_generation_prompt=True`` for the prompt and with the assistant answer
  appended for the scored sequence (as the framework's ``preprocess_chat_instance``). Rendered text is
  tokenized without adding special tokens again (the template has them). System prompt: "You are a
  helpful assistant." (the framework's), or ``--system-prompt``; "" for none.
* ``qa``: ``"Question: {question}\\nAnswer:"`` + " " + answer, i.e. the framework's non-chat template
  ``Question: {q}\\nAnswer: {a}``. The prompt/answer token boundary is put before the space, so a BPE
  tokenizer scores the answer's first word as the token it would generate (``" word"``);
* ``raw``: ``question + " " + answer`` (what ``train`` on plain question/answer files learns);
* ``auto`` (default): ``chat`` when the tokenizer has a chat template, else ``qa``.

Scored sequences always end with EOS (appended unless the text already ends with it), as in the
framework. The answer's statistics cover every token after the prompt, EOS included (probability);
exact memorization, extraction strength and Min-K% drop the final EOS, as the framework does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm_unlearn.data.batching import pad_batch
from llm_unlearn.data.benchmarks import qa_prompt
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.passes.runtime import eval_mode, length_batches, model_device, progress_bar

__all__ = [
    "PROMPT_FORMATS",
    "DEFAULT_SYSTEM_PROMPT",
    "AnswerStats",
    "resolve_prompt_format",
    "QAEncoder",
    "answer_token_stats",
]

PROMPT_FORMATS = ("auto", "chat", "qa", "raw")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def resolve_prompt_format(tokenizer, prompt_format: str = "auto") -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise UserError(f"unknown prompt format {prompt_format!r} (one of {', '.join(PROMPT_FORMATS)})")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "auto":
        return "chat" if has_template else "qa"
    if prompt_format == "chat" and not has_template:
        raise UserError("--prompt-format chat: the tokenizer has no chat template (use qa or raw)")
    return prompt_format


@dataclass
class AnswerStats:
    """Per answer token (in order): log-probability of the answer token and whether it is the argmax."""

    logprobs: list[float]
    correct: list[bool]

    @property
    def nll(self) -> float | None:
        """Mean NLL over every answer token (EOS included); None if no token."""
        return -sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    @property
    def without_eos(self) -> AnswerStats:
        return AnswerStats(self.logprobs[:-1], self.correct[:-1])


class QAEncoder:
    """Token ids of prompts and of prompt + answer in one prompt format."""

    def __init__(
        self, tokenizer, prompt_format: str = "auto", system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    ):
        self.tokenizer = tokenizer
        self.format = resolve_prompt_format(tokenizer, prompt_format)
        self.system_prompt = system_prompt or None
        eos = tokenizer.eos_token_id
        if eos is None:
            raise UserError("the tokenizer has no EOS token; the benchmark scores answers ending in EOS")
        self.eos = int(eos)

    # -- text formats
    def _messages(self, question: str, few_shot: Sequence[tuple[str, str]]) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for q, a in few_shot:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": question}]

    def _plain_prompt(self, question: str, few_shot: Sequence[tuple[str, str]]) -> str:
        if self.format == "raw":
            shots = "".join(f"{q} {a}\n\n" for q, a in few_shot)
            return shots + question
        shots = "".join(f"{qa_prompt(q)} {a}\n\n" for q, a in few_shot)
        return shots + qa_prompt(question)

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special).input_ids)

    # -- token ids
    def pair(
        self, question: str, answer: str, few_shot: Sequence[tuple[str, str]] = ()
    ) -> tuple[list[int], int]:
        """``(ids, n_prompt)``: ids of prompt + answer (+ EOS); the answer is ``ids[n_prompt:]``."""
        if self.format == "chat":
            msgs = self._messages(question, few_shot)
            prompt = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(
                msgs + [{"role": "assistant", "content": answer}], tokenize=False
            )
            ids, n_prompt = self._ids(full, False), len(self._ids(prompt, False))
        else:
            from llm_unlearn.data.tokenize import tokenize_example

            ex = tokenize_example(self.tokenizer, self._plain_prompt(question, few_shot), answer, joiner=" ")
            ids, n_prompt = list(ex["input_ids"]), int(ex["prompt_len"])
            while len(ids) > n_prompt and ids[-1] in self._end_specials():
                ids.pop()  # special tokens the tokenizer appends (EOS / SEP): EOS is added once below
        if not ids or ids[-1] != self.eos:
            ids.append(self.eos)
        return ids, max(n_prompt, 1)  # index 0 is never scored (nothing predicts it)

    def _end_specials(self) -> set[int]:
        return {int(i) for i in (getattr(self.tokenizer, "all_special_ids", None) or [])}

    def prompt(self, question: str, few_shot: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Ids a generation starts from (no trailing special tokens)."""
        if self.format == "chat":
            text = self.tokenizer.apply_chat_template(
                self._messages(question, few_shot), tokenize=False, add_generation_prompt=True
            )
            return self._ids(text, False)
        ids = self._ids(self._plain_prompt(question, few_shot), True)
        specials = self._end_specials()
        while len(ids) > 1 and ids[-1] in specials:
            ids.pop()
        return ids


@torch.no_grad()
def answer_token_stats(
    model,
    sequences: Sequence[tuple[Sequence[int], int]],
    *,
    pad_id: int,
    batch_size: int = 16,
    max_tokens_per_batch: int = 16384,
    progress: bool = True,
    desc: str = "answer tokens",
) -> list[AnswerStats]:
    """For each ``(ids, n_prompt)``: log p and argmax-correctness of ``ids[t]`` for ``t >= n_prompt``,
    teacher-forced, batched with right padding (causal attention: padding after a row's end does not
    change its logits). Log-softmax in float32, one row at a time."""
    device = model_device(model)
    out: list[AnswerStats | None] = [None] * len(sequences)
    bar = progress_bar(len(sequences), desc, progress)
    with eval_mode(model), bar:
        lengths = [len(s[0]) for s in sequences]
        for batch in length_batches(lengths, batch_size, max_tokens_per_batch):
            input_ids, mask = pad_batch(
                [list(sequences[i][0]) for i in batch], pad_id, side="right", device=device
            )
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            for r, i in enumerate(batch):
                ids, n_prompt = sequences[i]
                n = len(ids)
                if n_prompt >= n:
                    out[i] = AnswerStats([], [])
                    continue
                rows = logits[r, n_prompt - 1 : n - 1].float()
                targets = input_ids[r, n_prompt:n]
                logp = torch.log_softmax(rows, dim=-1)
                picked = logp.gather(-1, targets[:, None])[:, 0]
                out[i] = AnswerStats(
                    [float(x) for x in picked.double().cpu()],
                    [bool(x) for x in (rows.argmax(-1) == targets).cpu()],
                )
            bar.update(len(batch))
    return out  # type: ignore[return-value]
