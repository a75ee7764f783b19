"""MMLU prompts as Open-Instruct's MMLU evaluation builds them, and the answer-letter token ids.

Prompt (k-shot, k = ``ntrain`` dev examples)::

    The following are multiple choice questions (with answers) about  <subject words>.\\n\\n
    <dev question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: <letter>\\n\\n      (k times)
    <test question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

(the subject is joined as ``" " + word`` per word, hence the double space after "about", exactly as
Open-Instruct's ``format_subject``). k shrinks one by one while the prompt is longer than 2048 tokens
(counted without special tokens). The candidates are the LAST token id of
``tokenizer.encode(" A" | " B" | " C" | " D", add_special_tokens=False)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from llm_unlearn.errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "CHOICES",
    "MAX_PROMPT_TOKENS",
    "MMLUQuestion",
    "format_subject",
    "format_example",
    "gen_prompt",
    "build_prompt",
    "answer_token_ids",
]

CHOICES = ("A", "B", "C", "D")
MAX_PROMPT_TOKENS = 2048


@dataclass(frozen=True)
class MMLUQuestion:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


def format_subject(subject: str) -> str:
    """``"abstract_algebra"`` -> ``" abstract algebra"`` (a space before every word, as Open-Instruct)."""
    return "".join(" " + word for word in subject.split("_"))


def format_example(q: MMLUQuestion, include_answer: bool = True) -> str:
    prompt = q.question
    for letter, choice in zip(CHOICES, q.choices):
        prompt += f"\n{letter}. {choice}"
    prompt += "\nAnswer:"
    if include_answer:
        prompt += f" {q.answer}\n\n"
    return prompt


def gen_prompt(dev: Sequence[MMLUQuestion], subject: str, k: int) -> str:
    """The header and the first ``k`` dev examples with their answers."""
    prompt = (
        f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    )
    for q in dev[:k]:
        prompt += format_example(q)
    return prompt


def build_prompt(
    tokenizer,
    dev: Sequence[MMLUQuestion],
    question: MMLUQuestion,
    ntrain: int = 5,
    max_tokens: int = MAX_PROMPT_TOKENS,
) -> tuple[str, int]:
    """``(prompt, k)``: the k-shot prompt for ``question`` with k = ``ntrain`` (at most the dev examples
    available), reduced one by one while it has more than ``max_tokens`` tokens (without special tokens)."""
    k = max(0, min(ntrain, len(dev)))
    end = format_example(question, include_answer=False)
    while True:
        prompt = gen_prompt(dev, question.subject, k) + end
        if k == 0 or len(tokenizer(prompt, add_special_tokens=False).input_ids) <= max_tokens:
            return prompt, k
        k -= 1


def answer_token_ids(tokenizer) -> list[int]:
    """The candidate ids: the last token of ``encode(" " + letter)`` for A, B, C, D."""
    ids = []
    for letter in CHOICES:
        enc = tokenizer.encode(" " + letter, add_special_tokens=False)
        if not enc:
            raise UserError(f"the tokenizer encodes {' ' + letter!r} to no tokens")
        if len(enc) > 1:
            log.warning("%r is %d tokens for this tokenizer; its last token is used", " " + letter, len(enc))
        ids.append(int(enc[-1]))
    if len(set(ids)) < len(ids):
        raise UserError(f"the answer letters do not map to distinct tokens ({ids}); MMLU cannot be scored")
    return ids
