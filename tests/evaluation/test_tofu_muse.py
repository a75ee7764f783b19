"""TOFU and MUSE evaluators: readers, prompt encoding, per-token statistics, metrics on hand-made rows,
end-to-end runs on small fixtures in each benchmark's layout (run twice: identical files), bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llm_unlearn import cli
from llm_unlearn.data.benchmarks import load_muse, load_tofu, tofu_training_bundle
from llm_unlearn.data.records import load_unlearning_data
from llm_unlearn.errors import DataError, UserError
from llm_unlearn.evaluation.benchmarks.tofu import tofu_metrics
from llm_unlearn.evaluation.metrics import tofu_muse as bm

TOFU_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "tofu"


# ----------------------------------------------------------------------------- fixtures
def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _perturbed(q, a, para=True):
    row = {
        "question": q,
        "answer": a,
        "perturbed_answer": [a.replace("Rome", w) for w in ("Oslo", "Lima", "Kyiv")],
    }
    if para:
        row["paraphrased_answer"] = "It was " + a.lower()
    return row


def make_tofu_dir(root: Path) -> Path:
    """A hand-made directory in TOFU's layout (2 forget + 3 retain questions, ...)."""
    forget = [
        ("Where was Ann born?", "Ann was born in Rome."),
        ("What did Ann write?", "Ann wrote Rome at Night."),
    ]
    retain = [
        ("Where was Bob born?", "Bob was born in Rome."),
        ("What did Bob write?", "Bob wrote The Rome Letters."),
        ("When was Bob born?", "Bob was born in Rome in 1950."),
    ]
    _jsonl(root / "forget01.jsonl", [{"question": q, "answer": a} for q, a in forget])
    _jsonl(root / "retain99.jsonl", [{"question": q, "answer": a} for q, a in retain])
    _jsonl(root / "full.jsonl", [{"question": q, "answer": a} for q, a in retain + forget])
    _jsonl(
        root / "holdout01.jsonl",
        [
            {"question": "Where was Cy born?", "answer": "Cy was born in Rome."},
            {"question": "What did Cy write?", "answer": "Cy wrote Rome Songs."},
        ],
    )
    _jsonl(root / "forget01_perturbed.jsonl", [_perturbed(q, a) for q, a in forget])
    _jsonl(root / "retain_perturbed.jsonl", [_perturbed(q, a) for q, a in retain])
    _jsonl(
        root / "real_authors_perturbed.jsonl", [_perturbed("Who wrote Rome?", "Rome was by Gibbon.", False)]
    )
    _jsonl(root / "world_facts_perturbed.jsonl", [_perturbed("Capital of Italy?", "Rome", False)])
    return root


