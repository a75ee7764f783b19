"""The reference-based methods read the same reference from the cache as live, and keep their state
across a resume."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import collate_rows, make_lora_model, make_rows
from llm_unlearn.config import ObjectiveOptions, build_config
from llm_unlearn.train.cache_build import build_cache
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.methods import needs_of


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "opts",
    [
        {"method": "undial", "retain_weight": 0.0, "divergence_weight": 0.0},  # forget distributions
        {"method": "idk_dpo", "divergence_weight": 0.0},  # forget log-probs (+ live alternatives)
        {"method": "simnpo", "retain_divergence": "kl", "divergence_weight": 1.0},  # retain distributions
        {"method": "npo", "npo_level": "sequence"},
    ],
)
def test_cached_reference_gives_the_live_terms(tiny_world, tmp_path, opts):
    pm = make_lora_model(tiny_world)
    rows = make_rows(tiny_world, 3, 3, alternatives=True)
    batch = collate_rows(tiny_world, rows)
    obj = ObjectiveOptions(**opts)
    sel = AnswerHeadSelector(pm)
    cache = build_cache(pm, rows, needs_of(obj), tmp_path / "c", mode="full", dtype="float32", selector=sel)
    _, live = unlearning_loss(pm, batch, obj, sel)
    _, cached = unlearning_loss(pm, batch, obj, sel, cache)
    sel.remove()
    assert live.keys() == cached.keys()
    # float32 both ways; the cache's rows were computed in other batch shapes: a log-softmax over V = 512
    # differs by ~sqrt(V) * u * max|logit| ~ 22 * 6e-8 * 15 ~ 2e-5 per value, means of them likewise
    for k in live:
        assert cached[k] == pytest.approx(live[k], rel=1e-4, abs=5e-5), k


def test_pdu_multiplier_survives_a_resume(tiny_world, tmp_path, monkeypatch):
    """The dual multiplier is objective state: saved in the checkpoint after each chunk and restored,
    so a run killed after chunk 1 and resumed ends with the multiplier of the uninterrupted run."""
    import llm_unlearn.train.checkpoint as ckpt
    from llm_unlearn.train.loop import run_unlearning

    def cfg(out):
        return build_config(
            overrides={
                "model.name_or_path": str(tiny_world["model_dir"]),
                "data.data": str(tiny_world["data_dir"]),
                "train.output_dir": str(out),
                "train.learning_rate": 5e-3,
                "train.merge": False,
                "train.plots": False,
                "train.progress": False,
                "schedule.chunk_size": 10,
                "schedule.epochs": 1,
                "calibration.mode": "off",
                "objective.method": "pdu",
            }
        )

    whole = run_unlearning(cfg(tmp_path / "whole"))
    real_save = ckpt.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_unlearning(cfg(tmp_path / "cut"))
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["objective_state"]["pdu_dual"] > 0
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    resumed = run_unlearning(cfg(tmp_path / "cut"))
    w = {k: v for k, v in whole["model"].named_parameters() if v.requires_grad}
    r = {k: v for k, v in resumed["model"].named_parameters() if v.requires_grad}
    for k in w:  # same computation on CPU: a resumed run equals the uninterrupted one
        torch.testing.assert_close(r[k], w[k], rtol=0, atol=1e-6)


def test_undial_with_a_topk_cache_takes_its_full_target_live(tiny_world, tmp_path):
    """A top-k cache holds no full forget distribution: UNDIAL's target is then computed live, so the
    term equals the live one (the same computation)."""
    pm = make_lora_model(tiny_world)
    rows = make_rows(tiny_world, 3, 3)
    batch = collate_rows(tiny_world, rows)
    obj = ObjectiveOptions(method="undial", retain_weight=0.0, divergence_weight=0.0)
    sel = AnswerHeadSelector(pm)
    cache = build_cache(pm, rows, needs_of(obj), tmp_path / "k", mode="topk", topk=8, selector=sel)
    assert cache.kinds["forget"] == "topk"
    _, live = unlearning_loss(pm, batch, obj, sel)
    _, cached = unlearning_loss(pm, batch, obj, sel, cache)
    sel.remove()
    assert cached["undial"] == live["undial"]


def test_rmu_says_its_reference_is_live():
    from llm_unlearn.train.cache_mode import choose_mode

    mode, why = choose_mode("auto", ObjectiveOptions(method="rmu"), [], 10, "float16", 8)
    assert mode == "off" and "hidden states" in why
    assert needs_of(ObjectiveOptions(method="rmu", retain_weight=0.0)).any is False


def test_a_bad_alternatives_file_fails_before_the_model_loads(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.modeling as modeling
    from llm_unlearn.errors import UserError
    from llm_unlearn.train.loop import run_unlearning

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the alternatives were read")

    monkeypatch.setattr(modeling, "load_model", no_load)
    cfg = build_config(
        overrides={
            "model.name_or_path": str(tiny_world["model_dir"]),
            "data.data": str(tiny_world["data_dir"]),
            "train.output_dir": str(tmp_path / "out"),
            "objective.method": "idk_dpo",
            "objective.alternatives": str(tmp_path / "missing.txt"),
        }
    )
    with pytest.raises(UserError, match="cannot read"):
        run_unlearning(cfg)
    assert not (tmp_path / "out").exists()


def test_full_finetuning_resumes_as_the_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    """Under full fine-tuning the checkpoint holds the whole model (model.safetensors) and a resume
    loads it back: killed after chunk 1 and resumed, the run ends with the uninterrupted run's weights."""
    import llm_unlearn.train.checkpoint as ckpt
    from llm_unlearn.train.loop import run_unlearning

    def cfg(out):
        return build_config(
            overrides={
                "model.name_or_path": str(tiny_world["model_dir"]),
                "data.data": str(tiny_world["data_dir"]),
                "train.output_dir": str(out),
                "train.learning_rate": 1e-3,
                "train.plots": False,
                "train.progress": False,
                "schedule.chunk_size": 10,
                "schedule.epochs": 1,
                "calibration.mode": "off",
                "lora.enabled": False,
            }
        )

    whole = run_unlearning(cfg(tmp_path / "whole"))["model"].state_dict()
    real_save = ckpt.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_unlearning(cfg(tmp_path / "cut"))
    assert (tmp_path / "cut" / "checkpoint" / "model.safetensors").is_file()
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    resumed = run_unlearning(cfg(tmp_path / "cut"))["model"].state_dict()
    for k in whole:  # the same computation on CPU (as the LoRA resume test)
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=1e-6)
