"""Open-Instruct-compatible MMLU: prompt text, answer tokens, 2048-token fallback, metrics, data layouts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import MMLU_FIXTURE as FIXTURE
from conftest import write_csv_fixture
from llm_unlearn.errors import DataError, UserError
from llm_unlearn.evaluation.benchmarks.mmlu.categories import CATEGORIES, SUBJECT_SUBCATEGORIES, SUBJECTS
from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import (
    MMLUQuestion,
    answer_token_ids,
    build_prompt,
    compute_metrics,
    evaluate_mmlu,
    format_subject,
    gen_prompt,
    load_mmlu,
    predict,
    predict_with_prefix,
    read_mmlu_metrics,
    select_instances,
    shared_prefix_length,
)
from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    """A GPT-2-style byte-level BPE tokenizer (BOS added), trained on MMLU-like text."""
    texts = []
    for splits in FIXTURE.values():
        for rows in splits.values():
            for r in rows:
                texts.append(f"{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer: {r[5]}\n\n")
    texts += [f"Answer: {x}. The answer is {x} and not {y}." for x in "ABCD" for y in "ABCD"] * 5
    texts += ["The following are multiple choice questions (with answers) about lorem ipsum dolor."] * 5
    return train_bpe_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = build_tiny_olmo2(
        tok,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=4096,
        seed=0,
    )
    return m.eval()


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    return write_csv_fixture(tmp_path_factory.mktemp("mmlu"))


# ------------------------------------------------------------------------------------------ prompts
def test_prompt_text_is_exactly_open_instructs(csv_dir, tok):
    data = load_mmlu(csv_dir)
    dev = data["abstract_algebra"]["dev"]
    q = data["abstract_algebra"]["test"][2]
    prompt, k = build_prompt(tok, dev, q, ntrain=5)
    assert k == 2  # only two dev examples exist
    expected = (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "Find the order of the group Z_4.\nA. 1\nB. 2\nC. 4\nD. 8\nAnswer: C\n\n"
        "Is every field a ring?\nA. Yes\nB. No\nC. Only finite ones\nD. Only infinite ones\nAnswer: A\n\n"
        'A "quoted", comma question?\nA. x, y\nB. z\nC. w\nD. v\nAnswer:'
    )
    assert prompt == expected
    assert format_subject("high_school_us_history") == " high school us history"
    prompt1, k1 = build_prompt(tok, dev, q, ntrain=1)
    assert k1 == 1 and prompt1 == expected.replace(
        "Is every field a ring?\nA. Yes\nB. No\nC. Only finite ones\nD. Only infinite ones\nAnswer: A\n\n", ""
    )
    prompt0, k0 = build_prompt(tok, [], data["high_school_us_history"]["test"][0], ntrain=5)
    assert k0 == 0
    assert prompt0 == (
        "The following are multiple choice questions (with answers) about  high school us history.\n\n"
        "Who was the first US president?\nA. Adams\nB. Jefferson\nC. Washington\nD. Lincoln\nAnswer:"
    )


def test_answer_tokens_are_the_space_letter_tokens(tok):
    ids = answer_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids) == ["ĠA", "ĠB", "ĠC", "ĠD"]
    assert ids == [tok.encode(" " + c, add_special_tokens=False)[-1] for c in "ABCD"]
    assert tok.encode(" A", add_special_tokens=True)[0] == tok.bos_token_id  # BOS is not taken


def test_2048_token_fallback_shrinks_k(tok):
    unit = " lorem ipsum"
    per = len(tok(unit, add_special_tokens=False).input_ids)
    long_q = "Long question" + unit * (600 // per)  # ~600 tokens per dev example
    dev = [MMLUQuestion("marketing", f"{i}. {long_q}", ("a", "b", "c", "d"), "A") for i in range(5)]
    q = MMLUQuestion("marketing", "Short?", ("a", "b", "c", "d"), "B")
    prompt, k = build_prompt(tok, dev, q, ntrain=5)
    assert k == 3
    assert len(tok(prompt, add_special_tokens=False).input_ids) <= 2048
    longer = gen_prompt(dev, "marketing", 4) + prompt.split("Answer: A\n\n")[-1]
    assert len(tok(longer, add_special_tokens=False).input_ids) > 2048
    # a prompt that never fits stops at 0 shots
    huge = MMLUQuestion("marketing", "Huge" + unit * (3000 // per), ("a", "b", "c", "d"), "B")
    assert build_prompt(tok, dev, huge, ntrain=5)[1] == 0


# ------------------------------------------------------------------------------------------ scoring
def test_batched_predictions_equal_one_at_a_time(csv_dir, tok, model):
    data = load_mmlu(csv_dir)
    prompts = [build_prompt(tok, v["dev"], q, 5)[0] for v in data.values() for q in v["test"]]
    prompts.append(prompts[0] + " " * 3)  # different lengths -> real padding
    one, p1 = predict(model, tok, prompts, batch_size=1)
    many, p4 = predict(model, tok, prompts, batch_size=4)
    assert one == many
    for a, b in zip(p1, p4):
        # candidate probabilities, float32 forward padded vs alone: ~sqrt(V) * u * |logit| ~ 1e-5
        assert a == pytest.approx(b, abs=1e-5)
    # the prediction is the argmax over the full next-token logits restricted to the candidates
    ids = tok(prompts[1], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert one[1] == int(torch.argmax(logits[answer_token_ids(tok)]))


# ------------------------------------------------------------------------------------------ shared prefix
# float32 probabilities of the same tokens at the same positions, computed once from a key/value cache and
# once whole: the sums differ only in order (attention over <= 2048 keys of width <= 16 per head, 1 layer),
# so the relative error is bounded by ~n*eps = 2048 * 1.2e-7 ~ 2.4e-4; the predictions must be equal.
PROB_RTOL = 2.5e-4


def _mmlu_rows(n_dev: int, n_test: int, subject: str, long_every: int = 0) -> dict:
    """Synthetic questions of varying length; every ``long_every``-th question is long enough to force
    the shot fallback at a small token budget."""
    dev = [
        MMLUQuestion(
            subject, f"Dev question {i} about {subject}?", ("one", "two", "three", "four"), "ABCD"[i % 4]
        )
        for i in range(n_dev)
    ]
    test = []
    for i in range(n_test):
        words = " and more" * (i % 5) + (" lorem ipsum" * 40 if long_every and i % long_every == 0 else "")
        test.append(
            MMLUQuestion(
                subject, f"Is {i} the answer{words}?", ("yes", "no", "maybe", "never"), "ABCD"[i % 4]
            )
        )
    return {"dev": dev, "test": test}


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]], [1, 2, 3, 9]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]], [1, 2, 3]) == 2  # each row keeps one token
    assert shared_prefix_length([[7, 2], [1, 2]], [1, 2]) == 0
    assert shared_prefix_length([[1, 2, 3, 4]], [1, 2, 8]) == 2  # a merged boundary token moves the split


def test_prefix_cache_with_a_merge_across_the_boundary(tok, model):
    """The test tokenizer encodes the prefix's trailing "\n\n" as one token alone but as two before a
    question ("\n", "\n", "What"): the split moves one token earlier and the predictions are unchanged."""
    rows = FIXTURE["abstract_algebra"]
    dev, test = (
        [MMLUQuestion("abstract_algebra", r[0], tuple(r[1:5]), r[5]) for r in rows[s]]
        for s in ("dev", "test")
    )
    prefix = gen_prompt(dev, "abstract_algebra", 2)
    prompts = [build_prompt(tok, dev, q, 5)[0] for q in test]
    rest = prompts[0][len(prefix) :]
    separate = list(tok(prefix).input_ids) + list(tok(rest, add_special_tokens=False).input_ids)
    assert separate != list(tok(prompts[0]).input_ids)  # the case this test is about does occur
    whole, p_whole = predict(model, tok, prompts, batch_size=2)
    cached, p_cached, shared = predict_with_prefix(model, tok, prefix, prompts, batch_size=2)
    assert shared == len(tok(prefix).input_ids) - 1
    assert cached == whole
    for a, b in zip(p_whole, p_cached):
        assert b == pytest.approx(a, rel=PROB_RTOL)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
def test_prefix_cache_predictions_equal_uncached(tok, model, batch_size):
    """Across subjects (different prefixes), shot fallbacks (a small token budget: long questions drop
    shots, so one subject has several k and prefixes), and batch edges (1, a size that leaves a partial last
    batch, one that divides, one larger than any group)."""
    data = {
        "abstract_algebra": _mmlu_rows(5, 9, "abstract_algebra", long_every=4),
        "marketing": _mmlu_rows(3, 4, "marketing"),
        "high_school_us_history": _mmlu_rows(0, 2, "high_school_us_history"),
    }
    kw = dict(ntrain=5, batch_size=batch_size, progress=False, max_prompt_tokens=360)
    whole = evaluate_mmlu(model, tok, data, prefix_cache=False, **kw)
    cached = evaluate_mmlu(model, tok, data, prefix_cache=True, **kw)
    ks = whole["subjects"]["abstract_algebra"]
    assert ks["k_shots_min"] == 3 and ks["k_shots_max"] == 5  # shots dropped: three prefixes
    assert whole["subject_acc"] == cached["subject_acc"]
    assert (
        cached["config"]["mean_shared_prefix_tokens"] > 50
        and whole["config"]["mean_shared_prefix_tokens"] == 0
    )
    # the per-question rows (predictions, shots, probabilities)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        evaluate_mmlu(model, tok, data, prefix_cache=False, output_dir=Path(d) / "a", **kw)
        evaluate_mmlu(model, tok, data, prefix_cache=True, output_dir=Path(d) / "b", **kw)
        rows = [
            [json.loads(x) for x in (Path(d) / n / "predictions.jsonl").read_text().splitlines()]
            for n in "ab"
        ]
    assert len(rows[0]) == len(rows[1]) == 15
    for a, b in zip(*rows):
        assert (a["subject"], a["index"], a["k_shots"], a["prediction"]) == (
            b["subject"],
            b["index"],
            b["k_shots"],
            b["prediction"],
        )
        for c in "ABCD":
            assert b["probs"][c] == pytest.approx(a["probs"][c], rel=PROB_RTOL)


def test_compute_metrics_micro_average():
    correct = {"abstract_algebra": [True, False], "marketing": [True, True, True], "anatomy": [False]}
    m = compute_metrics(correct)
    assert m["average_acc"] == pytest.approx(4 / 6)  # micro, not the mean of subject accuracies
    assert m["subject_acc"] == {"abstract_algebra": 0.5, "marketing": 1.0, "anatomy": 0.0}
    assert m["subcat_acc"] == {"math": 0.5, "business": 1.0, "health": 0.0}
    assert m["cat_acc"] == {"STEM": 0.5, "other (business, health, misc.)": pytest.approx(3 / 4)}
    assert m["n_questions"] == 6


def test_category_table_is_the_standard_one():
    assert len(SUBJECTS) == 57 and len(SUBJECT_SUBCATEGORIES) == 57
    subcats = {s for v in SUBJECT_SUBCATEGORIES.values() for s in v}
    assert subcats == {s for v in CATEGORIES.values() for s in v} and len(subcats) == 17
    assert SUBJECT_SUBCATEGORIES["high_school_government_and_politics"] == ["politics"]
    assert SUBJECT_SUBCATEGORIES["professional_accounting"] == ["other"]
    sizes = {
        c: sum(1 for v in SUBJECT_SUBCATEGORIES.values() if v[0] in members)
        for c, members in CATEGORIES.items()
    }
    assert sizes == {
        "STEM": 18,
        "humanities": 13,
        "social sciences": 12,
        "other (business, health, misc.)": 14,
    }


def test_evaluate_mmlu_writes_metrics(csv_dir, tok, model, tmp_path):
    m = evaluate_mmlu(model, tok, csv_dir, ntrain=5, batch_size=3, output_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    for key in ("average_acc", "subcat_acc", "cat_acc", "subject_acc", "subjects", "n_questions", "config"):
        assert key in saved
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == saved["n_questions"] == 6
    assert saved["average_acc"] == pytest.approx(sum(p["correct"] for p in preds) / len(preds))
    assert set(saved["subject_acc"]) == set(FIXTURE)
    assert set(saved["cat_acc"]) == {"STEM", "humanities", "other (business, health, misc.)"}
    assert saved["subjects"]["abstract_algebra"]["k_shots_max"] == 2
    assert saved["subjects"]["high_school_us_history"]["k_shots_max"] == 0
    assert {p["prediction"] for p in preds} <= set("ABCD")
    assert read_mmlu_metrics(tmp_path / "metrics.json") == saved["average_acc"]


# ------------------------------------------------------------------------------------------ data
def test_hf_layouts_load_like_csv(csv_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = load_mmlu(csv_dir)

    def rows(split):
        return [
            {"question": r[0], "subject": s, "choices": r[1:5], "answer": "ABCD".index(r[5])}
            for s, v in FIXTURE.items()
            for r in v[split]
        ]

    # cais/mmlu snapshot: all/<split>-00000-of-00001.parquet
    (tmp_path / "hf" / "all").mkdir(parents=True)
    for split in ("test", "dev"):
        pq.write_table(
            pa.Table.from_pylist(rows(split)), tmp_path / "hf" / "all" / f"{split}-00000-of-00001.parquet"
        )
    assert load_mmlu(tmp_path / "hf") == want
    # jsonl files at the top level
    (tmp_path / "jl").mkdir()
    for split in ("test", "dev"):
        (tmp_path / "jl" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split)))
    assert load_mmlu(tmp_path / "jl") == want
    # per-subject folders without a subject field
    for s in FIXTURE:
        (tmp_path / "per" / s).mkdir(parents=True)
        for split in ("test", "dev"):
            rs = [{k: v for k, v in r.items() if k != "subject"} for r in rows(split) if r["subject"] == s]
            (tmp_path / "per" / s / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    assert load_mmlu(tmp_path / "per") == want
    assert list(load_mmlu(tmp_path / "jl", subjects=["marketing"])) == ["marketing"]
    with pytest.raises(UserError, match="unknown MMLU subject"):
        load_mmlu(tmp_path / "jl", subjects=["astrology"])


def test_malformed_rows_raise_data_error_naming_file_and_row(tmp_path):
    bad = {"marketing": {"dev": [], "test": [["Q1", "a", "b", "c", "d", "A"], ["Q2", "a", "b", "c", "B"]]}}
    write_csv_fixture(tmp_path / "a", bad)
    with pytest.raises(DataError, match=r"marketing_test\.csv.*row 2.*expected 6 fields"):
        load_mmlu(tmp_path / "a")
    bad = {"marketing": {"dev": [], "test": [["Q1", "a", "b", "c", "d", "E"]]}}
    write_csv_fixture(tmp_path / "b", bad)
    with pytest.raises(DataError, match=r"marketing_test\.csv.*row 1.*answer"):
        load_mmlu(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test.jsonl").write_text(
        json.dumps({"question": "q", "subject": "x", "choices": ["a", "b", "c", "d"], "answer": 1})
        + "\n"
        + json.dumps({"question": "q", "subject": "x", "choices": ["a", "b"], "answer": 1})
        + "\n"
    )
    with pytest.raises(DataError, match=r"test\.jsonl.*row 2.*choices"):
        load_mmlu(tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no MMLU data"):
        load_mmlu(tmp_path / "empty")


def test_n_instances_sampling_matches_pandas():
    import pandas as pd

    qs = [MMLUQuestion("x", f"q{i}", ("a", "b", "c", "d"), "A") for i in range(23)]
    got = [q.question for q in select_instances(qs, 7)]
    want = [f"q{i}" for i in pd.DataFrame({"i": range(23)}).sample(7, random_state=42)["i"]]
    assert got == want
    assert select_instances(qs, 100) == qs and select_instances(qs, None) == qs


def test_read_mmlu_metrics_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_mmlu_metrics(tmp_path / "nope.json")
    (tmp_path / "m.json").write_text('{"average_acc": "high"}')
    with pytest.raises(DataError, match="average_acc"):
        read_mmlu_metrics(tmp_path / "m.json")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_mmlu(csv_dir, tok, model, tmp_path, capsys):
    from llm_unlearn.cli import main

    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    cap_argv = [
        "mmlu",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(csv_dir),
        "--output-dir",
        str(out),
        "--ntrain",
        "1",
        "--subjects",
        "abstract_algebra",
        "marketing",
        "--n-instances",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    rc = main(cap_argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_questions"] == 4 and set(saved["subject_acc"]) == {"abstract_algebra", "marketing"}
    assert saved["config"]["ntrain"] == 1 and saved["config"]["prefix_cache"] is True
    assert "MMLU average accuracy" in cap.out
    argv = [a if a != str(out) else str(tmp_path / "whole") for a in cap_argv] + ["--no-prefix-cache"]
    assert main(argv) == 0, capsys.readouterr().err
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert whole["config"]["prefix_cache"] is False and whole["subject_acc"] == saved["subject_acc"]
    rc = main(
        [
            "mmlu",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(tmp_path / "missing"),
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 2 and "error:" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm_eval is installed")
def test_cli_lm_eval_tasks_without_lm_eval(csv_dir, tmp_path, capsys):
    from llm_unlearn.cli import main

    rc = main(
        [
            "mmlu",
            "--model",
            str(tmp_path),
            "--data",
            str(csv_dir),
            "--output-dir",
            str(tmp_path / "o"),
            "--lm-eval-tasks",
            "hellaswag",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "pip install llm-unlearn[lm-eval]" in err


def test_cli_evaluate_with_mmlu_data(csv_dir, tok, model, tmp_path, capsys):
    from llm_unlearn.cli import main
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset

    write_synthetic_dataset(make_synthetic_dataset(n_entities_per_task=2), tmp_path / "data")
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--mia-data",
            str(tmp_path / "data" / "mia"), "--mmlu-data", str(csv_dir), "--mmlu-ntrain", "1", "--output-dir",
            str(out), "--max-new-tokens", "2", "--limit", "2", "--no-progress", "--device", "cpu"]  # fmt: skip
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads((out / "evaluation_results.json").read_text())
    metrics = json.loads((out / "mmlu" / "metrics.json").read_text())
    assert res["mmlu_average"] == metrics["average_acc"] and metrics["n_questions"] == 6
    assert res["aggregate-score"] != -1
    with pytest.raises(SystemExit) as exc:  # --mmlu-data and --mmlu-metrics exclude each other
        main(argv + ["--mmlu-metrics", str(out / "mmlu" / "metrics.json")])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
