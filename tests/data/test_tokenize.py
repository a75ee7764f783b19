"""Label masks, EOS handling, truncation and padding, with tokenizers trained on the fly."""

from __future__ import annotations

import warnings

import pytest
import torch

from llm_unlearn.data.records import Record
from llm_unlearn.data.tokenize import (
    UnlearnCollator,
    ensure_pad_token,
    tokenize_example,
    tokenize_records,
)
from llm_unlearn.errors import ConfigError, UserError

PROMPT = "Who wrote the story?"
ANSWER = "Alice wrote it in Paris."
SPECIALS = ["none", "bos", "eos", "both"]


def _plain_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _answer_ids(tok, prompt, answer, joiner=" "):
    """The answer's tokens as they appear inside the full text (no special tokens anywhere)."""
    full = _plain_ids(tok, prompt + joiner + answer)
    n = len(_plain_ids(tok, prompt))
    assert full[:n] == _plain_ids(tok, prompt)  # the test texts split cleanly at the prompt boundary
    return full[n:]


@pytest.mark.parametrize("model", ["bpe", "wordlevel"])
@pytest.mark.parametrize("specials", SPECIALS)
def test_mask_starts_at_first_answer_token(tiny_tokenizer_factory, specials, model):
    tok = tiny_tokenizer_factory(specials, model=model)
    ex = tokenize_example(tok, PROMPT, ANSWER)
    n_bos = specials in ("bos", "both")
    has_eos = specials in ("eos", "both")
    prompt_plain = _plain_ids(tok, PROMPT)
    answer_plain = _answer_ids(tok, PROMPT, ANSWER)

    assert ex["prompt_len"] == n_bos + len(prompt_plain)
    assert ex["input_ids"] == tok(PROMPT + " " + ANSWER)["input_ids"]
    assert len(ex["labels"]) == len(ex["input_ids"]) == len(ex["attention_mask"])
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    assert ex["labels"][: ex["prompt_len"]] == [-100] * ex["prompt_len"]
    labelled = ex["labels"][ex["prompt_len"] :]
    assert -100 not in labelled
    assert labelled == ex["input_ids"][ex["prompt_len"] :]  # not shifted
    expected = answer_plain + ([tok.eos_token_id] if has_eos else [])
    assert labelled == expected
    text = tok.decode(answer_plain, skip_special_tokens=True).strip()
    assert text.replace(" ", "") == ANSWER.replace(" ", "")  # word-level decoding spaces out punctuation
    if n_bos:
        assert ex["input_ids"][0] == tok.bos_token_id and ex["input_ids"].count(tok.bos_token_id) == 1
    assert ex["truncated"] is False


@pytest.mark.parametrize("specials", SPECIALS)
def test_decoded_labels_equal_answer(tiny_tokenizer_factory, specials):
    tok = tiny_tokenizer_factory(specials)
    ex = tokenize_example(tok, PROMPT, ANSWER)
    labelled = [t for t in ex["labels"] if t != -100]
    assert tok.decode(labelled, skip_special_tokens=True) == " " + ANSWER
    masked = ex["input_ids"][: ex["prompt_len"]]
    assert tok.decode(masked, skip_special_tokens=True) == PROMPT


@pytest.mark.parametrize("specials", ["bos", "eos", "both"])
def test_add_eos_adds_exactly_one_labelled_eos(tiny_tokenizer_factory, specials):
    tok = tiny_tokenizer_factory(specials)
    plain = tokenize_example(tok, PROMPT, ANSWER)
    ex = tokenize_example(tok, PROMPT, ANSWER, add_eos=True)
    eos = tok.eos_token_id
    assert ex["input_ids"][-1] == eos and ex["labels"][-1] == eos
    assert ex["input_ids"].count(eos) == 1
    if specials == "bos":  # appended by us
        assert ex["input_ids"] == plain["input_ids"] + [eos]
    else:  # the tokenizer already ends with EOS: nothing added
        assert ex["input_ids"] == plain["input_ids"]
    assert ex["prompt_len"] == plain["prompt_len"]


def test_add_eos_without_eos_token_is_an_error(tiny_tokenizer_factory):
    with pytest.raises(UserError, match="EOS"):
        tokenize_example(tiny_tokenizer_factory("none"), PROMPT, ANSWER, add_eos=True)


@pytest.mark.parametrize("specials", SPECIALS)
def test_empty_prompt_and_custom_joiner(tiny_tokenizer_factory, specials):
    tok = tiny_tokenizer_factory(specials)
    ex = tokenize_example(tok, "", ANSWER)  # text-only record: no joiner, whole text labelled
    n_bos = int(specials in ("bos", "both"))
    assert ex["prompt_len"] == n_bos
    assert ex["input_ids"] == tok(ANSWER)["input_ids"]
    ex = tokenize_example(tok, PROMPT, ANSWER, joiner="\n")
    assert ex["input_ids"] == tok(PROMPT + "\n" + ANSWER)["input_ids"]
    assert ex["prompt_len"] == n_bos + len(_plain_ids(tok, PROMPT))


