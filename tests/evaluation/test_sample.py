"""`llm-unlearn sample`: seeded item choice, side-by-side generations, Markdown/JSONL/terminal output."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from llm_unlearn.data.records import load_unlearning_data
from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
from llm_unlearn.evaluation.passes.inference import greedy_generate
from llm_unlearn.evaluation.sample import (
    jsonl_path_for,
    render_markdown,
    render_text_table,
    run_sample,
    sample_records,
)
from llm_unlearn.modeling import apply_lora
from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    ds = make_synthetic_dataset(n_entities_per_task=2, seed=1)
    write_synthetic_dataset(ds, root / "data")
    tok = train_bpe_tokenizer([r["input"] + " " + r["output"] for r in ds.forget + ds.retain], 300)
    model = build_tiny_olmo2(
        tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1
    ).eval()
    base = build_tiny_olmo2(
        tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=2
    ).eval()
    return root, tok, model, base, load_unlearning_data(root / "data")


def test_sample_records_seeded_per_split_and_task(setup):
    _, _, _, _, bundle = setup
    a = sample_records(bundle, n=2, seed=0)
    assert [r.id for r in a] == [r.id for r in sample_records(bundle, n=2, seed=0)]
    assert Counter((r.split, r.task) for r in a) == {
        (s, t): 2 for s in ("forget", "retain") for t in ("Task1", "Task2", "Task3")
    }
    assert [r.split for r in a][:6] == ["forget"] * 6
    assert [r.id for r in a] != [r.id for r in sample_records(bundle, n=2, seed=1)]
    everything = len(bundle.forget) + len(bundle.retain)
    assert len(sample_records(bundle, n=100)) == everything  # n is capped at the group size
    with pytest.raises(ValueError):
        sample_records(bundle, n=0)


def test_run_sample_with_base_model_writes_md_and_jsonl(setup, tmp_path):
    _, tok, model, base, bundle = setup
    out = tmp_path / "sample.md"
    rows = run_sample(
        model, tok, bundle, base_model=base, n=1, seed=3, max_new_tokens=6, output=out, progress=False
    )
    assert len(rows) == 6
    prompts = [r["input"] for r in rows]
    assert [r["unlearned_output"] for r in rows] == greedy_generate(
        model, tok, prompts, max_new_tokens=6, progress=False
    )
    assert [r["base_output"] for r in rows] == greedy_generate(
        base, tok, prompts, max_new_tokens=6, progress=False
    )
    for r in rows:
        assert {
            "id",
            "task",
            "split",
            "kind",
            "input",
            "expected_output",
            "base_output",
            "base_score",
            "unlearned_output",
            "unlearned_score",
        } <= set(r)
    saved = [json.loads(line) for line in jsonl_path_for(out).read_text().splitlines()]
    assert saved == json.loads(json.dumps(rows))
    md = out.read_text()
    assert md.startswith("# Sample generations") and "## forget / Task1" in md and "## retain / Task3" in md
    assert (
        "| id | kind | input | expected | base output | base score | unlearned output | unlearned score |"
        in md
    )
    assert rows[0]["expected_output"].replace("|", "\\|") in md
    table = render_text_table(rows, width=120)
    for head in ("input", "expected", "base output", "unlearned output"):
        assert head in table
    assert all(len(line) <= 122 for line in table.splitlines())


def test_base_is_the_same_model_with_adapter_disabled(setup):
    _, tok, model, _, bundle = setup
    import copy

    peft_model = apply_lora(copy.deepcopy(model), r=4, alpha=16, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():  # make the adapter do something
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.eval()
    rows = run_sample(peft_model, tok, bundle, base_model=peft_model, n=1, max_new_tokens=6, progress=False)
    prompts = [r["input"] for r in rows]
    assert [r["base_output"] for r in rows] == greedy_generate(
        model, tok, prompts, max_new_tokens=6, progress=False
    )
    assert [r["base_output"] for r in rows] != [r["unlearned_output"] for r in rows]
    md = render_markdown(rows)
    assert "base output" in md


def test_cli_sample(setup, tmp_path, capsys):
    from llm_unlearn.cli import main

    root, tok, model, base, _ = setup
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    tok.save_pretrained(tmp_path / "m")
    base.save_pretrained(tmp_path / "b", safe_serialization=True)
    tok.save_pretrained(tmp_path / "b")
    out = tmp_path / "s" / "out.md"
    rc = main(
        [
            "sample",
            "--model",
            str(tmp_path / "m"),
            "--base-model",
            str(tmp_path / "b"),
            "--data",
            str(root / "data"),
            "--n",
            "1",
            "--seed",
            "0",
            "--max-new-tokens",
            "5",
            "--output",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert out.is_file() and (tmp_path / "s" / "out.jsonl").is_file()
    assert "unlearned output" in cap.out and "base output" in cap.out and "expected" in cap.out
    rows = [json.loads(line) for line in (tmp_path / "s" / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("base_output" in r for r in rows)
    # without a base model: no base column
    rc = main(
        [
            "sample",
            "--model",
            str(tmp_path / "m"),
            "--data",
            str(root / "data"),
            "--max-new-tokens",
            "3",
            "--output",
            str(tmp_path / "s2.md"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0 and "base output" not in cap.out
