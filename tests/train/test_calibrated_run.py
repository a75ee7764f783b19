"""Calibrated unlearning: the gate inside the loss, the holdout reader, and a calibrated run end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llm_unlearn.config import ObjectiveOptions, build_config
from llm_unlearn.data.holdout import base_id, read_holdout
from llm_unlearn.data.tokenize import UnlearnCollator, tokenize_records
from llm_unlearn.errors import ConfigError, DataError
from llm_unlearn.modeling import apply_lora
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loop import run_unlearning
from llm_unlearn.train.loss import unlearning_loss


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _lora(world):
    torch.manual_seed(0)
    pm = apply_lora(world["make_model"](), r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return pm


def _rows(world, forget, retain):
    tok = world["tokenizer"]
    return tokenize_records(tok, forget + retain, add_eos=True)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_gate_equals_the_loss_of_the_active_rows_only(tiny_world, level):
    """A batch with forget rows f0 (active), f1 (gated off), f2 (active) and two retain rows must give
    the NPO of the batch made of f0, f2 and the retain rows, and the same retain terms."""
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    obj = ObjectiveOptions(npo_level=level)
    collate = UnlearnCollator(tok.pad_token_id)
    full = collate(_rows(tiny_world, ds.forget[:3], ds.retain[:2]))
    full["forget_active"] = torch.tensor([True, False, True, False, False])
    sub = collate(_rows(tiny_world, [ds.forget[0], ds.forget[2]], ds.retain[:2]))
    _, t_full = unlearning_loss(pm, full, obj, sel)
    _, t_sub = unlearning_loss(pm, sub, obj, sel)
    # float32 forward of the same rows, only padded to other lengths: rounding of a few ulps
    for k in ("npo", "retain_nll", "divergence"):
        assert t_full[k] == pytest.approx(t_sub[k], rel=1e-5, abs=1e-6), k
    assert t_full["forget_active"] == pytest.approx(2 / 3)


def test_gate_all_off_leaves_no_forget_term_and_no_gradient_from_it(tiny_world):
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    batch = UnlearnCollator(tok.pad_token_id)(_rows(tiny_world, ds.forget[:2], []))
    batch["forget_active"] = torch.tensor([False, False])
    loss, terms = unlearning_loss(pm, batch, ObjectiveOptions(), sel)
    assert "npo" not in terms and float(loss) == 0.0
    loss.backward()
    grads = [p.grad for p in pm.parameters() if p.requires_grad and p.grad is not None]
    assert all(float(g.abs().max()) == 0.0 for g in grads)
    # gradient ascent and SUGD honour the gate too
    for method in ("gradient_ascent", "sugd"):
        loss, terms = unlearning_loss(pm, batch, ObjectiveOptions(method=method), sel)
        assert float(loss) == 0.0, method


def test_holdout_reader_reads_documents_records_and_semeval_tasks(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "d1",
                    "document": "A doc.",
                    "question_answering_task": {"Question": "Q?", "Answer": "A"},
                    "sentence_completion_task": {"input": "In", "output": "out"},
                },
                {"id": "r1", "question": "Who?", "answer": "Me"},
                {"text": "plain text"},
            ]
        )
        + "\n"
    )
    h = read_holdout(p)
    assert [d["document"] for d in h.documents] == ["A doc.", "plain text"]
    assert [(r["id"], r["input"], r["output"]) for r in h.records] == [
        ("d1qa0", "Q?", "A"),
        ("d1sc0", "In", "out"),
        ("r1", "Who?", "Me"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question_answering_task": {"Question": 3}}\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 1, field 'question_answering_task'"):
        read_holdout(bad)
    (tmp_path / "empty.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(DataError, match="no documents"):
        read_holdout(tmp_path / "empty.jsonl")


def test_base_id_strips_the_item_suffix_and_quotes():
    assert base_id("12762334sc1") == "12762334"
    assert base_id('"2ebb"qa0') == "2ebb"
    assert base_id("abc") == "abc"


@pytest.mark.parametrize(
    "key,value",
    [
        ("calibration.mode", "bogus"),
        ("calibration.eval_every", "0"),
        ("calibration.eval_every", "sometimes"),
        ("calibration.tolerance", 0.7),
        ("calibration.gate_quantile", -0.1),
        ("calibration.eval_items", 0),
        ("calibration.select", "first"),
    ],
)
def test_bad_calibration_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        build_config(overrides={key: value})


def test_presets_reproducing_upstream_are_uncalibrated():
    for name in ("clausen2025", "atyaephyra", "ails-ntua"):
        c = build_config(preset=name).calibration
        assert (c.mode, c.eval_every, c.select, c.unlearn_documents) == ("off", "off", "last", False), name
    c = build_config().calibration
    assert (c.mode, c.eval_every, c.select, c.tolerance) == ("gate", "auto", "best", 0.05)


def _holdout_file(tiny_world, tmp_path):
    """The tiny world's non-member documents: never trained on (its tokenizer has seen them, as it has
    seen the rest)."""
    path = tmp_path / "holdout.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in tiny_world["ds"].nonmember_docs))
    return path


def _against_holdout(tiny_world, tmp_path) -> dict:
    """The calibration's files: the tiny world's holdout and its member documents as the forget side."""
    return {
        "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
        "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
    }


def _stop_mode(tiny_world, tmp_path, **extra) -> dict:
    """A calibrated run without the gate (mode stop) against the tiny world's holdout and member documents."""
    return {
        "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
        "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
        "calibration.mode": "stop",
        "calibration.eval_items": 8,
        **extra,
    }


