"""What a sweep shares across trials besides the target and the reference cache (issue 21): the
calibration's step-0 measurement of the untrained start and the tokenized records. A run that reuses
them is the same run, to the bit, as one that measures and tokenizes itself."""

from __future__ import annotations

import json

import pytest
import torch

from llm_unlearn.config import build_config
from llm_unlearn.sweep.shared import Shared, start_key
from llm_unlearn.train import monitor as monitor_mod
from llm_unlearn.train.loop import run_unlearning
from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _overrides(world, out, holdout, **extra):
    return {
        "model.name_or_path": str(world["model_dir"]),
        "data.data": str(world["data_dir"]),
        "data.add_eos": True,
        "train.output_dir": str(out),
        "train.progress": False,
        "train.merge": False,
        "train.plots": False,
        "train.learning_rate": 5e-3,
        "schedule.chunk_size": 15,
        "schedule.retain_per_forget": 2,
        "schedule.epochs": 2,
        "lora.alpha": 32,
        "train.batch_size": 4,
        "calibration.holdout": str(holdout),
        "calibration.forget_documents": str(world["data_dir"] / "mia" / "member.jsonl"),
        "calibration.eval_every": 3,
        "calibration.eval_items": 6,
        "calibration.eval_max_new_tokens": 8,
        **extra,
    }


def _holdout(world, tmp_path):
    path = tmp_path / "holdout.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in world["ds"].nonmember_docs))
    return path


def _evaluations(summary):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in summary["calibration"]["evaluations"]]


def _count_measures(monkeypatch):
    calls = []
    real = monitor_mod.TrainingMonitor.measure

    def counting(self, model):
        calls.append(1)
        return real(self, model)

    monkeypatch.setattr(monitor_mod.TrainingMonitor, "measure", counting)
    return calls


def test_a_reused_start_and_tokens_give_the_same_run(tiny_world, tmp_path, monkeypatch):
    hold = _holdout(tiny_world, tmp_path)
    calls = _count_measures(monkeypatch)
    second = {"train.learning_rate": 2e-3, "objective.npo_beta": 0.3}
    plain = run_unlearning(  # the second trial's options, measured and tokenized by the run itself
        build_config(overrides=_overrides(tiny_world, tmp_path / "plain", hold, **second)),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    n_evals = len(plain["calibration"]["evaluations"])
    assert n_evals >= 3 and len(calls) == n_evals
    shared = Shared(tmp_path / "sweep")
    saved = dict(SWEEP_HOOKS)
    runs = []
    try:
        # two trials that differ in what cannot change the start (the step size, the method's weights)
        for i, extra in enumerate([{}, second]):
            cfg = build_config(overrides=_overrides(tiny_world, tmp_path / f"t{i}", hold, **extra))
            SWEEP_HOOKS.update(start_measurement=shared.start_measurement(cfg), tokens=shared.tokens)
            del calls[:]
            runs.append(
                run_unlearning(cfg, model=tiny_world["make_model"](), tokenizer=tiny_world["tokenizer"])
            )
            n = len(runs[-1]["calibration"]["evaluations"])
            # the first trial measures its start, the second reuses it
            assert len(calls) == (n if i == 0 else n - 1)
    finally:
        SWEEP_HOOKS.update(saved)
    assert len(shared.tokens) == 2  # forget and retain, tokenized once for both trials
    # the trial that reused the start and the tokens is the plain run: every evaluation, every float
    assert _evaluations(runs[1]) == _evaluations(plain)
    first_a, first_b = runs[0]["calibration"]["evaluations"][0], runs[1]["calibration"]["evaluations"][0]
    assert {k: v for k, v in first_a.items() if k != "seconds"} == {
        k: v for k, v in first_b.items() if k != "seconds"
    }
    # and the same weights at the end
    want = {n: p for n, p in plain["model"].named_parameters() if "lora_" in n}
    got = {n: p for n, p in runs[1]["model"].named_parameters() if "lora_" in n}
    assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)


def test_a_trained_start_is_never_taken_from_the_cache(tiny_world):
    from llm_unlearn.modeling import apply_lora
    from llm_unlearn.train.calibrated import _untrained

    pm = apply_lora(tiny_world["make_model"](), r=2, alpha=4, target_modules=["q_proj"])
    assert _untrained(pm)
    with torch.no_grad():
        next(p for n, p in pm.named_parameters() if "lora_B" in n)[0, 0] = 1e-30
    assert not _untrained(pm)
    assert not _untrained(tiny_world["make_model"]())  # no adapter: not known to be the target


def test_start_key_ignores_only_what_cannot_change_the_start(tiny_world, tmp_path):
    hold = _holdout(tiny_world, tmp_path)

    def key(**extra):
        return start_key(build_config(overrides=_overrides(tiny_world, tmp_path / "k", hold, **extra)))

    base = key()
    for same in (
        {"train.learning_rate": 1e-2},
        {"schedule.epochs": 7},
        {"objective.method": "simnpo"},
        {"lora.r": 8},
        {"calibration.gate_quantile": 0.3},
        {"train.output_dir": str(tmp_path / "elsewhere")},
    ):
        assert key(**same) == base, same
    for other in (
        {"calibration.eval_items": 5},
        {"calibration.eval_max_new_tokens": 4},
        {"train.seed": 1},
        {"data.max_length": 64},
        {"calibration.unlearn_documents": False},
    ):
        assert key(**other) != base, other


def test_workers_share_the_cores_unless_the_user_chose(monkeypatch):
    from llm_unlearn.sweep import run

    got = []
    monkeypatch.setattr(torch, "set_num_threads", got.append)
    monkeypatch.setattr(run.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run._share_cores(1)
    run._share_cores(3)
    run._share_cores(16)
    assert got == [2, 1]  # one worker keeps torch's default; K workers get cores // K, at least one
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    run._share_cores(2)
    assert got == [2, 1]


def test_an_ephemeral_trial_is_the_same_run_and_writes_no_checkpoint_nor_final_files(tiny_world, tmp_path):
    """A sweep's trial (``SWEEP_HOOKS["ephemeral"]``: its directory is removed when it returns) saves no
    checkpoint after a chunk and none of the final files, and is otherwise the plain run to the bit."""
    hold = _holdout(tiny_world, tmp_path)
    plain_dir, trial_dir = tmp_path / "plain", tmp_path / "trial"
    plain = run_unlearning(
        build_config(overrides=_overrides(tiny_world, plain_dir, hold)),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    saved = dict(SWEEP_HOOKS)
    try:
        SWEEP_HOOKS.update(ephemeral=True)
        trial = run_unlearning(
            build_config(overrides=_overrides(tiny_world, trial_dir, hold)),
            model=tiny_world["make_model"](),
            tokenizer=tiny_world["tokenizer"],
        )
    finally:
        SWEEP_HOOKS.update(saved)
    assert _evaluations(trial) == _evaluations(plain)
    assert trial["calibration"]["selected_index"] == plain["calibration"]["selected_index"]
    assert trial["steps_done"] == plain["steps_done"] and len(plain["chunks"]) >= 2
    want = {n: p for n, p in plain["model"].named_parameters() if "lora_" in n}
    got = {n: p for n, p in trial["model"].named_parameters() if "lora_" in n}
    assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)
    assert (plain_dir / "run.json").is_file() and (plain_dir / "adapter").is_dir()
    written = {p.name for p in trial_dir.iterdir()} if trial_dir.exists() else set()
    assert not written & {"run.json", "adapter", "log_history.jsonl", "checkpoint", "model"}, written
    assert trial["effect"] is None and plain["effect"] is not None
