"""calibration.anchor_documents (train/anchor.py): the one-sided term that holds unseen documents at the
reference's loss, its documents per step, its inputs, and what it does in a run."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _run as _calibrated_run

from llm_unlearn.errors import DataError
from llm_unlearn.train.anchor import Anchor, anchor_term, read_anchor_records


def test_anchor_term_is_the_mean_huber_distance_to_the_reference():
    nll = torch.tensor([3.0, 5.0, 7.5, 1.5], requires_grad=True)
    ref = torch.tensor([4.0, 5.0, 6.0, 1.0])
    value = anchor_term(nll, ref)
    # differences -1, 0, 1.5, 0.5: huber (1-nat knee) 1/2, 0, 1.5 - 1/2, 0.5^2 / 2; mean over the 4 rows
    assert float(value.detach()) == pytest.approx((0.5 + 0.0 + 1.0 + 0.125) / 4)
    value.backward()
    # d/dx: x inside the knee, sign(x) beyond, over k = 4: a fall is pushed up, a rise drawn down
    assert nll.grad.tolist() == pytest.approx([-0.25, 0.0, 0.25, 0.125])


def test_anchor_term_is_zero_with_no_gradient_at_the_reference():
    nll = torch.tensor([1.0, 2.5], requires_grad=True)
    value = anchor_term(nll, torch.tensor([1.0, 2.5]))
    assert float(value.detach()) == 0.0
    value.backward()
    assert nll.grad.tolist() == [0.0, 0.0]


def test_the_documents_of_a_step_depend_only_on_seed_chunk_and_step():
    rows = [{"input_ids": [1, 2]}] * 10
    a = Anchor(rows, None, per_step=3, weight=1.0, seed=5)
    b = Anchor(rows, None, per_step=3, weight=1.0, seed=5)
    assert a.indices(1, 7) == b.indices(1, 7)  # another process, a resumed run
    assert len(a.indices(0, 0)) == 3 == len(set(a.indices(0, 0)))
    assert a.indices(0, 0) == sorted(a.indices(0, 0))
    drawn = {tuple(a.indices(c, s)) for c in range(3) for s in range(20)}
    assert len(drawn) > 20  # the steps see different documents
    assert {i for t in drawn for i in t} == set(range(10))  # every document is used
    small = Anchor(rows[:2], None, per_step=5, weight=1.0, seed=0)
    assert small.indices(0, 0) == [0, 1]  # at most every document
    with pytest.raises(ValueError, match="no anchor documents"):
        Anchor([], None, per_step=1, weight=1.0, seed=0)


def test_anchor_documents_that_are_holdout_or_forget_documents_are_refused(tmp_path):
    f = tmp_path / "anchor.jsonl"
    f.write_text(json.dumps({"id": "a1", "document": "Someone else's life."}) + "\n")
    rows = read_anchor_records(f, exclude=[{"id": "h1", "document": "A held-out life."}])
    assert [(r.id, r.input, r.output, r.split) for r in rows] == [
        ("a1", "", "Someone else's life.", "anchor")
    ]
    with pytest.raises(DataError, match="anchor document 'a1' is also in the holdout"):
        read_anchor_records(f, exclude=[{"id": "h1", "document": " Someone else's life. "}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "x", "input": "q", "output": "a"}) + "\n")
    with pytest.raises(DataError, match="no documents"):
        read_anchor_records(empty)


def _documents(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return str(path)


def _run(tiny_world, out, **extra):
    """An uncalibrated run that unlearns the member documents too (test_calibrated_run's run)."""
    return _calibrated_run(
        tiny_world,
        out,
        **{
            "train.plots": False,
            "schedule.chunk_size": 6,
            "schedule.retain_per_forget": 1,
            "schedule.epochs": 4,
            "calibration.mode": "off",
            "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
            **extra,
        },
    )


def _rise(model, anchor_rows, tokenizer, ref):
    """Mean rise of the documents' loss above their reference losses, for a trained model."""
    from llm_unlearn.data.tokenize import UnlearnCollator

    a = Anchor(anchor_rows, UnlearnCollator(tokenizer.pad_token_id), per_step=1, weight=1.0, seed=0)
    return float((a.document_nll(model, None, reference=False) - ref).mean())


def test_the_anchor_holds_unseen_documents_where_the_reference_has_them(
    one_torch_thread, tiny_world, tmp_path
):
    """NPO on the member documents (the retain answers kept) raises the loss of the unseen ones too; with
    the anchor on them the rise is taken back (and the term is logged at every step)."""
    from llm_unlearn.data.tokenize import UnlearnCollator, tokenize_records

    docs = tiny_world["ds"].nonmember_docs
    anchor_file = _documents(tmp_path / "anchor.jsonl", docs)
    tok = tiny_world["tokenizer"]
    rows = tokenize_records(tok, read_anchor_records(anchor_file), add_eos=True)
    start = Anchor(rows, UnlearnCollator(tok.pad_token_id), per_step=1, weight=1.0, seed=0)
    start.measure_reference(tiny_world["make_model"](), None)
    plain = _run(tiny_world, tmp_path / "plain")
    held = _run(
        tiny_world,
        tmp_path / "held",
        **{
            "calibration.anchor_documents": anchor_file,
            "calibration.anchor": 5.0,
            "calibration.anchor_per_step": 3,
        },
    )
    rise_plain = _rise(plain["model"], rows, tok, start.ref_nll)
    rise_held = _rise(held["model"], rows, tok, start.ref_nll)
    assert rise_plain > 0.3, (
        f"premise: the unseen documents' loss rises without the anchor ({rise_plain:.3f})"
    )
    assert rise_held < 0.4 * rise_plain
    logs = [json.loads(x) for x in (tmp_path / "held" / "log_history.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert steps and all(r["anchor"] >= 0.0 for r in steps)
    assert not any(
        "anchor" in r
        for r in (json.loads(x) for x in (tmp_path / "plain" / "log_history.jsonl").read_text().splitlines())
    )
