"""Tiny models for the attacks' known-answer tests, built once per session: a memorized target
(forget + retain), a model that never saw the forget set, a refusal-trained ("suppressed") model."""

from __future__ import annotations

import copy

import pytest
from attack_models import EXTRA, FORGET, MEMORIZE, RETAIN, texts, tiny


@pytest.fixture(scope="session")
def attack_tok():
    from llm_unlearn.tiny import train_bpe_tokenizer

    corpus = texts(FORGET + RETAIN) + [p + x for _, p, _ in FORGET for x in EXTRA]
    return train_bpe_tokenizer(corpus * 3, vocab_size=400)


@pytest.fixture(scope="session")
def memorized(attack_tok):
    """The target: a tiny OLMo-2 that memorized forget and retain."""
    from llm_unlearn.finetune import memorize

    model = tiny(attack_tok)
    memorize(model, attack_tok, texts(FORGET + RETAIN), **MEMORIZE)
    return model.eval()


@pytest.fixture(scope="session")
def never_trained(attack_tok):
    """A tiny OLMo-2 trained on retain only (never saw the forget set)."""
    from llm_unlearn.finetune import memorize

    model = tiny(attack_tok, seed=1)
    memorize(model, attack_tok, texts(RETAIN), **{**MEMORIZE, "max_steps": 40})
    return model.eval()


@pytest.fixture(scope="session")
def refusal_model(attack_tok, memorized):
    """The target fine-tuned to answer the forget questions with a refusal, but still to continue
    after the injected prefix with the answer: the knowledge is only hidden behind the refusal."""
    from llm_unlearn.attacks.prompts import PREFIX
    from llm_unlearn.finetune import memorize

    model = copy.deepcopy(memorized)
    data = [p + EXTRA[0] for _, p, _ in FORGET] + [p + PREFIX + a for _, p, a in FORGET] + texts(RETAIN)
    memorize(model, attack_tok, data, **{**MEMORIZE, "max_steps": 40})
    return model.eval()
