"""finetune: memorization until a criterion, a saved model that `train` accepts,
LoRA + merge, documents and slicing, one-line user errors, and the GGUF quantization marker."""

from __future__ import annotations

import json

import pytest
import torch

from llm_unlearn import cli
from llm_unlearn.finetune import finetune, read_documents

TINY = {"tiny_hidden": 64, "tiny_layers": 2, "vocab_size": 512, "lr": 5e-3, "progress": False}


@pytest.fixture(scope="module")
def syn_data(tmp_path_factory):
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset

    root = tmp_path_factory.mktemp("ft_data")
    ds = make_synthetic_dataset(n_entities_per_task=3, seed=1)
    write_synthetic_dataset(ds, root / "data")
    return {"dir": root / "data", "ds": ds}


# ----------------------------------------------------------------------------------------- end to end
def test_finetune_until_em_reaches_the_criterion_and_train_accepts_the_model(syn_data, tmp_path, capsys):
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.finetune import memorization_scores
    from llm_unlearn.modeling import load_model_and_tokenizer

    torch.set_num_threads(1)
    out = tmp_path / "target"
    s = finetune(
        model="tiny", data=syn_data["dir"], output_dir=out, until_em=0.9, eval_items=12, epochs=120, **TINY
    )
    assert s["stopped"] == "criterion" and s["criterion_met"] is True
    hist = s["history"]
    assert hist[0]["em"] < 0.9 and hist[-1]["em"] >= 0.9 and hist[-1]["rougeL"] >= 0.9
    assert hist[-1]["mean_loss"] < hist[0]["mean_loss"]
    assert s["steps"] == hist[-1]["step"] and s["records"] == len(syn_data["ds"].forget) + len(
        syn_data["ds"].retain
    )
    assert json.loads((out / "finetune.json").read_text())["history"] == json.loads(json.dumps(hist))

    # the saved directory is a normal model: reloaded, it generates what was measured at the last epoch
    model, tok = load_model_and_tokenizer(str(out), device="cpu")
    bundle = load_unlearning_data(syn_data["dir"])
    by_id = {r.id: r for r in bundle.forget + bundle.retain}
    again = memorization_scores(model, tok, [by_id[i] for i in s["eval_ids"]], batch_size=16)
    assert again["em"] == hist[-1]["em"] and again["rougeL"] == pytest.approx(hist[-1]["rougeL"], abs=1e-12)

    # `train` accepts it as --model
    run = tmp_path / "unlearn"
    rc = cli.main(
        [
            "--quiet",
            "train",
            "--model",
            str(out),
            "--data",
            str(syn_data["dir"]),
            "--output-dir",
            str(run),
            "--limit",
            "5",
            "--chunk-size",
            "5",
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
            "--no-merge",
            "--no-plots",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["total_steps"] > 0 and (run / "adapter").is_dir()

    # a second finetune into the same directory replaces its own earlier output without --overwrite
    s2 = finetune(model="tiny", data=syn_data["dir"], output_dir=out, max_steps=2, **TINY)
    assert s2["steps"] == 2 and s2["stopped"] == "max_steps" and s2["criterion_met"] is None


def test_finetune_lora_merges_and_documents_follow_their_units(syn_data, tmp_path):
    from safetensors import safe_open

    ds = syn_data["ds"]
    docs = tmp_path / "docs.jsonl"
    rows = [{"id": d["id"], "document": d["document"]} for d in ds.member_docs]
    rows.append({"text": "A document with no id, kept by the limit rule for free documents."})
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [d["id"] for d in read_documents(docs)][-1] is None

    out = tmp_path / "lora"
    s = finetune(
        model="tiny",
        data=syn_data["dir"],
        documents=[docs],
        limit=5,
        output_dir=out,
        method="lora",
        max_steps=3,
        lora_r=2,
        lora_alpha=4,
        **TINY,
    )
    # limit 5 = one synthetic unit of forget and one of retain; the member document of the forget unit
    # comes along, other members do not; the free document is kept
    assert s["records"] == 10 and s["documents"] == 2 and s["steps"] == 3
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)


# ----------------------------------------------------------------------------------------- bad input
def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--records", "MISSING.jsonl"], "not found"),
        (["--documents", "MISSING.jsonl"], "not found"),
        ([], "no data given"),
        (["--data", "DATA", "--until-em", "1.5"], "--until-em must be in (0, 1]"),
        (["--data", "DATA", "--until-em", "0"], "--until-em must be in (0, 1]"),
        (["--data", "DATA", "--epochs", "0"], "--epochs must be positive"),
        (["--documents", "DOCS", "--until-em", "0.5"], "needs records"),
        (["--documents", "BADDOCS"], "'document' or 'text'"),
        (["--data", "DATA", "--output-dir", "FULL"], "not empty"),
    ],
)
def test_finetune_user_errors_are_one_line(syn_data, tmp_path, capsys, extra, expect):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"document": "some text"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "some text"}) + "\n")
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("user file")
    subst = {
        "MISSING.jsonl": str(tmp_path / "missing.jsonl"),
        "DATA": str(syn_data["dir"]),
        "DOCS": str(docs),
        "BADDOCS": str(bad),
        "FULL": str(full),
    }
    argv = [subst.get(a, a) for a in extra]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "out")]
    rc = cli.main(["--quiet", "finetune", "--model", "tiny", "--no-progress", *argv])
    assert rc == 2
    line = _err(capsys)
    assert line.startswith("error: ") and expect in line
    assert not (tmp_path / "out").exists()
    assert (full / "mine.txt").read_text() == "user file" and sorted(p.name for p in full.iterdir()) == [
        "mine.txt"
    ]


