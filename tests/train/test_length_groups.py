"""One forward per length group (train/head.answer_logits, split_lengths): the same answer logits and
the same gradients as one padded forward, fewer padded tokens, and no split where it cannot be exact."""

from __future__ import annotations

import torch

from conftest import collate_rows, make_lora_model
from llm_unlearn.data.tokenize import tokenize_records
from llm_unlearn.train.head import AnswerHeadSelector, answer_logits, length_groups
from llm_unlearn.train.step import answer_positions


def _mixed_batch(world):
    """Short qa records next to long documents: a batch a single padded forward pays dearly for."""
    tok, ds = world["tokenizer"], world["ds"]
    docs = [
        {"id": f"doc{i}", "input": "", "output": d, "split": "forget"}
        for i, d in enumerate(list(ds.documents)[:2])
    ]
    qa = [r for r in ds.forget + ds.retain if r["id"][:-1].endswith("qa")][:4]
    docs = [{**qa[0], **d} for d in docs]
    rows = tokenize_records(tok, qa[:2] + docs + qa[2:], add_eos=True)
    for key, row in enumerate(rows):
        row["row_key"], row["is_forget"] = key, key < 3
    return collate_rows(world, rows)


def _forwards(model):
    calls = []
    handle = model.get_base_model().model.register_forward_hook(lambda m, a, o: calls.append(1))
    return calls, handle


def test_split_gives_the_padded_forwards_logits_and_gradients(tiny_world):
    torch.manual_seed(0)
    model = make_lora_model(tiny_world, dtype=torch.float64)
    batch = _mixed_batch(tiny_world)
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) > 3 * int(lengths.min())  # the batch does mix lengths
    groups = length_groups(batch["attention_mask"])
    assert groups is not None and len(groups) >= 2
    B, T = batch["input_ids"].shape
    assert sum(len(g) * n for g, n in groups) <= 0.75 * B * T
    pos = answer_positions(batch["labels"])
    selector = AnswerHeadSelector(model)
    out = {}
    for split in (False, True):
        model.zero_grad()
        calls, handle = _forwards(model)
        logits = answer_logits(model, selector, batch["input_ids"], batch["attention_mask"], pos, split)
        handle.remove()
        logp = torch.log_softmax(logits, -1).gather(1, pos.targets[:, None]).squeeze(1)
        (-logp * torch.linspace(0.5, 1.5, logp.numel(), dtype=logp.dtype)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[split] = (logits.detach(), grads, len(calls))
    selector.remove()
    (l0, g0, n0), (l1, g1, n1) = out[False], out[True]
    assert n0 == 1 and n1 == len(groups)
    # float64: the same values up to the rounding of other matrix shapes (~1e-16 relative, summed over T)
    assert torch.allclose(l0, l1, rtol=1e-10, atol=1e-10)
    assert g0.keys() == g1.keys() and g0
    for k in g0:
        assert torch.allclose(g0[k], g1[k], rtol=1e-9, atol=1e-12), k


def test_no_split_where_it_is_not_exact_or_saves_nothing(tiny_world):
    batch = _mixed_batch(tiny_world)
    mask = batch["attention_mask"]
    assert length_groups(mask.flip(1)) is None  # left padding: real tokens would see the padding
    assert length_groups(torch.ones(4, 9, dtype=torch.long)) is None  # one length: nothing to save
    assert length_groups(mask[:1]) is None  # one row
