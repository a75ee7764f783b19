"""The unlearning step and run: answer-only head, reference, terms, end to end, resume, presets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import oracles
from conftest import greedy_exact_match, make_lora_model
from llm_unlearn.config import ObjectiveOptions, build_config
from llm_unlearn.data.tokenize import UnlearnCollator, tokenize_records
from llm_unlearn.errors import NonFiniteLossError, UserError
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loop import run_unlearning
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.reference import compute_reference
from llm_unlearn.train.step import answer_positions


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_lora_model = make_lora_model  # the shared builder (conftest.py)


def _batch(world, n_forget=3, n_retain=3):
    tok = world["tokenizer"]
    ds = world["ds"]
    rows = tokenize_records(tok, ds.forget[:n_forget] + ds.retain[:n_retain], add_eos=True)
    return UnlearnCollator(tok.pad_token_id)(rows)


def _full_logits_reference(model, batch, obj):
    """Brute force: full [B,T,V] logits of model and reference, float64, per-term formulas."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    with torch.no_grad(), model.disable_adapter():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    lab = batch["labels"][:, 1:]
    out, ref = out[:, :-1], ref[:, :-1]
    valid = lab.ne(-100)
    safe = lab.clamp_min(0)
    lp = out.log_softmax(-1).gather(-1, safe[..., None])[..., 0]
    rlp = ref.log_softmax(-1).gather(-1, safe[..., None])[..., 0]
    fmask = valid & batch["is_forget"][:, None]
    rmask = valid & ~batch["is_forget"][:, None]
    npo = -(2 / obj.npo_beta) * torch.nn.functional.logsigmoid(obj.npo_beta * (rlp[fmask] - lp[fmask])).mean()
    nll = -lp[rmask].mean()
    P, Q = out.log_softmax(-1)[rmask], ref.log_softmax(-1)[rmask]
    a = obj.renyi_alpha
    div = (torch.logsumexp(a * P + (1 - a) * Q, -1) / (a - 1)).mean()
    return npo, nll, div


def test_answer_only_loss_equals_full_logits_brute_force(tiny_world):
    pm = _lora_model(tiny_world)
    batch = _batch(tiny_world)
    obj = ObjectiveOptions()
    sel = AnswerHeadSelector(pm)
    loss, terms = unlearning_loss(pm, batch, obj, sel)
    npo, nll, div = _full_logits_reference(pm, batch, obj)
    # Tolerances: float32 both ways, only the reduction order differs (answer rows gathered before vs
    # after the output layer). A log-softmax over V=512 terms carries ~sqrt(V) * u ~ 1.4e-6 relative
    # rounding (u = 2**-24), the per-row means and sums over <= ~100 answer tokens add ~n * u ~ 6e-6: rel
    # 1e-4 covers both with margin; abs 1e-6 for terms near zero. The divergence is a difference of
    # nearly equal log-probs (cancellation: its relative error is that of the log-probs times
    # |log p| / |divergence| ~ 10-100 here), hence rel 1e-3.
    assert terms["npo"] == pytest.approx(float(npo), rel=1e-4, abs=1e-6)
    assert terms["retain_nll"] == pytest.approx(float(nll), rel=1e-4, abs=1e-6)
    assert terms["divergence"] == pytest.approx(float(div), rel=1e-3, abs=1e-6)
    assert float(loss) == pytest.approx(float(npo + nll + div), rel=1e-4)
    # the same loss and gradients without the selector (full logits, then gather)
    loss.backward()
    g1 = {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}
    pm.zero_grad()
    loss2, _ = unlearning_loss(pm, batch, obj, None)
    loss2.backward()
    # the same float32 math, reduction order only: a few ulp of the loss (rel 1e-5 ~ 80 u); the gradients
    # pass back through the same sums (rtol 1e-4 as above, atol 1e-6 for entries near zero)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-5)
    for n, p in pm.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, g1[n], rtol=1e-4, atol=1e-6)
    sel.remove()


def test_selector_builds_no_full_vocabulary_tensor(tiny_world):
    pm = _lora_model(tiny_world)
    batch = _batch(tiny_world)
    sel = AnswerHeadSelector(pm)
    pos = answer_positions(batch["labels"])
    with sel.select(pos.flat):
        out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.logits.shape == (1, pos.flat.numel(), len(tiny_world["tokenizer"]))
    assert pos.flat.numel() < batch["input_ids"].numel()
    sel.remove()


