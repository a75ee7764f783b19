"""The attack stage end to end (CLI, every benchmark, output policy), the quantized evaluation against an
independent re-quantization with plain bitsandbytes, int8 against bitsandbytes, probes and templates."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from attack_models import FORGET, RETAIN, context

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "evaluation"))
from test_tofu_muse import make_muse_dir, make_tofu_dir  # noqa: E402

needs_bnb = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed (the quant extra)"
)


def _lora(model, seed=0):
    """``model`` (a copy) with a LoRA adapter whose B is not 0, so that merging changes the weights."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return get_peft_model(copy.deepcopy(model), cfg).eval()


@needs_bnb
def test_independent_requantization_gives_the_suites_generations(attack_tok, memorized):
    """Merge with PEFT, round every decoder linear with bitsandbytes' own NF4 calls, generate with
    ``model.generate``: no project code. The suite's quantized evaluation generates the same texts."""
    import bitsandbytes.functional as F

    from llm_unlearn.attacks.quantization import quantize_model

    unlearned = _lora(memorized)
    ind = copy.deepcopy(unlearned).merge_and_unload()
    with torch.no_grad():
        for name, mod in ind.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                q, st = F.quantize_4bit(mod.weight.data.float().contiguous(), blocksize=64, quant_type="nf4")
                mod.weight.data = F.dequantize_4bit(q, st, blocksize=64, quant_type="nf4")
    ind.eval()
    expected = []
    for _, prompt, _ in FORGET:
        ids = attack_tok(prompt, return_tensors="pt").input_ids
        out = ind.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=attack_tok.pad_token_id)
        expected.append(attack_tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    ctx = context(attack_tok, memorized, unlearned)
    rows = ctx.score_all("q", quantize_model(unlearned, "nf4"), "q")["forget"]
    assert [r["generation"] for r in rows] == expected
    plain = ctx.score_all("u", unlearned, "u")["forget"]
    assert any(a["nll"] != b["nll"] for a, b in zip(rows, plain))  # the rounding did change the model


@needs_bnb
def test_int8_roundtrip_is_bitsandbytes_row_wise_absmax():
    import bitsandbytes.functional as F

    from llm_unlearn.attacks.quantization import int8_roundtrip

    torch.manual_seed(0)
    w = torch.randn(16, 40) * torch.rand(16, 1) * 3
    w[3] = 0.0
    q, stats, _ = F.int8_vectorwise_quant(w, threshold=0.0)
    ref = F.int8_vectorwise_dequant(q, stats)
    ref = torch.nan_to_num(ref)
    assert torch.allclose(int8_roundtrip(w), ref.reshape(w.shape), rtol=1e-6, atol=1e-7)
    # brute force in float64: per row round(127 w / absmax) * absmax / 127
    w64 = w.double()
    am = w64.abs().amax(1, keepdim=True).clamp_min(1e-300)
    assert torch.allclose(int8_roundtrip(w).double(), torch.round(w64 * 127 / am) * am / 127, atol=1e-6)


def test_preceding_sentence_and_templates():
    from llm_unlearn.attacks.probes import Probe, preceding_sentence
    from llm_unlearn.attacks.prompts import PREFIX, TEMPLATES, template_prompts

    doc = "Mira lived in Oslo. She built boats. In 1990 she sailed to Lima and stayed."
    assert preceding_sentence(doc, "In 1990 she sailed to") == "She built boats."
    assert preceding_sentence(doc, "Mira lived in") is None
    assert preceding_sentence(doc, "not in the document") is None
    sc = Probe("In 1990 she sailed to", " Lima and stayed.", "u1", "completion", "She built boats.")
    qa = Probe("Where did Mira live?", " Oslo.", "u1", "qa", None, "Where did Mira live?")
    shots = [Probe("Where is Rome?", " Italy.", "r", "qa", None, "Where is Rome?")]
    got = {(i, n): t for i, n, t in template_prompts([sc, qa], shots, seed=0)}
    assert got[(0, "background_hint")] == "She built boats. In 1990 she sailed to"
    assert (1, "background_hint") not in got and (0, "rephrase_1") not in got
    assert got[(1, "prefix_injection")] == "Where did Mira live?" + PREFIX
    assert got[(1, "in_context")] == "Where is Rome? Italy.\n\nWhere did Mira live?"
    assert len([k for k in got if k[0] == 1]) == len(TEMPLATES) - 1 + 1  # all but the hint, + shots


def _save(model, tok, path):
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, attack_tok, memorized):
    from llm_unlearn.adapter import write_base_fingerprint

    root = tmp_path_factory.mktemp("attack_models")
    target = _save(memorized, attack_tok, root / "target")
    adapter = root / "adapter"
    _lora(memorized).save_pretrained(adapter)
    write_base_fingerprint(adapter, memorized, target)
    data = root / "semeval"
    data.mkdir()
    for name, rows in (("forget", FORGET), ("retain", RETAIN)):
        recs = [{"id": i, "input": p, "output": a, "task": "Task2", "split": name} for i, p, a in rows]
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return {"target": target, "adapter": str(adapter), "semeval": str(data), "root": root}


