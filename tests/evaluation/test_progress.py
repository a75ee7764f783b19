"""Progress a person can see (issue 19): the decoding loop reports which token of a batch it is on."""

from __future__ import annotations

import torch

from llm_unlearn.evaluation.passes.batched import _greedy_batch, token_ticker


class _Bar:
    disable = False

    def __init__(self):
        self.posts = []

    def set_postfix_str(self, text, refresh=True):
        self.posts.append(text)


def test_the_ticker_reports_the_token_and_the_live_rows():
    bar = _Bar()
    tick = token_ticker(bar, 8, 3, every_s=0.0)
    tick(0, 3)
    tick(4, 2)
    assert bar.posts == ["batch of 3: token 1/8, 3 decoding", "batch of 3: token 5/8, 2 decoding"]
    assert token_ticker(None, 8, 3) is None
    off = _Bar()
    off.disable = True
    assert token_ticker(off, 8, 3) is None


def test_the_decoding_loop_calls_it_once_per_token(tiny_world):
    model = tiny_world["make_model"]()
    tok = tiny_world["tokenizer"]
    seqs = [tok("Alice was born in")["input_ids"], tok("The story")["input_ids"]]
    steps = []
    with torch.no_grad():
        out = _greedy_batch(
            model, seqs, 5, set(), tok.pad_token_id or 0, "cpu", on_step=lambda s, n: steps.append(s)
        )
    assert out is not None and steps == [0, 1, 2, 3, 4]
