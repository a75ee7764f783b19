"""greedy_generate(expected=...): a row whose expected answer (+ EOS) greedy decoding would reproduce
is answered from one teacher-forced pass instead of being decoded; every text stays the same."""

from __future__ import annotations

import pytest

from llm_unlearn.evaluation.passes import batched, verify
from llm_unlearn.evaluation.passes.inference import greedy_generate
from llm_unlearn.evaluation.passes.runtime import encode, eos_ids


def _records(world, n=12):
    return (world["ds"].forget + world["ds"].retain)[:n]


@pytest.mark.parametrize("max_new_tokens", [3, 48])
def test_same_texts_and_memorized_rows_not_decoded(tiny_world, monkeypatch, max_new_tokens):
    from llm_unlearn.evaluation.passes import inference

    model, tok = tiny_world["make_model"](), tiny_world["tokenizer"]
    recs = _records(tiny_world)
    prompts = [r["input"] for r in recs]
    plain = greedy_generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=4, progress=False)
    decoded: list[int] = []
    real = inference.BATCHED.generate

    def counted(model, tokenizer, encoded, **kw):
        decoded.append(len(encoded))
        return real(model, tokenizer, encoded, **kw)

    monkeypatch.setattr(
        inference,
        "BATCHED",
        inference.Passes("batched", counted, batched.answer_nll, batched.document_statistics),
    )

    def run(expected):
        return greedy_generate(
            model,
            tok,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=4,
            progress=False,
            expected=expected,
        )

    right = run([r["output"] for r in recs])
    assert right == plain
    skipped = len(recs) - sum(decoded)
    # the memorized model reproduces most answers: those rows were not decoded
    assert skipped >= len(recs) // 2
    decoded.clear()
    wrong = run(["zz " + r["output"][::-1] for r in recs])
    assert wrong == plain
    assert sum(decoded) == len(recs)  # nothing verified: every row decoded


def test_verify_accepts_exactly_the_greedy_tokens(tiny_world):
    model, tok = tiny_world["make_model"](), tiny_world["tokenizer"]
    recs = _records(tiny_world, 6)
    prompts = [encode(tok, r["input"]) for r in recs]
    eos = eos_ids(model, tok)
    greedy = batched._greedy_batch(model, prompts, 10, eos, tok.pad_token_id, model.device)
    cands = [batched._until_eos(g, eos) for g in greedy]
    ok = verify.verify_continuations(model, tok, prompts, cands, batch_size=4, max_tokens_per_batch=None)
    assert ok == cands  # the whole candidate: decoding emits exactly it
    changed = []
    for c in cands:
        c = list(c)
        c[len(c) // 2] = (c[len(c) // 2] + 1) % len(tok)
        changed.append(c)
    bad = verify.verify_continuations(model, tok, prompts, changed, batch_size=4, max_tokens_per_batch=None)
    # up to the changed token, then decoding's own token there
    assert bad == [c[: len(c) // 2 + 1] for c in cands]
    assert verify.verify_continuations(
        model, tok, [[], prompts[0]], [cands[0], []], batch_size=4, max_tokens_per_batch=None
    ) == [[], []]


def test_official_compat_decodes_every_row(tiny_world, monkeypatch):
    model, tok = tiny_world["make_model"](), tiny_world["tokenizer"]
    recs = _records(tiny_world, 4)
    calls = []
    monkeypatch.setattr(verify, "verify_continuations", lambda *a, **k: calls.append(1) or list(a[3]))
    out = greedy_generate(
        model,
        tok,
        [r["input"] for r in recs],
        max_new_tokens=8,
        official_compat=True,
        progress=False,
        expected=[r["output"] for r in recs],
    )
    assert calls == [] and len(out) == 4