def test_reference_is_the_base_model_without_a_copy(tiny_world):
    pm = _lora_model(tiny_world)
    base = tiny_world["make_model"]()
    batch = _batch(tiny_world)
    n_params = sum(p.numel() for p in pm.parameters())
    ref = compute_reference(pm, None, batch, ObjectiveOptions())
    assert sum(p.numel() for p in pm.parameters()) == n_params
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    pos = answer_positions(batch["labels"])
    flat = logits.reshape(-1, logits.shape[-1])[pos.flat]
    tok_forget = batch["is_forget"][pos.rows]
    expected = -torch.nn.functional.cross_entropy(flat[tok_forget], pos.targets[tok_forget], reduction="none")
    # float32, another reduction order for the V=512 log-softmax: ~sqrt(V) * u * |logit| ~ 1e-5 at most
    torch.testing.assert_close(ref.forget_logp, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref.retain_logits, flat[~tok_forget], rtol=1e-5, atol=1e-5)
    assert not ref.retain_logits.requires_grad


def test_absent_rows_give_no_term(tiny_world):
    pm = _lora_model(tiny_world)
    obj = ObjectiveOptions()
    _, terms = unlearning_loss(pm, _batch(tiny_world, n_forget=0, n_retain=3), obj)
    assert "npo" not in terms and {"retain_nll", "divergence"} <= set(terms)
    loss, terms = unlearning_loss(pm, _batch(tiny_world, n_forget=3, n_retain=0), obj)
    assert set(terms) == {"npo"}
    assert float(loss) == pytest.approx(
        terms["npo"]
    )  # the same float32 value summed with zeros: ~1 ulp (approx: rel 1e-6)


def test_sequence_level_npo_uses_per_row_sums(tiny_world):
    pm = _lora_model(tiny_world)
    batch = _batch(tiny_world, n_forget=3, n_retain=0)
    obj = ObjectiveOptions(npo_level="sequence")
    _, terms = unlearning_loss(pm, batch, obj)
    out = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    with torch.no_grad(), pm.disable_adapter():
        ref = pm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    lp, mask = oracles.target_log_probs(out, batch["labels"])
    rlp, _ = oracles.target_log_probs(ref, batch["labels"])
    seq, rseq = (lp * mask).sum(1), (rlp * mask).sum(1)
    expected = -(2 / 0.5) * torch.nn.functional.logsigmoid(0.5 * (rseq - seq)).mean()
    assert terms["npo"] == pytest.approx(float(expected), rel=1e-4)


def test_legacy_and_kl_and_baselines_run(tiny_world):
    pm = _lora_model(tiny_world)
    batch = _batch(tiny_world)
    for obj in (
        ObjectiveOptions(retain_divergence="token_renyi_legacy"),
        ObjectiveOptions(retain_divergence="kl"),
        ObjectiveOptions(method="gradient_ascent"),
        ObjectiveOptions(method="gradient_difference"),
        ObjectiveOptions(method="sugd"),
    ):
        loss, terms = unlearning_loss(pm, batch, obj)
        assert torch.isfinite(loss) and terms
    # gradient difference = -forget NLL + retain NLL
    loss, terms = unlearning_loss(pm, batch, ObjectiveOptions(method="gradient_difference"))
    assert float(loss) == pytest.approx(-terms["forget_nll"] + terms["retain_nll"], rel=1e-5)


def test_non_finite_term_stops_with_its_name(tiny_world):
    pm = _lora_model(tiny_world)
    with torch.no_grad():
        pm.get_output_embeddings().weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="npo|retain_nll|divergence|loss"):
        unlearning_loss(pm, _batch(tiny_world), ObjectiveOptions())


# ----------------------------------------------------------------------------- runs
def _cfg(world, out, **over):
    base = {
        "model.name_or_path": str(world["model_dir"]),
        "data.data": str(world["data_dir"]),
        "data.add_eos": True,
        "train.output_dir": str(out),
        "train.learning_rate": 5e-3,
        "train.progress": False,
        "train.merge": False,
        "train.plots": False,
        "schedule.chunk_size": 5,
        "schedule.retain_per_forget": 1,
        "schedule.epochs": 2,
        "lora.r": 4,
        "lora.alpha": 16,
    }
    base.update(over)
    return build_config(overrides=base)


