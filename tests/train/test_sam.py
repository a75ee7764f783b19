"""Sharpness-aware steps (``--sam-rho``, train/sam.py) against an independent computation.

The trainer takes one SGD step (lr, no clipping, no weight decay, no schedule) over two micro-batches
(gradient accumulation 2) of a float64 LoRA model. The independent side computes, with plain autograd
on a second copy of the same model: g = the mean of the two micro-batches' gradients, eps = rho g/||g||,
g' = the same at theta + eps, theta - lr g'. Both sides are float64 computations of the same sums in
a nearly identical order: a difference of n u |value| with n ~ 1e3 terms, u = 1.1e-16 -> rel 1e-9,
abs 1e-12 (the adapter's elements are ~1e-2, the step ~1e-3).
"""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

from conftest import collate_rows, make_lora_model, make_rows
from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.data.tokenize import AlternativesCollator, UnlearnCollator
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.sam import perturbation
from llm_unlearn.train.trainer import UnlearnTrainer

LR, RHO = 0.5, 0.05
TOL = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _rows(world):
    rows = make_rows(world, 2, 2)
    return [rows[0], rows[2], rows[1], rows[3]]  # each micro-batch of 2: one forget row, one retain row


def _train_one_step(world, tmp_path, obj, rho, trainer_cls=UnlearnTrainer, grad_accum=2, setup=None):
    pm = make_lora_model(world, dtype=torch.float64)
    rows = _rows(world)
    args = TrainingArguments(
        output_dir=str(tmp_path / "t"),
        per_device_train_batch_size=4 // grad_accum,
        gradient_accumulation_steps=grad_accum,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        num_train_epochs=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    pad = world["tokenizer"].pad_token_id
    trainer = trainer_cls(
        model=pm,
        args=args,
        train_dataset=_Rows(rows),
        data_collator=AlternativesCollator(UnlearnCollator(pad), pad),
        objective=obj,
        sam_rho=rho,
    )
    if setup is not None:
        setup(trainer)
    trainer.train()
    trainer.selector.remove()
    return pm, trainer


def _trainable(pm):
    return {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}


def _grads(pm, batches, obj, state):
    """The mean over micro-batches of the gradient of the loss (plain autograd, no selector)."""
    params = [p for p in pm.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for b in batches:
        loss, _ = unlearning_loss(pm, b, obj, None, state=dict(state))
        for t, g in zip(total, torch.autograd.grad(loss / len(batches), params, allow_unused=True)):
            if g is not None:
                t += g
    return params, total


def _independent_step(world, obj, rho, batches, state=None):
    pm = make_lora_model(world, dtype=torch.float64)
    params, g = _grads(pm, batches, obj, state or {})
    norm = torch.sqrt(sum((x.double() ** 2).sum() for x in g))
    theta = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, g):
            p += rho * x / norm
    _, g2 = _grads(pm, batches, obj, state or {})
    with torch.no_grad():
        for p, t, x in zip(params, theta, g2):
            p.copy_(t - LR * x)
    return _trainable(pm), g


def _micro_batches(world):
    rows = _rows(world)
    return [collate_rows(world, rows[0:2]), collate_rows(world, rows[2:4])]


def test_sam_step_matches_an_independent_computation(tiny_world, tmp_path):
    obj = ObjectiveOptions()  # npo_rt_div: the reference (adapter off) is live and untouched by eps
    pm, _ = _train_one_step(tiny_world, tmp_path, obj, RHO)
    want, _ = _independent_step(tiny_world, obj, RHO, _micro_batches(tiny_world))
    got = _trainable(pm)
    for n in want:
        torch.testing.assert_close(got[n], want[n], **TOL)
    # and it is not the plain step
    plain, _ = _train_one_step(tiny_world, tmp_path, obj, 0.0)
    base = _trainable(plain)
    moved = sum(float((got[n] - base[n]).norm()) for n in got)
    assert moved > 1e-6, "SAM changed nothing against the plain step"


def test_rho_zero_is_the_plain_trainer_step_bit_for_bit(tiny_world, tmp_path):
    class PlainStep(UnlearnTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            return Trainer.training_step(self, model, inputs, num_items_in_batch)

    obj = ObjectiveOptions()
    a, _ = _train_one_step(tiny_world, tmp_path, obj, 0.0)
    b, _ = _train_one_step(tiny_world, tmp_path, obj, 0.0, trainer_cls=PlainStep)
    ta, tb = _trainable(a), _trainable(b)
    assert all(torch.equal(ta[n], tb[n]) for n in ta)


def test_perturbation_is_rho_along_the_normalized_gradient():
    p1, p2, p3 = (torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    p1.grad = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    p2.grad = torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64)
    eps = perturbation([p1, p2, p3], 0.5)  # p3 has no gradient: eps 0
    torch.testing.assert_close(eps[0], torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64), **TOL)
    torch.testing.assert_close(eps[1], torch.tensor([0.0, 0.4, 0.0], dtype=torch.float64), **TOL)
    assert torch.equal(eps[2], torch.zeros(3, dtype=torch.float64))
    p1.grad.zero_()
    p2.grad.zero_()
    assert perturbation([p1, p2], 0.5) is None  # ||g|| = 0: no second pass


def test_sam_replays_the_first_pass_gate_and_state(tiny_world, tmp_path):
    """A gated forget row stays gated in the second pass, and PDU's multiplier: the second pass uses the
    multiplier its first pass used and does not update it again (one update per micro-batch)."""
    obj = ObjectiveOptions(
        method="pdu", divergence_weight=0.0, pdu_dual_warmup_epochs=0.0, pdu_retain_eps=0.0
    )
    gated_key = 0  # the first micro-batch's forget row

    def gate(trainer):
        trainer.forget_active = {gated_key: False}

    pm, trainer = _train_one_step(tiny_world, tmp_path, obj, RHO, setup=gate)
    batches = _micro_batches(tiny_world)
    batches[0]["forget_active"] = batches[0]["row_key"] != gated_key
    # the independent side: micro-batch 1 with the initial multiplier, micro-batch 2 with the updated one
    state1: dict = {}
    unlearning_loss(make_lora_model(tiny_world, dtype=torch.float64), batches[0], obj, None, state=state1)
    pm2 = make_lora_model(tiny_world, dtype=torch.float64)
    params = [p for p in pm2.parameters() if p.requires_grad]

    def mean_grad():
        out = [torch.zeros_like(p) for p in params]
        for b, st in ((batches[0], {}), (batches[1], dict(state1))):
            loss, _ = unlearning_loss(pm2, b, obj, None, state=st)
            for t, g in zip(out, torch.autograd.grad(loss / 2, params, allow_unused=True)):
                if g is not None:
                    t += g
        return out

    g = mean_grad()
    norm = torch.sqrt(sum((x**2).sum() for x in g))
    theta = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, g):
            p += RHO * x / norm
    g2 = mean_grad()
    with torch.no_grad():
        for p, t, x in zip(params, theta, g2):
            p.copy_(t - LR * x)
    want, got = _trainable(pm2), _trainable(pm)
    for n in want:
        torch.testing.assert_close(got[n], want[n], **TOL)
    # two updates of the multiplier (one per micro-batch's first pass), not four
    state2 = dict(state1)
    unlearning_loss(make_lora_model(tiny_world, dtype=torch.float64), batches[1], obj, None, state=state2)
    assert trainer.objective_state["pdu_dual"] == pytest.approx(state2["pdu_dual"], rel=1e-12)