def make_muse_dir(root: Path) -> Path:
    """A hand-made directory in MUSE's layout (data/<corpus>/...): .json lists, as MUSE ships them."""

    def dump(rel, obj):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(obj), encoding="utf-8")

    dump(
        "verbmem/forget.json",
        [
            {"prompt": "Ann was born in", "gt": " Rome in 1950."},
            {"prompt": "Bob wrote", "gt": " The Rome Letters."},
        ],
    )
    dump("knowmem/forget_qa.json", [{"question": "Where was Ann born?", "answer": "Rome"}])
    dump("knowmem/forget_qa_icl.json", [{"question": "Where was Cy born?", "answer": "Lima"}])
    dump("knowmem/retain_qa.json", [{"question": "What did Bob write?", "answer": "The Rome Letters"}])
    dump("knowmem/retain_qa_icl.json", [{"question": "When was Bob born?", "answer": "1950"}])
    dump("privleak/forget.json", ["Ann was born in Rome in 1950.", "Ann wrote Rome at Night."])
    dump("privleak/holdout.json", ["Cy was born in Lima.", "Cy wrote songs about Lima."])
    dump("privleak/retain.json", ["Bob was born in Rome."])
    return root


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A randomly initialised tiny OLMo-2 with a BPE tokenizer, saved (the metrics' plumbing does not
    need a trained model; their values are checked on hand-made inputs)."""
    import torch

    from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer

    root = tmp_path_factory.mktemp("tiny_lm")
    texts = [
        "Question: Where was Ann born?\nAnswer: Ann was born in Rome.",
        "Bob wrote The Rome Letters in 1950.",
        "Cy was born in Lima, Oslo or Kyiv.",
        "What did Cy write? Songs about Lima.",
    ]
    tok = train_bpe_tokenizer(texts * 4, vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_olmo2(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    model.eval()
    return {"model": model, "tokenizer": tok, "dir": root / "model"}


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ----------------------------------------------------------------------------- readers
def test_tofu_reader_and_training_bundle(tmp_path):
    d = make_tofu_dir(tmp_path / "tofu")
    data = load_tofu(d, "forget01")
    assert [
        len(data.forget),
        len(data.retain),
        len(data.real_authors),
        len(data.world_facts),
        len(data.holdout),
    ] == [2, 3, 1, 1, 2]
    assert data.forget[0].perturbed_answers[0] == "Ann was born in Oslo."
    bundle = load_unlearning_data(d, split="forget01")  # train --data DIR --split forget01
    assert [r.output for r in bundle.forget] == ["Ann was born in Rome.", "Ann wrote Rome at Night."]
    assert len(bundle.retain) == 3 and bundle.retain[0].input == "Question: Where was Bob born?\nAnswer:"
    full = tofu_training_bundle(d, "full", template="raw")
    assert len(full.forget) == 5 and full.retain == [] and full.forget[0].input == "Where was Bob born?"


@pytest.mark.skipif(not (TOFU_DIR / "full.jsonl").is_file(), reason=f"real TOFU data not found at {TOFU_DIR}")
def test_real_tofu_splits():
    bundle = load_unlearning_data(TOFU_DIR, split="forget01")
    assert (len(bundle.forget), len(bundle.retain)) == (40, 3960)
    data = load_tofu(TOFU_DIR, "forget10")
    assert (len(data.forget), len(data.retain), len(data.holdout)) == (400, 400, 400)
    assert all(len(i.perturbed_answers) >= 3 for i in data.forget + data.real_authors)


@pytest.mark.parametrize(
    "name, content, line, field",
    [
        (
            "forget01_perturbed.jsonl",
            '{"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"]}\n'
            '{"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": []}\n',
            2,
            "perturbed_answer",
        ),
        (
            "retain_perturbed.jsonl",
            '\n{"question": "q", "answer": 3, "paraphrased_answer": "p", "perturbed_answer": ["x"]}\n',
            2,
            "answer",
        ),
        (
            "world_facts_perturbed.jsonl",
            '{"question": "q", "answer": "a", "perturbed_answer": ["x", null]}\n',
            1,
            "perturbed_answer",
        ),
        ("holdout01.jsonl", '{"question": "q"}\n', 1, "answer"),
    ],
)
def test_bad_tofu_files_give_one_line_errors(tmp_path, tiny_lm, capsys, name, content, line, field):
    d = make_tofu_dir(tmp_path / "tofu")
    (d / name).write_text(content, encoding="utf-8")
    rc = cli.main(
        [
            "--quiet",
            "evaluate",
            "--benchmark",
            "tofu",
            "--model",
            str(tiny_lm["dir"]),
            "--data",
            str(d),
            "--forget-split",
            "forget01",
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert rc == 2
    msg = _error_line(capsys)
    assert name in msg and f"line {line}" in msg and f"field '{field}'" in msg, msg


def test_bad_muse_file_and_bad_retain_reference(tmp_path, tiny_lm, capsys):
    d = make_muse_dir(tmp_path / "muse")
    (d / "knowmem" / "retain_qa.json").write_text('[{"question": "q", "answer": "a"}, {"question": "q"}]')
    argv = [
        "--quiet",
        "evaluate",
        "--benchmark",
        "muse",
        "--model",
        str(tiny_lm["dir"]),
        "--data",
        str(d),
        "--output-dir",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert cli.main(argv) == 2
    msg = _error_line(capsys)
    assert "retain_qa.json, line 2, field 'answer'" in msg, msg
    make_muse_dir(d)
    ref = tmp_path / "muse_items.jsonl"
    ref.write_text(
        '{"set": "privleak_forget", "index": 0, "min_k": -1.0}\n{"set": "privleak_holdout", "min_k": "x"}\n'
    )
    assert cli.main(argv + ["--retain-reference", str(ref)]) == 2
    assert "muse_items.jsonl, line 2, field 'min_k'" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="verbmem"):
        load_muse(tmp_path / "empty")


def test_bad_tofu_retain_reference(tmp_path):
    from llm_unlearn.evaluation.benchmarks.tofu import read_retain_reference

    p = tmp_path / "tofu_items.jsonl"
    p.write_text(
        '{"set": "forget", "index": 0, "truth_ratio": 0.5, "min_k": -1}\n{"set": "forget", "index": 1}\n'
    )
    with pytest.raises(DataError, match=r"line 2, field 'truth_ratio'"):
        read_retain_reference(p)
    p.write_text('{"set": "nope", "index": 0}\n')
    with pytest.raises(DataError, match=r"line 1, field 'set'"):
        read_retain_reference(p)


# ----------------------------------------------------------------------------- prompts and token statistics
def test_qa_prompt_boundary_and_eos(tiny_lm):
    from llm_unlearn.evaluation.passes.answer_stats import QAEncoder

    tok = tiny_lm["tokenizer"]
    enc = QAEncoder(tok, "auto")
    assert enc.format == "qa"  # no chat template
    ids, n = enc.pair("Where was Ann born?", "Ann was born in Rome.")
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:n]) == "<s>Question: Where was Ann born?\nAnswer:"
    assert tok.decode(ids[n:-1]) == " Ann was born in Rome."
    assert enc.prompt("Where was Ann born?") == ids[:n]
    raw = QAEncoder(tok, "raw")
    ids, n = raw.pair("Q?", "A.")
    assert tok.decode(ids[n:-1]) == " A." and tok.decode(ids[:n]) == "<s>Q?"
    with pytest.raises(UserError, match="no chat template"):
        QAEncoder(tok, "chat")


def test_chat_template_prompt(tiny_lm):
    import copy

    from llm_unlearn.evaluation.passes.answer_stats import QAEncoder

    tok = copy.deepcopy(tiny_lm["tokenizer"])
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:\n{% endif %}"
    )
    enc = QAEncoder(tok, "auto", system_prompt="Be brief.")
    assert enc.format == "chat"
    ids, n = enc.pair("Where?", "Rome.")
    # the rendered template carries its own <s>; no second BOS is added; EOS is appended
    assert tok.decode(ids[:n]) == "<s>system:\nBe brief.\n<s>user:\nWhere?\n<s>assistant:\n"
    assert tok.decode(ids[n:]) == "Rome.\n</s>"
    assert enc.prompt("Where?") == ids[:n]
    assert (
        tok.decode(QAEncoder(tok, "chat", system_prompt="").prompt("Where?"))
        == "<s>user:\nWhere?\n<s>assistant:\n"
    )


def test_answer_token_stats_match_one_sequence_at_a_time(tiny_lm):
    """Batched, right-padded statistics equal a per-sequence forward without padding. Tolerance: float32
    logits whose matmuls are blocked differently for other shapes (hidden size 32, so a handful of ulps
    of values ~|6|: 1e-5 absolute); argmax equality is checked where the top-2 gap exceeds that."""
    import torch

    from llm_unlearn.evaluation.passes.answer_stats import QAEncoder, answer_token_stats

    model, tok = tiny_lm["model"], tiny_lm["tokenizer"]
    enc = QAEncoder(tok, "qa")
    seqs = [
        enc.pair(q, a)
        for q, a in [
            ("Where was Ann born?", "Ann was born in Rome."),
            ("Q?", "A."),
            ("What did Cy write?", "Cy wrote songs about Lima, Oslo and Kyiv."),
        ]
    ]
    got = answer_token_stats(model, seqs, pad_id=tok.pad_token_id, batch_size=3, progress=False)
    for (ids, n), st in zip(seqs, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        want = [float(logp[t - 1, ids[t]]) for t in range(n, len(ids))]
        assert len(st.logprobs) == len(ids) - n
        assert st.logprobs == pytest.approx(want, abs=1e-5)
        for t, c in zip(range(n, len(ids)), st.correct):
            top2 = torch.topk(logp[t - 1], 2).values
            if float(top2[0] - top2[1]) > 1e-4:
                assert c == (int(logp[t - 1].argmax()) == ids[t])
        assert st.nll == pytest.approx(-sum(want) / len(want), abs=1e-5)


# ----------------------------------------------------------------------------- metrics on hand-made rows
def _row(s, i, prob=0.5, rouge=0.5, tr=1.0, **kw):
    return {"set": s, "index": i, "prob": prob, "rouge": rouge, "truth_ratio": tr, **kw}


def test_tofu_metrics_hand_worked():
    rows = [
        _row("forget", 0, prob=0.2, rouge=1.0, tr=0.5, em=1.0, es=1.0, min_k=-0.1, question="a"),
        _row("forget", 1, prob=0.4, rouge=0.0, tr=2.0, em=0.5, es=0.25, min_k=-0.2, question="b"),
        _row("retain", 0, prob=0.5, rouge=0.5, tr=0.5),  # retain TR score max(0, 1 - 0.5) = 0.5
        _row("real_authors", 0, prob=0.25, rouge=0.25, tr=0.75),  # 0.25 each
        _row("world_facts", 0, prob=1.0, rouge=1.0, tr=0.0),  # 1 each
        {"set": "holdout", "index": 0, "min_k": -3.0},
        {"set": "holdout", "index": 1, "min_k": -4.0},
    ]
    m, headline, info = tofu_metrics(rows, None)
    assert m["forget_Q_A_Prob"] == pytest.approx(0.3)
    assert m["forget_truth_ratio"] == pytest.approx(0.5)  # min(R, 1/R) = 0.5 for both
    assert m["exact_memorization"] == pytest.approx(0.75) and m["extraction_strength"] == pytest.approx(0.625)
    # 9 numbers: three 0.5, three 0.25, three 1 -> 9 / (6 + 12 + 3)
    assert m["model_utility"] == pytest.approx(9 / 21)
    assert m["mia_min_k_auc"] == 0.0 and m["privleak"] == pytest.approx(-100.0)
    assert m["forget_quality"] is None and info["privleak_reference_auc"] == 0.5
    # the retain model: same truth ratios -> KS p = 1; its AUC as privleak's reference -> 0
    ref = {
        "path": "ref",
        "forget": {0: {"truth_ratio": 2.0, "min_k": -1.0}, 1: {"truth_ratio": 0.5, "min_k": -2.0}},
        "holdout": {0: {"min_k": -1.5}, 1: {"min_k": -2.5}},
    }
    m2, _, info2 = tofu_metrics(rows, ref)
    assert m2["forget_quality"] == 1.0
    # retain model: forget (-1, -2) vs holdout (-1.5, -2.5): P(holdout > forget) = 1/4
    assert info2["privleak_reference_auc"] == pytest.approx(0.25)
    assert m2["privleak"] == pytest.approx((0.0 - 0.25) / 0.25 * 100)
    assert list(headline)[:2] == ["forget_quality", "model_utility"]


def test_muse_metrics_hand_worked():
    from llm_unlearn.evaluation.benchmarks.muse import muse_metrics

    rows = [
        {"set": "verbmem", "rouge": 1.0},
        {"set": "verbmem", "rouge": 0.5},
        {"set": "knowmem_forget", "rouge": 0.25},
        {"set": "knowmem_retain", "rouge": 0.75},
        {"set": "privleak_forget", "min_k": -1.0},
        {"set": "privleak_forget", "min_k": -3.0},
        {"set": "privleak_holdout", "min_k": -2.0},
        {"set": "privleak_holdout", "min_k": -4.0},
    ]
    m, headline = muse_metrics(rows, 0.5)
    assert m["forget_verbmem_ROUGE"] == 0.75 and m["forget_knowmem_ROUGE"] == 0.25
    assert m["retain_knowmem_ROUGE"] == 0.75
    # pairs (forget, holdout) with holdout scoring higher: (-3, -2) only -> 1/4
    assert m["mia_min_k_auc"] == pytest.approx(0.25)
    assert m["privleak"] == pytest.approx(-50.0)
    assert set(headline) == {
        "forget_verbmem_ROUGE",
        "forget_knowmem_ROUGE",
        "retain_knowmem_ROUGE",
        "privleak",
    }


# ----------------------------------------------------------------------------- end to end
def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_tofu_end_to_end_twice_identical_and_self_reference(tmp_path, tiny_lm, capsys):
    d = make_tofu_dir(tmp_path / "tofu")
    base = [
        "--quiet",
        "evaluate",
        "--benchmark",
        "tofu",
        "--model",
        str(tiny_lm["dir"]),
        "--data",
        str(d),
        "--forget-split",
        "forget01",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert cli.main(base + ["--output-dir", str(tmp_path / "a")]) == 0
    assert cli.main(base + ["--output-dir", str(tmp_path / "b")]) == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) >= {"tofu_items.jsonl", "tofu_summary.json", "report.md", "plots/tofu_truth_ratio.png"}
    assert a == b
    rows = [json.loads(x) for x in (tmp_path / "a" / "tofu_items.jsonl").read_text().splitlines()]
    assert [(r["set"], r["index"]) for r in rows][:3] == [("forget", 0), ("forget", 1), ("retain", 0)]
    for r in rows:
        if r["set"] != "holdout":
            assert {"prob", "rouge", "truth_ratio", "generation"} <= set(r)
            # the truth ratio is recomputed from the stored NLLs
            true_nll = r["paraphrased_nll"] if r["set"] in ("forget", "retain") else r["answer_nll"]
            assert r["truth_ratio"] == pytest.approx(bm.truth_ratio(true_nll, r["perturbed_nll"]), rel=1e-12)
        if r["set"] == "forget":
            assert r["prob"] == pytest.approx(math.exp(-r["answer_nll"]), rel=1e-12)
    # the model as its own retain model: identical distributions -> forget quality 1, privleak 0
    ref = str(tmp_path / "a" / "tofu_items.jsonl")
    assert cli.main(base + ["--output-dir", str(tmp_path / "c"), "--retain-reference", ref]) == 0
    s = json.loads((tmp_path / "c" / "tofu_summary.json").read_text())
    assert (
        s["benchmark"] == "tofu"
        and s["headline"]["forget_quality"] == 1.0
        and s["headline"]["privleak"] == 0.0
    )
    assert set(s) == {"benchmark", "headline", "metrics", "n_items", "reference", "config"}
    # a reference for another forget set is refused
    other = tmp_path / "other.jsonl"
    other.write_text('{"set": "forget", "index": 0, "truth_ratio": 1.0, "min_k": -1.0, "question": "x"}\n')
    capsys.readouterr()
    assert cli.main(base + ["--output-dir", str(tmp_path / "d"), "--retain-reference", str(other)]) == 2
    assert "same --forget-split" in _error_line(capsys)


def test_muse_end_to_end_twice_identical(tmp_path, tiny_lm):
    d = make_muse_dir(tmp_path / "muse")
    base = [
        "--quiet",
        "evaluate",
        "--benchmark",
        "muse",
        "--model",
        str(tiny_lm["dir"]),
        "--data",
        str(d),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert cli.main(base + ["--output-dir", str(tmp_path / "a")]) == 0
    assert cli.main(base + ["--output-dir", str(tmp_path / "b")]) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    s = json.loads((tmp_path / "a" / "muse_summary.json").read_text())
    assert s["n_items"] == {
        "verbmem": 2,
        "knowmem_forget": 1,
        "knowmem_retain": 1,
        "privleak_forget": 2,
        "privleak_holdout": 2,
        "privleak_retain": 1,
    }
    rows = [json.loads(x) for x in (tmp_path / "a" / "muse_items.jsonl").read_text().splitlines()]
    for r in rows:
        if "generation" in r:
            ref = r.get("gt", r.get("answer"))
            assert r["rouge"] == pytest.approx(bm.rouge_l_f1(ref, r["generation"]))
            if r["set"].startswith("knowmem"):
                assert (
                    bm.truncate_at_stop(r["generation"], ("\n\n", "\nQuestion", "Question:"))
                    == r["generation"]
                )
    # the model as its own retain model: privleak 0
    ref = str(tmp_path / "a" / "muse_items.jsonl")
    assert cli.main(base + ["--output-dir", str(tmp_path / "c"), "--retain-reference", ref]) == 0
    s = json.loads((tmp_path / "c" / "muse_summary.json").read_text())
    assert s["headline"]["privleak"] == 0.0


def test_train_reads_a_tofu_directory(tmp_path, tiny_lm):
    """`train --data TOFU_DIR --split forget01`: forget01 as forget, retain99 as retain."""
    d = make_tofu_dir(tmp_path / "tofu")
    out = tmp_path / "run"
    argv = [
        "--quiet",
        "train",
        "--model",
        str(tiny_lm["dir"]),
        "--data",
        str(d),
        "--split",
        "forget01",
        "--output-dir",
        str(out),
        "--chunk-size",
        "2",
        "--retain-per-forget",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--lora-alpha",
        "4",
        "--no-plots",
        "--no-progress",
        "--no-merge",
    ]
    assert cli.main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    text = json.dumps(run)
    assert "forget01.jsonl" in text and "retain99.jsonl" in text


def test_semeval_summary_has_the_common_shape():
    from llm_unlearn.evaluation.report import semeval_summary

    results = {
        "forget-set": {"overall-regurgitation-score": 0.2},
        "retain-set": {},
        "aggregated-terms": [0.5],
        "harmonic-mean-task-aggregate": 0.5,
        "mia_loss_acc": 0.6,
        "mia_final_score": 0.8,
        "aggregate-score": float("nan"),
        "timing": {"generate": 1.0},
        "config": {"model": "m"},
    }
    s = semeval_summary(results, {"forget": 3, "retain": 4})
    assert set(s) == {"benchmark", "headline", "metrics", "n_items", "reference", "config"}
    assert s["benchmark"] == "semeval" and s["n_items"] == {"forget": 3, "retain": 4}
    assert s["headline"] == {
        "aggregate-score": None,
        "harmonic-mean-task-aggregate": 0.5,
        "mia_final_score": 0.8,
    }
    assert "timing" not in s["metrics"] and s["metrics"]["forget-set"] == {"overall-regurgitation-score": 0.2}


def test_finetune_reads_a_tofu_directory(tmp_path):
    """`finetune --data TOFU_DIR --split retain99`: the retain model's training set (question -> input)."""
    from llm_unlearn.finetune import finetune

    d = make_tofu_dir(tmp_path / "tofu")
    tiny = {"tiny_hidden": 32, "tiny_layers": 1, "vocab_size": 300, "lr": 5e-3, "progress": False}
    s = finetune(model="tiny", data=d, split="retain99", output_dir=tmp_path / "ft", max_steps=1, **tiny)
    assert s["records"] == 3 and s["steps"] == 1
    s = finetune(model="tiny", data=d, split="full", output_dir=tmp_path / "ft2", max_steps=1, **tiny)
    assert s["records"] == 5