def test_end_to_end_forget_drops_retain_holds(tiny_world, tmp_path):
    ds, tok = tiny_world["ds"], tiny_world["tokenizer"]
    model = tiny_world["make_model"]()
    f0 = greedy_exact_match(model, tok, ds.forget)
    r0 = greedy_exact_match(model, tok, ds.retain)
    assert f0 >= 0.8 and r0 >= 0.8, (f0, r0)
    cfg = _cfg(
        tiny_world,
        tmp_path / "run",
        **{
            "schedule.chunk_size": 10,
            "schedule.retain_per_forget": 2,
            "schedule.epochs": 5,
            "train.merge": True,
            "train.plots": True,
        },
    )
    summary = run_unlearning(cfg, model=model, tokenizer=tok)
    m = summary["model"].eval()
    f1 = greedy_exact_match(m, tok, ds.forget)
    r1 = greedy_exact_match(m, tok, ds.retain)
    assert f1 <= 0.3, f"forget EM {f0} -> {f1}"
    assert r1 >= 0.7 * r0, f"retain EM {r0} -> {r1}"
    out = tmp_path / "run"
    run = json.loads((out / "run.json").read_text())
    assert run["chunk_count"] == 3 and len(run["chunks"]) == 3
    assert set(run["versions"]) >= {"torch", "transformers", "peft"}
    assert all(len(h) == 64 for h in run["data_files"].values())
    lines = [json.loads(x) for x in (out / "log_history.jsonl").read_text().splitlines()]
    assert {"step", "chunk", "epoch", "loss", "npo", "retain_nll", "divergence", "lr", "grad_norm"} <= set(
        lines[0]
    )
    assert [x["step"] for x in lines] == sorted(x["step"] for x in lines)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert (out / "plots" / "losses.png").stat().st_size > 1000
    assert not (out / "checkpoint").exists()


class _Kill(Exception):
    pass


def test_resume_after_a_chunk_gives_the_same_adapter(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.train.checkpoint as run_mod

    full = run_unlearning(
        _cfg(tiny_world, tmp_path / "full"),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    assert full["chunk_count"] >= 3
    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        if a[2] == 2:  # after the second chunk is saved
            raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        run_unlearning(
            _cfg(tiny_world, tmp_path / "resumed"),
            model=tiny_world["make_model"](),
            tokenizer=tiny_world["tokenizer"],
        )
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["completed_chunks"] == 2
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    run_unlearning(
        _cfg(tiny_world, tmp_path / "resumed"),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # one process, the same float32 operations in the same order (the resume restores the adapter
        # bit for bit, each chunk reseeds): equal in principle; 1e-6 (~100 ulp of weights ~0.1) only
        # forgives a library picking another kernel after a restart
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    hist_full = (tmp_path / "full" / "log_history.jsonl").read_text().splitlines()
    hist_res = (tmp_path / "resumed" / "log_history.jsonl").read_text().splitlines()
    assert len(hist_full) == len(hist_res)


def test_run_scope_optimizer_resumes_too(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.train.checkpoint as run_mod

    over = {"schedule.optimizer_scope": "run"}
    run_unlearning(
        _cfg(tiny_world, tmp_path / "full", **over),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        if a[2] == 1:
            raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        run_unlearning(
            _cfg(tiny_world, tmp_path / "res", **over),
            model=tiny_world["make_model"](),
            tokenizer=tiny_world["tokenizer"],
        )
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    run_unlearning(
        _cfg(tiny_world, tmp_path / "res", **over),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "res" / "adapter" / "adapter_model.safetensors"))
    for k in a:
        # one process, the same float32 operations in the same order (the resume restores the adapter
        # bit for bit, each chunk reseeds): equal in principle; 1e-6 (~100 ulp of weights ~0.1) only
        # forgives a library picking another kernel after a restart
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_a_different_config_is_refused_unless_overwrite(tiny_world, tmp_path):
    run_unlearning(
        _cfg(tiny_world, tmp_path / "r", **{"schedule.epochs": 1}),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    with pytest.raises(UserError, match="with other inputs"):
        run_unlearning(
            _cfg(tiny_world, tmp_path / "r", **{"schedule.epochs": 1, "train.learning_rate": 1e-3}),
            model=tiny_world["make_model"](),
            tokenizer=tiny_world["tokenizer"],
        )
    s = run_unlearning(
        _cfg(
            tiny_world,
            tmp_path / "r",
            **{"schedule.epochs": 1, "train.learning_rate": 1e-3, "train.overwrite": True},
        ),
        model=tiny_world["make_model"](),
        tokenizer=tiny_world["tokenizer"],
    )
    assert s["config"]["train"]["learning_rate"] == 1e-3


def test_gradient_checkpointing_still_trains_lora_b(tiny_world, tmp_path):
    cfg = _cfg(
        tiny_world,
        tmp_path / "gc",
        **{"schedule.epochs": 1, "training_args": {"gradient_checkpointing": True}},
    )
    s = run_unlearning(cfg, model=tiny_world["make_model"](), tokenizer=tiny_world["tokenizer"])
    b = [p for n, p in s["model"].named_parameters() if "lora_B" in n]
    assert b and all(float(p.abs().sum()) > 0 for p in b)


def test_run_from_model_path_with_legacy_preset(tiny_world, tmp_path):
    cfg = _cfg(tiny_world, tmp_path / "p", preset=None, **{"schedule.epochs": 1})
    cfg.objective.retain_divergence = "token_renyi_legacy"
    s = run_unlearning(cfg)
    assert s["chunk_count"] >= 1
    lines = (tmp_path / "p" / "log_history.jsonl").read_text().splitlines()
    assert all("divergence" in json.loads(x) for x in lines)