def _run(tiny_world, out, **extra):
    overrides = {
        "model.name_or_path": str(tiny_world["model_dir"]),
        "data.data": str(tiny_world["data_dir"]),
        "data.add_eos": True,
        "train.output_dir": str(out),
        "train.progress": False,
        "train.merge": False,
        "train.learning_rate": 5e-3,
        "schedule.chunk_size": 3,
        "schedule.retain_per_forget": 2,
        "schedule.epochs": 8,
        "lora.alpha": 32,
        "train.batch_size": 4,
        # the tiny world's answers are a few tokens: longer greedy answers only cost time
        "calibration.eval_max_new_tokens": 16,
    }
    overrides.update(extra)
    cfg = build_config(overrides=overrides)
    return run_unlearning(cfg, model=tiny_world["make_model"](), tokenizer=tiny_world["tokenizer"])


def test_calibrated_run_moves_the_auc_toward_one_half_and_records_its_choice(tiny_world, tmp_path):
    out = tmp_path / "cal"
    summary = _run(
        tiny_world,
        out,
        **{
            "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
            "schedule.chunk_size": 15,
            "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
            "calibration.eval_every": 4,
            "calibration.eval_items": 12,
        },
    )
    cal = summary["calibration"]
    evs = cal["evaluations"]
    assert evs[0]["step"] == 0 and evs[0]["mia_on"] == "documents"
    # the memorized model: its forget documents are clearly members
    assert evs[0]["mia_auc"] >= 0.9
    chosen = evs[cal["selected_index"]]
    assert abs(chosen["mia_auc"] - 0.5) < abs(evs[0]["mia_auc"] - 0.5)
    assert chosen["proxy"] == max(e["proxy"] for e in evs if e["proxy"] is not None)
    assert cal["selection_reason"].startswith("highest proxy")
    # NPO's beta from the gap measured at the start (calibration.npo_beta_from_gap, on in a gated run)
    gap = evs[0]["loss_gap"]
    assert gap > 0 and cal["npo_beta"] == {
        "gap": gap,
        "configured": 0.5,
        "npo_beta": min(0.5, math.log(3) / gap),
    }
    assert summary["config"]["objective"]["npo_beta"] == cal["npo_beta"]["npo_beta"]
    # the written run says what it kept and why; every evaluation is in the log and the plot
    run = json.loads((out / "run.json").read_text())
    assert run["calibration"]["selected"] == cal["selected"]
    logged = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
    assert sum("eval_mia_auc" in r for r in logged) == len(evs)
    assert (out / "plots" / "evaluation.png").stat().st_size > 1000
    # the kept adapter is the selected state: re-evaluating it gives the selected evaluation's AUC
    from llm_unlearn.data.holdout import read_forget_documents
    from llm_unlearn.evaluation.metrics.mia import loss_auc
    from llm_unlearn.evaluation.passes.inference import document_statistics

    m = summary["model"].eval()
    tok = tiny_world["tokenizer"]
    mem = read_forget_documents(tiny_world["data_dir"] / "mia" / "member.jsonl")
    hold = read_holdout(tmp_path / "holdout.jsonl").documents
    nll = [s["nll"] for s in document_statistics(m, tok, [d["document"] for d in mem], progress=False)]
    hnll = [s["nll"] for s in document_statistics(m, tok, [d["document"] for d in hold], progress=False)]
    assert loss_auc(nll, hnll) == pytest.approx(chosen["mia_auc"], abs=1e-9)


