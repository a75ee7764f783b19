"""``--official-compat`` selects the organizers' one-at-a-time passes (evaluation/official.py) instead of
the batched ones (evaluation/batched.py); both implementations give the same results on a tiny model."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from llm_unlearn import cli
from llm_unlearn.evaluation.passes import batched, inference, official
from llm_unlearn.evaluation.passes.inference import BATCHED, OFFICIAL, select_passes
from llm_unlearn.evaluation.passes.runtime import encode, progress_bar

PASSES = ("generate", "answer_nll", "document_statistics")


def test_the_flag_selects_an_implementation_with_one_interface():
    assert select_passes(True) is OFFICIAL and select_passes(False) is BATCHED
    assert OFFICIAL.name == "official" and BATCHED.name == "batched"
    for name in PASSES:
        assert getattr(OFFICIAL, name) is getattr(official, name)
        assert getattr(BATCHED, name) is getattr(batched, name)
        assert inspect.signature(getattr(official, name)) == inspect.signature(getattr(batched, name))


def test_both_implementations_give_the_same_results(tiny_world):
    model, tok = tiny_world["make_model"](), tiny_world["tokenizer"]
    records = (tiny_world["ds"].forget + tiny_world["ds"].retain)[:10]
    prompts = [encode(tok, r["input"]) for r in records]
    seqs = [encode(tok, r["input"] + r["output"]) for r in records]
    starts = [len(p) for p in prompts]
    docs = [encode(tok, d) for d in list(tiny_world["ds"].documents)[:4]]
    out = {}
    for impl in (BATCHED, OFFICIAL):
        with progress_bar(0, "test", False) as bar:
            kw = {"batch_size": 3, "bar": bar}
            out[impl.name] = (
                impl.generate(
                    model, tok, prompts, max_new_tokens=12, max_tokens_per_batch=None, early_stop=True, **kw
                ),
                impl.answer_nll(model, tok, seqs, starts, max_tokens_per_batch=4096, **kw),
                impl.document_statistics(model, tok, docs, k_percent=20, max_tokens_per_batch=4096, **kw),
            )
    (gen_b, nll_b, stats_b), (gen_o, nll_o, stats_o) = out["batched"], out["official"]
    assert gen_b == gen_o
    assert nll_b == pytest.approx(nll_o, rel=1e-4, abs=1e-5)
    for b, o in zip(stats_b, stats_o):
        assert b["n_tokens"] == o["n_tokens"]
        for key in ("nll", "min_k", "min_k_plus_plus"):
            assert b[key] == pytest.approx(o[key], rel=1e-4, abs=1e-5)


def test_official_compat_flag_runs_only_the_official_passes(tiny_world, tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []

    def counted(impl):
        def wrap(name):
            real = getattr(impl, name)
            return lambda *a, **k: calls.append((impl.name, name)) or real(*a, **k)

        return dataclasses.replace(impl, **{name: wrap(name) for name in PASSES})

    monkeypatch.setattr(inference, "BATCHED", counted(BATCHED))
    monkeypatch.setattr(inference, "OFFICIAL", counted(OFFICIAL))
    data = tiny_world["data_dir"]
    base = ["--quiet", "evaluate", "--model", str(tiny_world["model_dir"]), "--data", str(data)]
    base += ["--mia-data", str(data / "mia"), "--limit", "3", "--max-new-tokens", "6", "--no-progress"]
    results = {}
    for mode, extra in (("official", ["--official-compat"]), ("batched", [])):
        calls.clear()
        out = tmp_path / mode
        assert cli.main([*base, "--output-dir", str(out), *extra]) == 0
        assert sorted(calls) == sorted((mode, name) for name in PASSES)
        results[mode] = json.loads((out / "evaluation_results.json").read_text())
        assert results[mode]["config"]["official_compat"] is (mode == "official")
    for key in ("harmonic-mean-task-aggregate", "mia_loss_acc"):
        assert results["official"][key] == pytest.approx(results["batched"][key], abs=0.005)


def test_length_buckets_and_token_budget():
    from llm_unlearn.evaluation.passes.runtime import length_batches

    # a row joins a batch only when padding it adds at most max_padding of the longest row
    assert list(length_batches([10, 9, 5, 4, 1], 8, None, 0.25)) == [[0, 1], [2, 3], [4]]
    assert list(length_batches([10, 9, 5, 4, 1], 8)) == [[0, 1, 2, 3, 4]]
    assert list(length_batches([10, 9, 5, 4, 1], 8, 20, 0.25)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(length_batches([1], 1, None, 1.0))
    assert batched.token_budget(None, "cpu") == batched.TOKENS_PER_BATCH["cpu"]
    assert batched.token_budget(None, "cuda") == batched.TOKENS_PER_BATCH["default"]
    assert batched.token_budget(100, "cpu") == 100


@pytest.mark.parametrize("max_padding", [0.0, 0.9])
def test_buckets_merged_prefill_and_budgets_keep_the_results(tiny_world, monkeypatch, max_padding):
    """Prompts of very different length (so several prefill buckets are merged into one decoding batch)
    and small token budgets give the one-at-a-time results."""
    model, tok = tiny_world["make_model"](), tiny_world["tokenizer"]
    records = (tiny_world["ds"].forget + tiny_world["ds"].retain)[:6]
    docs = [encode(tok, d)[:40] for d in list(tiny_world["ds"].documents)[:3]]
    prompts = [encode(tok, r["input"]) for r in records] + [d[:n] for d, n in zip(docs, (5, 23, 40))]
    seqs = [encode(tok, r["input"] + r["output"]) for r in records] + docs
    starts = [len(encode(tok, r["input"])) for r in records] + [2, 10, 30]
    monkeypatch.setattr(batched, "MAX_PADDING", max_padding)
    with progress_bar(0, "test", False) as bar:
        kw = {"batch_size": 8, "bar": bar}
        gen_b = batched.generate(
            model, tok, prompts, max_new_tokens=10, max_tokens_per_batch=None, early_stop=True, **kw
        )
        gen_o = official.generate(
            model, tok, prompts, max_new_tokens=10, max_tokens_per_batch=None, early_stop=True, **kw
        )
        nll_o = official.answer_nll(model, tok, seqs, starts, max_tokens_per_batch=None, **kw)
        for budget in (None, 64):
            nll_b = batched.answer_nll(model, tok, seqs, starts, max_tokens_per_batch=budget, **kw)
            assert nll_b == pytest.approx(nll_o, rel=1e-4, abs=1e-5)
    assert gen_b == gen_o
