"""calibration.pull: a forget document row pushed past its pull-back loss gets a descent term."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _holdout_file, _lora, _rows, _run

from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.data.tokenize import UnlearnCollator
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.monitor import TrainingMonitor


def test_pull_quantile_is_the_target_plus_the_band_capped_at_one():
    assert cal.pull_quantile(0.25, 0.1) == pytest.approx(0.35)
    assert cal.pull_quantile(0.95, 0.1) == 1.0
    assert cal.pull_quantile(0.5, 0.0) == 0.5
    with pytest.raises(ValueError):
        cal.pull_quantile(0.5, -0.1)


def _row_nll(pm, batch, n):
    """Each row's mean answer NLL, in float64, from the logits directly (not the code under test)."""
    with torch.no_grad():
        out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    lab = batch["labels"][:, 1:]
    lp = out[:, :-1].log_softmax(-1).gather(-1, lab.clamp_min(0)[..., None])[..., 0]
    return [float(-(lp[i][lab[i] != -100]).mean()) for i in range(n)]


def test_the_pull_term_is_the_mean_nll_of_the_rows_above_their_pull_cap(one_torch_thread, tiny_world):
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    batch = UnlearnCollator(tok.pad_token_id)(_rows(tiny_world, ds.forget[:3], ds.retain[:2]))
    nll = _row_nll(pm, batch, 3)
    inf = float("inf")
    # rows 0 and 2 are above their pull-back loss, row 1 below it, the retain rows have none
    batch["forget_pull_cap"] = torch.tensor([nll[0] - 1.0, nll[1] + 1.0, nll[2] - 1e-3, inf, inf])
    plain = {k: v for k, v in batch.items() if k != "forget_pull_cap"}
    w = 0.7
    loss, terms = unlearning_loss(pm, batch, ObjectiveOptions(), sel, pull_weight=w)
    loss0, terms0 = unlearning_loss(pm, plain, ObjectiveOptions(), sel, pull_weight=w)
    expected = (nll[0] + nll[2]) / 2
    # float32 forward against float64: a few ulps of a loss of order 1
    assert terms["forget_pull"] == pytest.approx(expected, rel=1e-5)
    assert float((loss - loss0).detach()) == pytest.approx(w * expected, rel=1e-4)
    assert "forget_pull" not in terms0
    # weight 0: no term even with the caps present
    _, terms_off = unlearning_loss(pm, batch, ObjectiveOptions(), sel, pull_weight=0.0)
    assert "forget_pull" not in terms_off


def test_a_step_on_the_pull_term_draws_the_row_back(one_torch_thread, tiny_world):
    """The pull is descent: one small gradient step on it alone lowers the pulled row's NLL (where the
    forget term raises it)."""
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    batch = UnlearnCollator(tok.pad_token_id)(_rows(tiny_world, ds.forget[:1], []))
    before = _row_nll(pm, batch, 1)[0]
    batch["forget_pull_cap"] = torch.tensor([before - 1.0])
    batch["forget_active"] = torch.tensor([False])  # the forget term off: only the pull is left
    loss, terms = unlearning_loss(pm, batch, ObjectiveOptions(), sel, pull_weight=1.0)
    assert set(terms) >= {"forget_pull"} and "npo" not in terms
    loss.backward()
    with torch.no_grad():
        for p in pm.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    assert _row_nll(pm, batch, 1)[0] < before


def test_monitor_pull_caps_are_holdout_quantiles_above_each_units_target():
    class R:
        def __init__(self, id_, task="Task1"):
            self.id, self.task, self.input, self.output = id_, task, "q", "a"

    # rows 0, 1: records of documents d0, d1; rows 2, 3: those documents' own rows
    forget = [R("d0sc1"), R("d1qa1"), R("d0"), R("d1")]
    docs = [{"id": "d0", "document": "x"}, {"id": "d1", "document": "y"}]
    m = TrainingMonitor(
        None,
        forget,
        [],
        holdout=None,
        forget_documents=docs,
        items=1,
        spread=True,
        document_rows={2, 3},
        pull_band=0.2,
    )
    hold = [1.0, 2.0, 3.0, 4.0, 5.0]
    active, caps = m._gate([2.0, 4.0], hold, None, None, {})
    # d0 ranks first of two (target 0.25), d1 second (0.75): pull at the 0.45 and the 0.95 quantiles
    assert m.unit_q[("document", 0)] == pytest.approx(0.25) and m.unit_q[("document", 1)] == pytest.approx(
        0.75
    )
    assert set(m.pull_caps) == {2, 3}  # document rows only: a record is never pulled
    assert m.pull_caps[2] == pytest.approx(cal.quantile(hold, 0.45))
    assert m.pull_caps[3] == pytest.approx(cal.quantile(hold, 0.95))
    assert caps[2] == pytest.approx(cal.quantile(hold, 0.25))
    assert caps[2] < m.pull_caps[2]
    # without a band no pull caps are computed
    m2 = TrainingMonitor(None, forget, [], holdout=None, forget_documents=docs, items=1, document_rows={2, 3})
    m2._gate([2.0, 4.0], hold, None, None, {})
    assert m2.pull_caps is None


def test_a_calibrated_run_with_pull_logs_the_term_and_keeps_its_caps(one_torch_thread, tiny_world, tmp_path):
    docs = str(tiny_world["data_dir"] / "mia" / "member.jsonl")
    out = tmp_path / "pull"
    summary = _run(
        tiny_world,
        out,
        **{
            "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
            "calibration.forget_documents": docs,
            "calibration.eval_every": 4,
            "calibration.eval_items": 4,
            "calibration.eval_max_new_tokens": 4,
            "calibration.pull": 1.0,
            "calibration.pull_band": 0.0,  # every document row past its target is pulled at once
            "schedule.chunk_size": 15,
        },
    )
    assert summary["calibration"]["evaluations"]
    logged = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
    pulled = [r["forget_pull"] for r in logged if "forget_pull" in r]
    assert pulled and all(v > 0 for v in pulled)  # some document went past its target and was pulled