def test_a_sam_step_runs_each_micro_batch_twice(tiny_world, tmp_path):
    """The cost: forward and backward twice per micro-batch (about twice a plain step; the measured
    time is in docs/methods.md)."""
    obj = ObjectiveOptions()
    calls = {"n": 0}

    class Counting(UnlearnTrainer):
        def compute_loss(self, *a, **k):
            calls["n"] += 1
            return super().compute_loss(*a, **k)

    _train_one_step(tiny_world, tmp_path, obj, 0.0, trainer_cls=Counting)
    n_plain, calls["n"] = calls["n"], 0
    _train_one_step(tiny_world, tmp_path, obj, RHO, trainer_cls=Counting)
    assert (n_plain, calls["n"]) == (2, 4)


def test_a_calibrated_run_with_sam_and_accumulation(tiny_world, tmp_path):
    """The real path: gate and per-step caps on, gradient accumulation 2, `train.sam_rho` from the
    options; the run completes, records rho, evaluates and forgets."""
    import json

    from llm_unlearn.config import build_config
    from llm_unlearn.train.loop import run_unlearning

    holdout = tmp_path / "holdout.jsonl"
    holdout.write_text("".join(json.dumps(d) + "\n" for d in tiny_world["ds"].nonmember_docs))
    out = tmp_path / "cal-sam"
    cfg = build_config(
        overrides={
            "model.name_or_path": str(tiny_world["model_dir"]),
            "data.data": str(tiny_world["data_dir"]),
            "data.add_eos": True,
            "train.output_dir": str(out),
            "train.progress": False,
            "train.merge": False,
            "train.plots": False,
            "train.learning_rate": 5e-3,
            "train.batch_size": 4,
            "train.gradient_accumulation_steps": 2,
            "train.sam_rho": RHO,
            "schedule.chunk_size": 15,
            "schedule.retain_per_forget": 1,
            "schedule.epochs": 3,
            "lora.alpha": 32,
            "calibration.holdout": str(holdout),
            "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
            "calibration.eval_every": 4,
            "calibration.eval_items": 8,
        }
    )
    summary = run_unlearning(cfg)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["train"]["sam_rho"] == RHO
    assert len(summary["calibration"]["evaluations"]) >= 2
    assert run["effect"]["verdict"] != "no_forgetting", run["effect"]