# ----------------------------------------------------------------------------------------- GGUF marker
def test_gguf_marker_is_cleared_so_the_trainer_accepts_the_model(tiny_tokenizer_factory):
    """What transformers leaves on a model loaded from GGUF (weights already dequantized): a GGUF
    quantizer + quantization_config; its Trainer refuses such a model until the marker is cleared."""
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training
    from transformers.utils.quantization_config import GgufConfig

    from llm_unlearn.modeling import clear_gguf_quantization
    from llm_unlearn.tiny import build_tiny_olmo2

    tok = tiny_tokenizer_factory("bos", pad=True)
    model = build_tiny_olmo2(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    assert clear_gguf_quantization(model) is False  # not GGUF: nothing to do
    quantizer = GgufHfQuantizer(GgufConfig(gguf_file="x.gguf"), pre_quantized=True)
    # what from_pretrained(gguf_file=...) does: preprocess_model's two attributes, then postprocess_model
    model.is_quantized, model.quantization_method = True, quantizer.quantization_config.quant_method
    model.hf_quantizer = quantizer
    quantizer.postprocess_model(model)
    with pytest.raises(ValueError, match="quantized"):
        validate_quantization_for_training(model)
    assert clear_gguf_quantization(model) is True
    validate_quantization_for_training(model)  # no error now
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    assert model.is_quantized is False and getattr(model, "quantization_method", None) is None
    assert not getattr(model.config, "_is_quantized", False)


def test_demo_has_no_progress_and_refuses_a_bad_limit(capsys):
    args = cli.build_parser().parse_args(["demo", "--no-progress", "--data", "d", "--limit", "40"])
    assert args.no_progress is True and args.limit == 40
    assert cli.build_parser().parse_args(["demo"]).no_progress is False
    assert cli.main(["demo", "--data", "d", "--limit", "0", "--no-progress"]) == 2
    assert _err(capsys) == "error: --limit must be positive, got 0"


def test_finetune_follows_the_output_directory_policy(tmp_path):
    """A directory with someone else's file is refused before anything loads; with --overwrite the file
    is kept; an input is never an output."""
    import subprocess
    import sys

    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(make_synthetic_dataset(n_entities_per_task=2, seed=3), data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    base = [
        sys.executable,
        "-m",
        "llm_unlearn",
        "finetune",
        "--model",
        "tiny",
        "--data",
        str(data),
        "--max-steps",
        "2",
        "--tiny-hidden",
        "32",
        "--tiny-layers",
        "1",
        "--vocab-size",
        "300",
        "--no-progress",
    ]
    r = subprocess.run(base + ["--output-dir", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "not empty" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(base + ["--output-dir", str(out), "--overwrite"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine" and (out / "finetune.json").is_file()
    r = subprocess.run(base + ["--output-dir", str(data / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "input" in r.stderr


def test_without_until_em_the_generation_check_runs_once_at_the_end(syn_data, tmp_path):
    """issue 19: the memorization check (a greedy pass over the sample) is --until-em's criterion; a
    fixed-budget run checks once, after its last epoch."""
    s = finetune(
        model="tiny", data=syn_data["dir"], output_dir=tmp_path / "t", epochs=3, eval_items=4, **TINY
    )
    checked = [row["epoch"] for row in s["history"] if "em" in row]
    assert [row["epoch"] for row in s["history"]] == [1, 2, 3] and checked == [3]


def test_a_rerun_into_its_own_directory_keeps_what_the_user_added(syn_data, tmp_path, capsys):
    """issue 18, class 3: finetune rerun into its own (marked) directory replaces only its manifest's
    entries; the user's notes and evaluation folder stay, with no --overwrite."""
    out = tmp_path / "ft"
    argv = [
        "--quiet",
        "finetune",
        "--model",
        "tiny",
        "--data",
        str(syn_data["dir"]),
        "--output-dir",
        str(out),
    ]
    argv += [
        "--epochs",
        "1",
        "--tiny-hidden",
        "32",
        "--tiny-layers",
        "1",
        "--vocab-size",
        "300",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "report.md").write_text("my evaluation")
    assert cli.main(argv) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "eval" / "report.md").read_text() == "my evaluation"
    assert (out / "finetune.json").is_file() and (out / "config.json").is_file()


def test_demo_into_a_folder_holding_the_users_data_is_refused(tmp_path, capsys):
    """issue 18, class 2: `demo --output-dir proj` where proj/ holds only the user's own data/ (the
    tool's output name) is refused before anything is written."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "forget.jsonl").write_text('{"id": "1sc1", "input": "a", "output": "b"}\n')
    before = (proj / "data" / "forget.jsonl").read_bytes()
    assert cli.main(["--quiet", "demo", "--output-dir", str(proj), "--no-progress"]) == 2
    assert "not empty and was not written" in capsys.readouterr().err
    assert (proj / "data" / "forget.jsonl").read_bytes() == before
    assert sorted(p.name for p in proj.iterdir()) == ["data"]
