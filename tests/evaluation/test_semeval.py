"""evaluate_semeval and `llm-unlearn evaluate` on a tiny OLMo-2 trained for a few seconds.

The model memorizes part of a small synthetic SemEval-layout set, so its generations are non-trivial
(some right, some wrong, some stopping at EOS, some running to max_new_tokens). The fast batched mode
must match the organizers' one-at-a-time mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from llm_unlearn.data.records import DataBundle, Record, load_unlearning_data, read_mia_documents
from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
from llm_unlearn.evaluation.benchmarks.semeval import summary_text
from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval
from llm_unlearn.evaluation.metrics.mia import loss_auc_interval, mia_score_range
from llm_unlearn.evaluation.passes.inference import answer_nll, document_statistics, greedy_generate
from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer

OFFICIAL_KEYS = [
    "forget-set",
    "retain-set",
    "mia_loss_acc",
    "mmlu_average",
    "aggregated-terms",
    "harmonic-mean-task-aggregate",
    "mia_final_score",
    "aggregate-score",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny matrices gain nothing from threads, and oversubscribed threads are very slow on a shared box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def train_tiny(texts, tokenizer, *, hidden=64, layers=2, steps=45, lr=5e-3, seed=0):
    """Full-batch training on `texts` (+ EOS); returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_tiny_olmo2(
        tokenizer, hidden_size=hidden, num_layers=layers, num_heads=4, intermediate_size=2 * hidden, seed=seed
    )
    enc = [tokenizer(t).input_ids + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@dataclass
class Tiny:
    model: object
    tokenizer: object
    bundle: DataBundle
    mia: tuple
    data_dir: Path
    model_dir: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny")
    ds = make_synthetic_dataset(n_entities_per_task=2, seed=0)  # 15 forget + 15 retain, 3 + 3 documents
    write_synthetic_dataset(ds, root / "data")
    texts = [r["input"] + " " + r["output"] for r in ds.forget + ds.retain]
    tokenizer = train_bpe_tokenizer(
        texts + list(ds.documents) + [d["document"] for d in ds.nonmember_docs], 320
    )
    model = train_tiny(texts, tokenizer)
    model.save_pretrained(root / "model", safe_serialization=True)
    tokenizer.save_pretrained(root / "model")
    bundle = load_unlearning_data(root / "data")
    mia = read_mia_documents(root / "data" / "mia")
    return Tiny(model, tokenizer, bundle, mia, root / "data", root / "model")


@pytest.fixture(scope="module")
def both_modes(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    kw = {"mia": tiny.mia, "mmlu_average": 0.5, "max_new_tokens": 24, "progress": False}
    fast = evaluate_semeval(
        tiny.model, tiny.tokenizer, tiny.bundle, batch_size=8, output_dir=out / "fast", **kw
    )
    official = evaluate_semeval(
        tiny.model, tiny.tokenizer, tiny.bundle, official_compat=True, output_dir=out / "official", **kw
    )
    return fast, official, out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_batched_matches_official_compat(both_modes):
    fast, official, out = both_modes
    gen_fast = _jsonl(out / "fast" / "generations.jsonl")
    gen_off = _jsonl(out / "official" / "generations.jsonl")
    assert [g["id"] for g in gen_fast] == [g["id"] for g in gen_off]
    same = sum(a["model_output"] == b["model_output"] for a, b in zip(gen_fast, gen_off))
    assert same / len(gen_fast) >= 0.99, [
        (a["model_output"], b["model_output"]) for a, b in zip(gen_fast, gen_off)
    ]
    # The scores are functions of the generations (and the MIA AUC of the NLLs checked below): identical
    # generations give identical scores. Greedy decoding of a padded batch can flip a near-tied argmax
    # (float32 logits differ by ~sqrt(V) * u * |logit| ~ 1e-5 with left padding), so up to 1 % of outputs
    # may differ; an item's score is in [0, 1] and each task term averages >= 3 items of the 12, so
    # 1 % of items moves the aggregates by at most ~0.01 / 2: 0.005.
    assert abs(fast["aggregate-score"] - official["aggregate-score"]) <= 0.005
    assert abs(fast["harmonic-mean-task-aggregate"] - official["harmonic-mean-task-aggregate"]) <= 0.005
    for a, b in zip(gen_fast, gen_off):
        # a mean token NLL, float32, padded batch vs one at a time: ~sqrt(V) * u * |logit| ~ 1e-5 per
        # token (V = 512); 1e-4 absolute
        assert a["nll"] == pytest.approx(b["nll"], abs=1e-4)
    mia_fast = _jsonl(out / "fast" / "mia.jsonl")
    mia_off = _jsonl(out / "official" / "mia.jsonl")
    for a, b in zip(mia_fast, mia_off):
        assert a["id"] == b["id"]
        for key in ("nll", "zlib_ratio", "min_k", "min_k_plus_plus"):
            assert a[key] == pytest.approx(b[key], abs=1e-4)
    assert fast["mia_loss_acc"] == pytest.approx(official["mia_loss_acc"])
    print(
        f"\n[tiny OLMo-2, {len(gen_fast)} items, 24 new tokens] generation items/s: "
        f"batched {fast['timing']['generation']['items_per_s']}, "
        f"official-compat {official['timing']['generation']['items_per_s']}"
    )


def test_generations_are_non_trivial(both_modes):
    _, _, out = both_modes
    rows = _jsonl(out / "fast" / "generations.jsonl")
    outputs = [r["model_output"] for r in rows]
    assert sum(bool(o.strip()) for o in outputs) >= len(outputs) * 0.8
    assert len(set(outputs)) >= len(outputs) // 2
    sc = [r["regurgitation_score"] for r in rows if r["kind"] == "sc"]
    assert any(s > 0.5 for s in sc), sc  # some completions reproduced


def test_results_json_keys_and_values(both_modes):
    fast, _, out = both_modes
    saved = json.loads((out / "fast" / "evaluation_results.json").read_text())
    assert [k for k in saved if k in OFFICIAL_KEYS] == OFFICIAL_KEYS
    for extra in ("mia_attacks", "timing", "config"):
        assert extra in saved
    assert set(saved["mia_attacks"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    assert saved["mia_attacks"]["loss"] == saved["mia_loss_acc"]
    for split in ("forget-set", "retain-set"):
        s = saved[split]
        assert {"overall-regurgitation-score", "overall-knowledge-score"} <= set(s)
        for task in ("Task1", "Task2", "Task3"):
            assert set(s[task]) == {"regurgitation-score", "knowledge-score"}
    assert len(saved["aggregated-terms"]) == 12
    assert saved["mia_final_score"] == pytest.approx(1 - 2 * abs(saved["mia_loss_acc"] - 0.5))
    expected = (saved["harmonic-mean-task-aggregate"] + 0.5 + saved["mia_final_score"]) / 3
    assert saved["aggregate-score"] == pytest.approx(expected)
    for stage in ("generation", "answer_nll", "mia"):
        assert saved["timing"][stage]["items"] > 0 and saved["timing"][stage]["seconds"] >= 0
    assert saved["config"]["official_compat"] is False and saved["config"]["max_new_tokens"] == 24
    line = _jsonl(out / "fast" / "evaluation_results.jsonl")
    assert line == [saved]
    assert saved == json.loads(json.dumps(fast))


def test_the_loss_auc_comes_with_its_interval_from_the_saved_losses(both_modes):
    _, _, out = both_modes
    saved = json.loads((out / "fast" / "evaluation_results.json").read_text())
    mia = _jsonl(out / "fast" / "mia.jsonl")
    ci = saved["mia_loss_auc_interval"]
    again = loss_auc_interval(
        [r["nll"] for r in mia if r["set"] == "member"], [r["nll"] for r in mia if r["set"] == "nonmember"]
    )
    assert {k: ci[k] for k in again} == again
    assert ci["auc"] == pytest.approx(saved["mia_loss_acc"], abs=1e-12)
    assert (ci["mia_score_low"], ci["mia_score_high"]) == mia_score_range(ci["low"], ci["high"])
    assert ci["mia_score_low"] <= saved["mia_final_score"] + 1e-12 <= ci["mia_score_high"] + 2e-12
    report = (out / "fast" / "report.md").read_text()
    assert f"95 % interval {ci['low']:.4f}-{ci['high']:.4f}" in report
    assert f"(95 % interval {ci['low']:.3f}-{ci['high']:.3f})" in summary_text(saved)


def test_generation_and_mia_rows(both_modes, tiny):
    _, _, out = both_modes
    rows = _jsonl(out / "fast" / "generations.jsonl")
    assert len(rows) == len(tiny.bundle.forget) + len(tiny.bundle.retain)
    for r in rows:
        assert {
            "id",
            "task",
            "split",
            "input",
            "expected_output",
            "model_output",
            "kind",
            "regurgitation_score",
            "rouge1_recall",
            "knowledge_score",
            "nll",
        } <= set(r)
        if r["kind"] == "sc":
            assert 0 <= r["regurgitation_score"] <= 1 and 0 <= r["rouge1_recall"] <= 1
            assert r["knowledge_score"] is None
        else:
            assert r["kind"] == "qa" and r["knowledge_score"] in (0, 1) and r["regurgitation_score"] is None
        assert r["nll"] > 0
    mia = _jsonl(out / "fast" / "mia.jsonl")
    assert [m["set"] for m in mia] == ["member"] * 3 + ["nonmember"] * 3
    for m in mia:
        assert {"id", "set", "nll", "n_tokens", "zlib_ratio", "min_k", "min_k_plus_plus"} <= set(m)
        assert m["n_tokens"] > 1 and m["nll"] > 0


def test_report_and_plots(both_modes):
    _, _, out = both_modes
    report = (out / "fast" / "report.md").read_text(encoding="utf-8")
    for needle in (
        "## Aggregate",
        "## Scores per split and task",
        "| forget | Task1 |",
        "## Membership inference",
        "Min-K%++",
        "## MMLU",
        "## Examples",
        "## Timing",
    ):
        assert needle in report
    for name in ("semeval_scores.png", "mia_nll.png"):
        data = (out / "fast" / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_nll_passes_match_official_definitions(tiny):
    recs = tiny.bundle.forget[:4]
    inputs, outputs = [r.input for r in recs], [r.output for r in recs]
    nll = answer_nll(tiny.model, tiny.tokenizer, inputs, outputs, batch_size=3, progress=False)
    for r, v in zip(recs, nll):  # the organizers' recipe, by hand
        q = tiny.tokenizer(r.input, return_tensors="pt").input_ids
        qa = tiny.tokenizer(r.input + r.output, return_tensors="pt").input_ids
        labels = qa.clone()
        labels[:, : q.shape[1]] = -100
        with torch.no_grad():
            # the same float32 forward, batched (padding) vs alone: ~sqrt(V) * u * |logit| ~ 1e-5 per token
            assert v == pytest.approx(tiny.model(qa, labels=labels).loss.item(), abs=1e-5)
    docs = [d["document"] for d in tiny.mia[0]]
    stats = document_statistics(tiny.model, tiny.tokenizer, docs, batch_size=2, progress=False)
    for d, st in zip(docs, stats):
        ids = tiny.tokenizer(d, return_tensors="pt").input_ids
        with torch.no_grad():
            assert st["nll"] == pytest.approx(tiny.model(ids, labels=ids).loss.item(), abs=1e-5)
        assert st["n_tokens"] == ids.shape[1] - 1


def test_batch_size_does_not_change_generations(tiny):
    prompts = [r.input for r in tiny.bundle.retain]
    a = greedy_generate(tiny.model, tiny.tokenizer, prompts, max_new_tokens=12, batch_size=1, progress=False)
    b = greedy_generate(tiny.model, tiny.tokenizer, prompts, max_new_tokens=12, batch_size=5, progress=False)
    assert a == b


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_finished_rows_leave_the_batch_without_changing_generations(tiny, batch_size):
    """The default loop drops a row from its batch at EOS; the tokens are those of generate() on the
    whole batch and of the organizers' one-at-a-time generate() (greedy: exact equality)."""
    from llm_unlearn.evaluation.passes import batched

    prompts = [r.input for r in tiny.bundle.forget + tiny.bundle.retain]
    kw = dict(max_new_tokens=40, batch_size=batch_size, progress=False)
    calls = []
    real = batched._greedy_batch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched, "_greedy_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
        fast = greedy_generate(tiny.model, tiny.tokenizer, prompts, **kw)
    assert calls  # the early-stopping loop ran
    whole = greedy_generate(tiny.model, tiny.tokenizer, prompts, early_stop=False, **kw)
    one = greedy_generate(tiny.model, tiny.tokenizer, prompts, official_compat=True, **kw)
    assert fast == whole == one
    lengths = [len(tiny.tokenizer(g, add_special_tokens=False).input_ids) for g in fast]
    assert min(lengths) < 20 <= max(lengths) or len(set(lengths)) > 1  # rows finish at different steps


def test_a_generation_config_with_processors_uses_generate(tiny, monkeypatch):
    from llm_unlearn.evaluation.passes import batched

    cfg = tiny.model.generation_config
    monkeypatch.setattr(cfg, "repetition_penalty", 1.3)
    monkeypatch.setattr(batched, "_greedy_batch", lambda *a, **k: pytest.fail("must use generate()"))
    prompts = [r.input for r in tiny.bundle.retain]
    kw = dict(max_new_tokens=10, progress=False)
    assert greedy_generate(tiny.model, tiny.tokenizer, prompts, batch_size=4, **kw) == greedy_generate(
        tiny.model, tiny.tokenizer, prompts, official_compat=True, **kw
    )


def test_unscorable_ids_warn_and_give_no_aggregate(tiny):
    bundle = DataBundle(
        forget=[Record("forget-0", "Nisha Ondow was", " an architect", None, "forget")],
        retain=[Record("retain-0", "The", " end", None, "retain")],
    )
    res = evaluate_semeval(tiny.model, tiny.tokenizer, bundle, max_new_tokens=4, progress=False)
    assert res["aggregated-terms"] == [] and res["harmonic-mean-task-aggregate"] is None
    assert res["aggregate-score"] == -1
    assert any("not scored" in w for w in res["warnings"])


# ------------------------------------------------------------------------------------------ CLI
def _run_cli(argv, capsys):
    from llm_unlearn.cli import main

    rc = main(argv)
    return rc, capsys.readouterr()


def test_cli_evaluate(tiny, tmp_path, capsys, caplog):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"average_acc": 0.30}))
    out = tmp_path / "out"
    rc, cap = _run_cli(
        [
            "evaluate",
            "--model",
            str(tiny.model_dir),
            "--data",
            str(tiny.data_dir),
            "--mia-data",
            str(tiny.data_dir / "mia"),
            "--mmlu-metrics",
            str(metrics),
            "--output-dir",
            str(out),
            "--max-new-tokens",
            "8",
            "--limit",
            "4",
            "--batch-size",
            "3",
            "--no-progress",
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        capsys,
    )
    assert rc == 0, cap.err
    res = json.loads((out / "evaluation_results.json").read_text())
    assert res["mmlu_average"] == 0.30 and res["aggregate-score"] != -1
    # --limit 4 takes whole units (data/slices.py): one forget unit of 5 records and its 1 member document
    assert res["config"]["limit"] == 4 and res["config"]["n_forget"] == 5 and res["config"]["n_members"] == 1
    assert any("below the threshold 0.371" in w for w in res["warnings"])  # a warning, not a failure
    assert "below the threshold 0.371" in caplog.text
    assert "aggregate score" in cap.out
    assert len(_jsonl(out / "generations.jsonl")) == 10
    summary = json.loads((out / "semeval_summary.json").read_text())  # the shape shared with TOFU / MUSE
    assert summary["headline"]["aggregate-score"] == res["aggregate-score"]
    assert summary["n_items"]["forget"] == res["config"]["n_forget"]

    # the same model with a fresh LoRA adapter (B = 0: a no-op), evaluated without merging
    from llm_unlearn.modeling import apply_lora, load_model_and_tokenizer

    base, _ = load_model_and_tokenizer(str(tiny.model_dir), device="cpu", dtype="float32")
    apply_lora(base, r=4, alpha=8, target_modules=["q_proj", "v_proj"]).save_pretrained(tmp_path / "adapter")
    out2 = tmp_path / "out-adapter"
    rc, cap = _run_cli(
        [
            "evaluate",
            "--model",
            str(tiny.model_dir),
            "--adapter",
            str(tmp_path / "adapter"),
            "--data",
            str(tiny.data_dir),
            "--output-dir",
            str(out2),
            "--max-new-tokens",
            "8",
            "--limit",
            "4",
            "--no-progress",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert rc == 0, cap.err
    res2 = json.loads((out2 / "evaluation_results.json").read_text())
    assert res2["config"]["adapter"] == str(tmp_path / "adapter")
    assert res2["aggregate-score"] == -1 and "mia_loss_acc" not in res2
    assert [g["model_output"] for g in _jsonl(out2 / "generations.jsonl")] == [
        g["model_output"] for g in _jsonl(out / "generations.jsonl")
    ]


def test_cli_evaluate_user_errors(tiny, tmp_path, capsys):
    base = ["evaluate", "--model", str(tiny.model_dir), "--output-dir", str(tmp_path / "o"), "--no-progress"]
    rc, cap = _run_cli(base + ["--data", str(tmp_path / "missing")], capsys)
    assert rc == 2 and cap.err.strip().startswith("error:") and "not found" in cap.err
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"acc": 0.5}))
    rc, cap = _run_cli(base + ["--data", str(tiny.data_dir), "--mmlu-metrics", str(bad)], capsys)
    assert rc == 2 and "average_acc" in cap.err
    rc, cap = _run_cli(base + ["--data", str(tiny.data_dir), "--mia-data", str(tmp_path)], capsys)
    assert rc == 2 and "member.jsonl" in cap.err
    assert not (tmp_path / "o" / "evaluation_results.json").exists()


@pytest.mark.slow
def test_demo_size_model_batched_matches_official(tmp_path):
    """The demo's model size (hidden 128, 4 layers), fp32 on CPU, on the default synthetic set."""
    ds = make_synthetic_dataset(seed=0)
    write_synthetic_dataset(ds, tmp_path / "data")
    texts = [r["input"] + " " + r["output"] for r in ds.forget + ds.retain]
    tokenizer = train_bpe_tokenizer(
        texts + list(ds.documents) + [d["document"] for d in ds.nonmember_docs], 1024
    )
    model = train_tiny(texts, tokenizer, hidden=128, layers=4, steps=60, lr=3e-3)
    bundle = load_unlearning_data(tmp_path / "data")
    mia = read_mia_documents(tmp_path / "data" / "mia")
    kw = {"mia": mia, "mmlu_average": 0.5, "max_new_tokens": 48, "progress": False}
    fast = evaluate_semeval(model, tokenizer, bundle, batch_size=32, output_dir=tmp_path / "fast", **kw)
    official = evaluate_semeval(
        model, tokenizer, bundle, official_compat=True, output_dir=tmp_path / "off", **kw
    )
    a = _jsonl(tmp_path / "fast" / "generations.jsonl")
    b = _jsonl(tmp_path / "off" / "generations.jsonl")
    same = sum(x["model_output"] == y["model_output"] for x, y in zip(a, b))
    assert same / len(a) >= 0.99
    assert (
        abs(fast["aggregate-score"] - official["aggregate-score"]) <= 0.005
    )  # as in test_batched_matches_...
    print(
        f"\n[demo-size OLMo-2, {len(a)} items, 48 new tokens] generation items/s: "
        f"batched {fast['timing']['generation']['items_per_s']}, "
        f"official-compat {official['timing']['generation']['items_per_s']}"
    )


def test_real_semeval_records_end_to_end(tiny, semeval_dir, tmp_path):
    bundle = load_unlearning_data(semeval_dir, split="train")
    bundle.forget, bundle.retain = bundle.forget[:3], bundle.retain[:3]
    res = evaluate_semeval(
        tiny.model,
        tiny.tokenizer,
        bundle,
        max_new_tokens=4,
        batch_size=4,
        output_dir=tmp_path,
        progress=False,
    )
    rows = _jsonl(tmp_path / "generations.jsonl")
    assert rows[0]["id"].startswith('"2ebbbb06') and rows[0]["kind"] == "sc" and rows[1]["kind"] == "qa"
    assert all(r["kind"] in ("sc", "qa") for r in rows)
    # a slice of the real data: only the small-count warnings of the sanity checks
    assert all("fewer than" in w for w in res["warnings"]) and res["aggregate-score"] == -1