def test_truncation(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory("bos")
    full = tokenize_example(tok, PROMPT, ANSWER)
    n = len(full["input_ids"])
    with pytest.warns(UserWarning, match="1 of 1"):
        ex = tokenize_example(tok, PROMPT, ANSWER, max_length=n - 2)
    assert ex["truncated"] and ex["input_ids"] == full["input_ids"][: n - 2]
    assert ex["labels"] == full["labels"][: n - 2] and ex["prompt_len"] == full["prompt_len"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not tokenize_example(tok, PROMPT, ANSWER, max_length=n)["truncated"]
    with pytest.raises(ConfigError):
        tokenize_example(tok, PROMPT, ANSWER, max_length=0)


def test_truncation_counts_in_tokenize_records(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory("bos")
    long_prompt = " ".join(["the cat sat on the mat"] * 5)
    records = [
        Record("a", "Who?", "Alice.", "Task1", "forget"),  # fits
        Record("b", PROMPT, ANSWER + " " + ANSWER, "Task1", "forget"),  # answer cut
        Record("c", long_prompt, "Bob.", "Task2", "retain"),  # prompt fills max_length: no answer left
        Record("d", long_prompt, "Rome.", "Task2", "retain"),
    ]
    with pytest.warns(UserWarning) as rec:
        out = tokenize_records(tok, records, max_length=12)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1
    assert "3 of 4" in msgs[0] and "in 2 of them" in msgs[0] and "max_length=12" in msgs[0]
    assert [o["truncated"] for o in out] == [False, True, True, True]
    assert all(len(o["input_ids"]) <= 12 for o in out)
    assert all(set(o["labels"]) == {-100} for o in out[2:])
    assert [o["id"] for o in out] == ["a", "b", "c", "d"]
    assert [o["is_forget"] for o in out] == [True, True, False, False]


def test_tokenize_records_matches_tokenize_example(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory("both")
    records = [
        Record("x1", PROMPT, ANSWER, None, "forget"),
        {"id": "y", "input": "", "output": "hello world", "split": "retain"},
    ]
    out = tokenize_records(tok, records, add_eos=True)
    for rec, got in zip(records, out):
        prompt = rec["input"] if isinstance(rec, dict) else rec.input
        answer = rec["output"] if isinstance(rec, dict) else rec.output
        ex = tokenize_example(tok, prompt, answer, add_eos=True)
        assert {k: got[k] for k in ex} == ex
    assert tokenize_records(tok, []) == []


def test_collator_padding_and_shapes(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory("bos", pad=True)
    records = [Record("a", "Who?", "Alice.", None, "forget"), Record("b", PROMPT, ANSWER, None, "retain")]
    feats = tokenize_records(tok, records)
    lens = [len(f["input_ids"]) for f in feats]
    batch = UnlearnCollator(tok.pad_token_id)(feats)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "is_forget"}
    L = max(lens)
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (2, L) and batch[key].dtype == torch.long
    assert batch["is_forget"].dtype == torch.bool and batch["is_forget"].tolist() == [True, False]
    for i, f in enumerate(feats):
        n = lens[i]
        assert batch["input_ids"][i, :n].tolist() == f["input_ids"]
        assert batch["labels"][i, :n].tolist() == f["labels"]
        assert batch["input_ids"][i, n:].eq(tok.pad_token_id).all()
        assert batch["labels"][i, n:].eq(-100).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (L - n)

    batch8 = UnlearnCollator(tok.pad_token_id, pad_to_multiple_of=8)(feats)
    assert batch8["input_ids"].shape[1] % 8 == 0 and batch8["input_ids"].shape[1] >= L
    assert batch8["attention_mask"].sum().item() == sum(lens)


def test_collator_errors():
    with pytest.raises(UserError, match="ensure_pad_token"):
        UnlearnCollator(None)
    with pytest.raises(ConfigError):
        UnlearnCollator(0, pad_to_multiple_of=0)
    with pytest.raises(ValueError):
        UnlearnCollator(0)([{"input_ids": [1, 2], "labels": [1]}])
    batch = UnlearnCollator(0)([{"input_ids": [5, 6, 7]}])  # labels / mask / is_forget default
    assert batch["labels"].tolist() == [[5, 6, 7]] and batch["is_forget"].tolist() == [False]


def test_ensure_pad_token(tiny_tokenizer_factory):
    tok = tiny_tokenizer_factory("eos")
    assert tok.pad_token_id is None
    assert ensure_pad_token(tok) is tok
    assert tok.pad_token_id == tok.eos_token_id
    padded = tiny_tokenizer_factory("eos", pad=True)
    pad_id = padded.pad_token_id
    assert ensure_pad_token(padded).pad_token_id == pad_id != padded.eos_token_id
    with pytest.raises(UserError, match="neither a pad token nor an EOS"):
        ensure_pad_token(tiny_tokenizer_factory("none"))
