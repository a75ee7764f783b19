"""Every method trains end to end on the tiny memorized model (the run's real path: config with the
method's defaults, prepare, trainer, chunk loop, outputs) and moves the forget set as its paper says:
the forget answers' NLL rises, and the retain answers' NLL stays within a stated bound.

Bounds. The target model has memorized both sets (answer NLL ~0.05). A method "forgets" here when the
forget NLL at least doubles and rises by >= FORGET_RISE nats. The retain bound is RETAIN_MAX nats for
methods that keep a retain term: an NLL of 1.5 is still far below what the memorized answers would
cost a model that never saw them (the untrained tiny model's answer NLL is ~ln(512) = 6.2) -- it says
the retain set stays memorized, not that it is untouched. Gradient ascent has no retain term and is
allowed to destroy the retain set (the known failure the other methods fix); the test records it.
"""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.config import build_config
from llm_unlearn.data.tokenize import tokenize_records
from llm_unlearn.train.loop import run_unlearning
from llm_unlearn.train.methods import OBJECTIVES

FORGET_RISE = 0.5
RETAIN_MAX = 1.5
NO_RETAIN_TERM = {"gradient_ascent", "undial", "ce_u"}  # by their papers' defaults (retain weight 0)
# RMU's retain term matches one layer's activations, not the output distribution: the answers' NLL may
# drift further before that term notices (measured 2.1 here); still far below an unseen answer's ~6
RETAIN_MAX_OF = {"rmu": 3.0}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def answer_nll(model, tok, records) -> float:
    """Mean NLL of the answer tokens (full forward, one row at a time: independent of the batching)."""
    rows = tokenize_records(tok, records, add_eos=True)
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            lab = torch.tensor(r["labels"][1:])
            logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            m = lab.ne(-100)
            total += float(-logp[m].gather(-1, lab[m][:, None]).sum())
            count += int(m.sum())
    return total / count


@pytest.fixture(scope="module")
def before(tiny_world):
    m, tok, ds = tiny_world["make_model"](), tiny_world["tokenizer"], tiny_world["ds"]
    return answer_nll(m, tok, ds.forget), answer_nll(m, tok, ds.retain)


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_method_forgets_and_keeps_retain(tiny_world, before, tmp_path, method):
    """Through the command line, as a user runs it: `llm-unlearn train --method NAME`."""
    from peft import PeftModel

    from llm_unlearn.cli import main

    out = tmp_path / method
    argv = [
        "--quiet",
        "train",
        "--model",
        str(tiny_world["model_dir"]),
        "--data",
        str(tiny_world["data_dir"]),
    ]
    argv += ["--output-dir", str(out), "--method", method, "--add-eos", "--lr", "5e-3", "--batch-size", "8"]
    argv += [
        "--chunk-size",
        "100",
        "--epochs",
        "3",
        "--calibration",
        "off",
        "--no-merge",
        "--no-plots",
        "--no-progress",
    ]
    if method == "altpo":
        argv += ["--alternatives", "retain"]
    assert main(argv) == 0
    if method in ("idk_dpo", "altpo"):  # both log-ratios are in the training log, beside the DPO term
        import json

        rows = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
        assert all({"dpo", "dpo_forget_logratio", "dpo_alt_logratio"} <= set(r) for r in rows if "loss" in r)
        # the margin the DPO loss widens is alt - forget: it grew over the run
        margins = [r["dpo_alt_logratio"] - r["dpo_forget_logratio"] for r in rows if "loss" in r]
        assert margins[-1] > margins[0]
    model = PeftModel.from_pretrained(tiny_world["make_model"](), str(out / "adapter"))
    tok, ds = tiny_world["tokenizer"], tiny_world["ds"]
    f0, r0 = before
    f1, r1 = answer_nll(model, tok, ds.forget), answer_nll(model, tok, ds.retain)
    print(f"{method}: forget NLL {f0:.3f} -> {f1:.3f}, retain NLL {r0:.3f} -> {r1:.3f}")
    assert math.isfinite(f1) and math.isfinite(r1)
    assert f1 >= 2 * f0 and f1 - f0 >= FORGET_RISE, f"{method} did not forget: {f0:.3f} -> {f1:.3f}"
    if method not in NO_RETAIN_TERM:
        assert r1 <= RETAIN_MAX_OF.get(method, RETAIN_MAX), (
            f"{method} lost the retain set: {r0:.3f} -> {r1:.3f}"
        )


@pytest.mark.parametrize(
    ("method", "sequential"), [("npo_rt_div", True), ("simnpo", False), ("undial", True)]
)
def test_full_finetuning_with_a_frozen_reference(tiny_world, before, tmp_path, method, sequential):
    """lora.enabled false: every weight trains and the reference is a frozen copy of the starting model
    (cached when it fits); with the chunked schedule and without it."""
    from safetensors.torch import load_file

    out = tmp_path / f"full-{method}"
    over = {
        "model.name_or_path": str(tiny_world["model_dir"]),
        "data.data": str(tiny_world["data_dir"]),
        "data.add_eos": True,
        "train.output_dir": str(out),
        "train.learning_rate": 1e-3,
        "train.batch_size": 8,
        "train.plots": False,
        "train.progress": False,
        "schedule.chunk_size": 10,
        "schedule.sequential": sequential,
        "schedule.epochs": 2,
        "calibration.mode": "off",
        "objective.method": method,
        "lora.enabled": False,
    }
    summary = run_unlearning(build_config(overrides=over))
    model, tok, ds = summary["model"], tiny_world["tokenizer"], tiny_world["ds"]
    assert not hasattr(model, "peft_config") and all(p.requires_grad for p in model.parameters())
    assert (out / "model" / "model.safetensors").is_file() and not (out / "adapter").exists()
    saved = load_file(str(out / "model" / "model.safetensors"))
    start = tiny_world["make_model"]().state_dict()
    assert any(not torch.equal(saved[k], start[k]) for k in saved if k in start)  # the weights moved
    f0, _ = before
    assert answer_nll(model, tok, ds.forget) - f0 >= FORGET_RISE


@pytest.mark.parametrize("full", [False, True])
def test_rmu_trains_only_its_layers(tiny_world, tmp_path, full):
    """RMU (WMDP) trains the MLP output projection of the steered layer and the two below it: with LoRA
    the adapters sit there only; under full fine-tuning only those weights move."""
    over = {
        "model.name_or_path": str(tiny_world["model_dir"]),
        "data.data": str(tiny_world["data_dir"]),
        "train.output_dir": str(tmp_path / "rmu"),
        "train.merge": False,
        "train.plots": False,
        "train.progress": False,
        "schedule.chunk_size": 100,
        "schedule.epochs": 1,
        "calibration.mode": "off",
        "objective.method": "rmu",
        "lora.enabled": not full,
    }
    cfg = build_config(overrides=over)
    assert cfg.lora.target_modules == ["down_proj"]  # the method's default
    model = run_unlearning(cfg)["model"]
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.0.mlp.down_proj." in n for n in trained), trained  # 2 layers: layer 0