def _tofu_dir(root: Path) -> Path:
    """The TOFU test directory with 22 forget questions: two authors (TOFU: 20 questions each)."""
    d = make_tofu_dir(root)
    rows = [json.loads(line) for line in (d / "forget01_perturbed.jsonl").read_text().splitlines()]
    rows = [{**rows[i % 2], "question": f"{rows[i % 2]['question']} ({i})"} for i in range(22)]
    (d / "forget01_perturbed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = [{"question": r["question"], "answer": r["answer"]} for r in rows]
    (d / "forget01.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    return d


FAST = ["--relearn-steps", "2", "--attack-max-new-tokens", "8", "--no-progress"]


@pytest.mark.parametrize("bench", ["semeval", "tofu", "muse"])
def test_attack_command_runs_all_four_attacks_on_every_benchmark(saved, tmp_path, bench, capsys):
    from llm_unlearn.cli import main
    from llm_unlearn.outputs import manifest

    data = {
        "semeval": saved["semeval"],
        "tofu": str(_tofu_dir(tmp_path / "tofu")),
        "muse": str(make_muse_dir(tmp_path / "muse")),
    }[bench]
    extra = {
        "tofu": ["--forget-split", "forget01"],
        "semeval": ["--never-trained-model", saved["target"]],
    }.get(bench, [])
    out = tmp_path / "out"
    argv = [
        "attack",
        "--model",
        saved["target"],
        "--adapter",
        saved["adapter"],
        "--benchmark",
        bench,
        "--data",
        data,
        "--output-dir",
        str(out),
        *extra,
        *FAST,
    ]
    assert main(argv) == 0
    summary = json.loads((out / "attack_summary.json").read_text())
    assert set(summary) == {"benchmark", "headline", "metrics", "n_items", "reference", "config"}
    assert summary["benchmark"] == bench and summary["config"]["stage"] == "attacks"
    attacks = summary["metrics"]["attacks"]
    assert {"quantization_int8", "relearning", "prompts", "logit_lens"} <= set(attacks)
    for a in attacks.values():
        for row in a["recovery"].values():
            assert (row["recovery"] is None) == (row["undefined"] is not None)
            if row["recovery"] is not None:
                assert 0.0 <= row["recovery"] <= 1.0
    if bench == "semeval":  # a never-trained model given: relearning and the prompt floor have it
        assert "never_trained_best" in attacks["prompts"]
        assert attacks["relearning"]["never_trained"]["after"]["forget_rouge"] is not None
        assert "never_trained" in attacks["logit_lens"]["per_model"]
    timing = json.loads((out / "attack_timing.json").read_text())
    assert {"baseline", "quantization", "relearning", "prompts", "logit_lens"} <= set(timing)
    assert (out / "plots" / "attack_recovery.png").stat().st_size > 0
    assert "recovery" in (out / "report.md").read_text()
    assert {"attack_summary.json", "report.md", "plots"} <= manifest(out)
    assert main(argv) == 0  # a rerun replaces its own outputs
    capsys.readouterr()


def test_evaluate_with_attacks_and_one_line_errors(saved, tmp_path, capsys):
    from llm_unlearn.cli import main

    base = [
        "--model",
        saved["target"],
        "--adapter",
        saved["adapter"],
        "--benchmark",
        "semeval",
        "--data",
        saved["semeval"],
    ]
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                *base,
                "--output-dir",
                str(out),
                "--attacks",
                "prompts,logit_lens",
                "--max-new-tokens",
                "8",
                *FAST,
            ]
        )
        == 0
    )
    assert (out / "semeval_summary.json").is_file()
    summary = json.loads((out / "attacks" / "attack_summary.json").read_text())
    assert set(summary["metrics"]["attacks"]) == {"prompts", "logit_lens"}
    capsys.readouterr()
    bad = [
        (
            ["attack", *base, "--attacks", "quantization,bogus", "--output-dir", str(tmp_path / "o1")],
            "--attacks: unknown bogus",
        ),
        (
            [
                "attack",
                "--model",
                saved["target"],
                "--benchmark",
                "semeval",
                "--data",
                saved["semeval"],
                "--output-dir",
                str(tmp_path / "o2"),
            ],
            "--target-model",
        ),
        (
            ["evaluate", *base, "--relearn-steps", "3", "--output-dir", str(tmp_path / "o3")],
            "--relearn-steps needs --attacks",
        ),
    ]
    for argv, words in bad:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and words in err[-1], err
        assert not (tmp_path / argv[-1]).exists()


def test_semeval_probes_units_kinds_hints_and_the_joiner():
    from types import SimpleNamespace

    from llm_unlearn.attacks.probes import probes_from
    from llm_unlearn.data.fields import Record

    recs = [
        Record("7sc1", "In 1990 she sailed to", "Lima and stayed.", "Task1", "forget"),
        Record("7qa0", "Where did Mira live?", "Oslo.", "Task1", "forget"),
        Record("8sc1", "Ben Holt", "was a smith.", "Task1", "forget"),
    ]
    members = [
        {
            "id": "7",
            "document": "Mira lived in Oslo. She built boats. In 1990 she sailed to Lima and stayed.",
        },
        {"id": "8sc1", "document": "Ben Holt was a smith."},
    ]
    data = SimpleNamespace(bundle=SimpleNamespace(forget=recs, retain=recs[1:2]), mia=(members, []))
    ps = probes_from("semeval", data)
    assert [(p.unit, p.kind, p.hint) for p in ps.forget] == [
        ("7", "completion", "She built boats."),
        ("7", "qa", None),
        ("8", "completion", None),  # the prompt starts its document: no preceding sentence
    ]
    assert ps.forget[0].answer == " Lima and stayed." and ps.forget[1].question == "Where did Mira live?"
    assert ps.units() == ["7", "8"]
    assert any("1 of 2 completion items have a background hint" in n for n in ps.notes)