def test_without_a_holdout_the_default_run_is_uncalibrated_and_says_so(tiny_world, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        summary = _run(tiny_world, tmp_path / "plain", **{"schedule.epochs": 1})
    assert summary["calibration"] is None
    assert any("no holdout" in r.getMessage() for r in caplog.records)


def test_document_records_follow_the_forget_units():
    from llm_unlearn.data.holdout import document_records
    from llm_unlearn.data.records import Record

    recs = [Record("12sc1", "a", "b", "Task3", "forget"), Record('"7"qa0', "q", "a", "Task3", "forget")]
    docs = [
        {"id": "12", "document": "doc twelve"},
        {"id": "7", "document": "doc seven"},
        {"id": "99", "document": "not in the slice"},
    ]
    rows = document_records(docs, recs)
    assert [(r.id, r.input, r.output, r.split) for r in rows] == [
        ("12", "", "doc twelve", "forget"),
        ("7", "", "doc seven", "forget"),
    ]
    # documents that match no record (generic data) are all taken
    assert len(document_records(docs[2:], recs)) == 1


def test_per_step_cap_drops_a_row_whose_loss_already_reached_it(tiny_world):
    """forget_nll_cap: a row whose mean answer NLL in this forward pass is >= its cap leaves the forget
    term at once; the others are pushed as without a cap."""
    from llm_unlearn.losses import row_mean_nll, token_log_probs  # noqa: F401

    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    pm = _lora(tiny_world)
    sel = AnswerHeadSelector(pm)
    collate = UnlearnCollator(tok.pad_token_id)
    full = collate(_rows(tiny_world, ds.forget[:3], ds.retain[:2]))
    with torch.no_grad():
        out = pm(input_ids=full["input_ids"], attention_mask=full["attention_mask"]).logits.double()
    lab = full["labels"][:, 1:]
    lp = out[:, :-1].log_softmax(-1).gather(-1, lab.clamp_min(0)[..., None])[..., 0]
    nll = [float(-(lp[i][lab[i] != -100]).mean()) for i in range(3)]
    # cap row 1 just below its loss (dropped), rows 0 and 2 far above theirs (kept)
    full["forget_nll_cap"] = torch.tensor([nll[0] + 5, nll[1] - 1e-3, nll[2] + 5, float("inf"), float("inf")])
    sub = collate(_rows(tiny_world, [ds.forget[0], ds.forget[2]], ds.retain[:2]))
    _, t_full = unlearning_loss(pm, full, ObjectiveOptions(), sel)
    _, t_sub = unlearning_loss(pm, sub, ObjectiveOptions(), sel)
    assert t_full["npo"] == pytest.approx(t_sub["npo"], rel=1e-5, abs=1e-6)
    assert t_full["forget_active"] == pytest.approx(2 / 3)


def test_row_mean_nll_is_the_per_row_mean_and_inf_without_tokens():
    from llm_unlearn.losses import row_mean_nll

    logp = torch.tensor([-1.0, -3.0, -2.0, -0.5], dtype=torch.float64)
    rows = torch.tensor([0, 0, 2, 2])
    got = row_mean_nll(logp, rows, 3, empty=float("inf"))
    assert got[0] == 2.0 and got[2] == 1.25 and torch.isinf(got[1])


def test_documents_are_placed_after_their_units_records():
    from llm_unlearn.data.holdout import with_documents
    from llm_unlearn.data.records import Record

    recs = [
        Record("1sc1", "a", "b", "Task3", "forget"),
        Record("1qa0", "q", "a", "Task3", "forget"),
        Record("2qa0", "q", "a", "Task2", "forget"),
        Record("3sc1", "a", "b", "Task3", "forget"),
    ]
    docs = [{"id": "3", "document": "three"}, {"id": "1", "document": "one"}]
    rows, doc_rows = with_documents(recs, docs)
    assert [r.id for r in rows] == ["1sc1", "1qa0", "1", "2qa0", "3sc1", "3"]
    assert doc_rows == {2, 5}


def test_a_record_follows_its_documents_latest_loss_between_evaluations():
    from types import SimpleNamespace

    from llm_unlearn.train.trainer import UnlearnTrainer

    t = SimpleNamespace(
        forget_active={0: True, 1: True, 2: False, 5: True},
        forget_caps={5: 3.0},
        unit_row={0: 5, 1: 5, 2: 5},
        last_row_nll={},
        answered=set(),  # calibration.push_answered off
    )
    act = lambda k: UnlearnTrainer._active(t, k)  # noqa: E731
    assert [act(k) for k in (0, 1, 2, 5, 9)] == [True, True, False, True, True]  # no in-batch loss yet
    t.last_row_nll[5] = 3.5  # the document reached its cap in its latest batch: its records stop
    assert [act(k) for k in (0, 1, 2, 5)] == [False, False, False, True]
    t.last_row_nll[5] = 2.0  # fell back below (retain training pulled it back): they resume, row 2 too
    # (the in-batch loss is newer than the evaluation that gated it off)
    assert [act(k) for k in (0, 1, 2)] == [True, True, True]
    # a row with a cap of its own is left to the per-step cap of the loss (`loss._gate`), whatever the
    # last evaluation said
    t.forget_active[5] = False
    assert act(5) is True


def test_mmlu_budget_enters_the_proxy(tiny_world, tmp_path):
    """With calibration.mmlu the monitor scores `mmlu_items` questions a subject and the proxy becomes
    mean(task aggregate, MIA score, MMLU), the three parts of the official final score."""
    from conftest import write_csv_fixture
    from llm_unlearn.data.holdout import Holdout, read_forget_documents
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.train import calibration as cal
    from llm_unlearn.train.monitor import TrainingMonitor

    bundle = load_unlearning_data(tiny_world["data_dir"])
    docs = read_forget_documents(tiny_world["data_dir"] / "mia" / "member.jsonl")
    holdout = Holdout(documents=list(tiny_world["ds"].nonmember_docs))
    mon = TrainingMonitor(
        tiny_world["tokenizer"],
        bundle.forget,
        bundle.retain,
        holdout=holdout,
        forget_documents=docs,
        items=6,
        max_new_tokens=8,
        mmlu=str(write_csv_fixture(tmp_path)),
        mmlu_items=2,
    )
    row = mon.evaluate(tiny_world["make_model"](), step=0, chunk=0)
    assert 0.0 <= row["mmlu"] <= 1.0
    assert row["proxy"] == pytest.approx(
        cal.proxy_score(row["task_aggregate"], row["mia_auc"], row["mmlu"]), abs=1e-15
    )


class _Kill(Exception):
    pass


def test_a_calibrated_run_resumed_after_a_chunk_ends_as_the_uninterrupted_one(
    tiny_world, tmp_path, monkeypatch
):
    """The calibration's state (evaluations, gate, caps, best weights) is in the checkpoint: a run killed
    after chunk 1 and resumed keeps the same adapter and makes the same decisions."""
    from safetensors.torch import load_file

    import llm_unlearn.train.checkpoint as run_mod

    extra = {
        "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
        "schedule.chunk_size": 15,
        "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
        "calibration.eval_every": 4,
        "calibration.eval_items": 6,
        "schedule.epochs": 4,
    }
    full = _run(tiny_world, tmp_path / "full", **extra)
    assert full["chunk_count"] >= 2
    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        if a[2] == 1:  # after the first chunk is saved
            raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        _run(tiny_world, tmp_path / "resumed", **extra)
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    resumed = _run(tiny_world, tmp_path / "resumed", **extra)
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    # one process, the same float32 operations in the same order: equal in principle; 1e-6 (~100 ulp of
    # weights of size ~0.1) only forgives a different kernel choice after the restart
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-6, k
    fc, rc = full["calibration"], resumed["calibration"]
    assert [e["step"] for e in fc["evaluations"]] == [e["step"] for e in rc["evaluations"]]
    assert fc["selected"] == rc["selected"] and fc["stop_reason"] == rc["stop_reason"]
    assert fc["npo_beta"] is not None and rc["npo_beta"] == fc["npo_beta"]  # chosen once, kept on resume


def test_revisit_puts_earlier_forget_rows_in_the_last_chunk_under_the_gate(tiny_world, tmp_path):
    docs = str(tiny_world["data_dir"] / "mia" / "member.jsonl")
    summary = _run(
        tiny_world,
        tmp_path / "rev",
        **{
            "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
            "calibration.forget_documents": docs,
            "calibration.eval_every": "chunk",
            "calibration.eval_items": 4,
            "calibration.eval_max_new_tokens": 4,
            "calibration.revisit": True,
            "schedule.chunk_size": 6,
            "schedule.epochs": 1,
        },
    )
    plan = json.loads((tmp_path / "rev" / "run.json").read_text())["plan"]
    last = plan[-1]
    # every forget row of the run, 0 .. n-1, is in the last chunk (the earlier chunks' rows revisited)
    assert len(plan) >= 2 and last["first_forget_row"] == 0
    assert last["n_forget"] == last["last_forget_row"] + 1 > sum(c["n_forget"] for c in plan[:-1])
    assert summary["calibration"]["evaluations"]  # calibrated: the gate decided which rows were pushed
    # without a holdout there is no gate: revisiting would push every earlier row again, so it is off
    plain = _run(
        tiny_world,
        tmp_path / "norev",
        **{"calibration.revisit": True, "schedule.chunk_size": 6, "schedule.epochs": 1},
    )
    plan = json.loads((tmp_path / "norev" / "run.json").read_text())["plan"]
    assert plan[-1]["first_forget_row"] != 0 and plain["steps_done"] > 0
