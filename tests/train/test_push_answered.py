"""calibration.push_answered: a sampled forget record whose greedy answer still matched at the last
evaluation stays pushed, whatever its document's gate says."""

from __future__ import annotations

import pytest

from llm_unlearn.data.records import record_kind
from llm_unlearn.train.monitor import TrainingMonitor
from llm_unlearn.train.trainer import UnlearnTrainer


def _bare_trainer():
    t = object.__new__(UnlearnTrainer)  # only the gate's state: no model, no Trainer machinery
    t.forget_active, t.forget_caps, t.unit_row, t.last_row_nll, t.answered = {}, {}, {}, {}, set()
    return t


def test_an_answered_record_is_pushed_although_its_document_is_past_its_target():
    t = _bare_trainer()
    t.forget_active = {3: False, 4: False, 7: True}
    t.forget_caps = {7: 1.0}  # row 7: the document of records 3 and 4, its own cap
    t.unit_row = {3: 7, 4: 7}
    t.last_row_nll = {7: 2.0}  # the document is past its cap: its records follow it off
    assert t._active(3) is False and t._active(4) is False
    t.answered = {3}
    assert t._active(3) is True and t._active(4) is False
    t.last_row_nll = {7: 0.5}  # back below: both are pushed again
    assert t._active(4) is True


def test_the_monitor_lists_the_sampled_records_it_still_answers(one_torch_thread, tiny_world):
    forget = _records(tiny_world)
    m = TrainingMonitor(
        tiny_world["tokenizer"],
        forget,
        [],
        holdout=None,
        forget_documents=None,
        items=8,
        max_new_tokens=16,
        push_answered=True,
    )
    model = tiny_world["make_model"]().eval()
    got = m.measure(model)
    qa = [i for i in m.forget_sample if record_kind(forget[i].id) == "qa"]
    assert qa, "the sample holds question-answer records"
    # the memorized target answers every sampled question exactly; an sc record is never listed
    assert got["row"]["forget_em"] == pytest.approx(1.0)
    assert got["answered"] == sorted(qa)
    ev = m.evaluate(model, step=0, chunk=1, measured=got)
    assert m.answered == set(qa) and "_answered" not in ev


def _records(world):
    from llm_unlearn.data.records import load_unlearning_data

    return load_unlearning_data(world["data_dir"]).forget
