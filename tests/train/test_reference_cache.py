"""The reference cache: same loss as the live reference, top-k error, runs, resume, fingerprints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_lora_model
from llm_unlearn.config import ObjectiveOptions, build_config
from llm_unlearn.data.tokenize import UnlearnCollator, tokenize_records
from llm_unlearn.train import cache_build, cache_mode, reference_source
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loop import run_unlearning
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.reference import compute_reference


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_lora_model = make_lora_model  # the shared builder (conftest.py)


def _rows(world, n_forget=4, n_retain=6):
    tok, ds = world["tokenizer"], world["ds"]
    forget = tokenize_records(tok, ds.forget[:n_forget], add_eos=True)
    retain = tokenize_records(tok, ds.retain[:n_retain], add_eos=True)
    rows = forget + retain
    for key, row in enumerate(rows):
        row["row_key"] = key
    return rows


def _batch(world, rows, order):
    return UnlearnCollator(world["tokenizer"].pad_token_id)([rows[i] for i in order])


# a batch that mixes forget and retain rows out of key order
ORDER = [5, 0, 7, 2, 9, 1]

OBJECTIVES = {
    "token_renyi": ObjectiveOptions(),
    "sequence_renyi": ObjectiveOptions(npo_level="sequence"),
    "kl": ObjectiveOptions(retain_divergence="kl"),
    "legacy": ObjectiveOptions(retain_divergence="token_renyi_legacy"),
    "legacy_alpha1": ObjectiveOptions(retain_divergence="token_renyi_legacy", renyi_alpha=1.0),
    "no_divergence": ObjectiveOptions(retain_divergence="none"),
    "renyi_alpha2": ObjectiveOptions(renyi_alpha=2.0),
}


def _build(pm, rows, obj, path, **kw):
    kw.setdefault("mode", "full")
    kw.setdefault("dtype", "float32")
    return cache_build.build_cache(pm, rows, obj, path, batch_size=3, **kw)


def test_collator_passes_row_key_through(tiny_world):
    rows = _rows(tiny_world)
    batch = _batch(tiny_world, rows, ORDER)
    assert batch["row_key"].tolist() == ORDER and batch["row_key"].dtype == torch.long
    del rows[0]["row_key"]
    assert "row_key" not in _batch(tiny_world, rows, [0, 1])


def test_lookup_has_the_token_order_of_the_loss(tiny_world, tmp_path):
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    obj = ObjectiveOptions()
    cache = _build(pm, rows, obj, tmp_path / "c")
    batch = _batch(tiny_world, rows, ORDER)
    live = compute_reference(pm, None, batch, obj)
    cached = cache.lookup(batch, obj)
    # float32 log-softmax over V = 512 in other batch shapes: ~sqrt(V) * u * max|logit| ~ 22 * 6e-8 * 15 ~ 2e-5
    torch.testing.assert_close(cached.forget_logp, live.forget_logp, rtol=0, atol=2e-5)
    torch.testing.assert_close(cached.retain_logits, live.retain_logits.log_softmax(-1), rtol=0, atol=2e-5)
    torch.testing.assert_close(cached.retain_logp, live.retain_logp, rtol=0, atol=2e-5)
    assert not cached.retain_logits.requires_grad
    # the header says what is stored
    header = json.loads((tmp_path / "c" / "header.json").read_text())
    assert header["retain"] == "full" and header["forget"] == "logp" and header["dtype"] == "float32"
    n_retain_tokens = sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows if not r["is_forget"])
    assert header["n_vocab_rows"] == n_retain_tokens and header["vocab"] == len(tiny_world["tokenizer"])


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
# a cached log-prob is rounded to the storage dtype: relative u = 2**-24 (float32), 2**-11 ~ 4.9e-4
# (float16), 2**-8 ~ 3.9e-3 (bfloat16), times |log p| <~ 4 for these tokens, and the loss terms are means
# of such values: float32 ~ sqrt(n) * u * |term| < 1e-6; float16 4 * 4.9e-4 ~ 2e-3; bfloat16 ~ 1.6e-2 at
# worst, but a mean of many independently rounded values: 1e-2
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 2e-3), ("bfloat16", 1e-2)])
def test_loss_with_cache_equals_loss_without(tiny_world, tmp_path, name, dtype, tol):
    obj = OBJECTIVES[name]
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    cache = _build(pm, rows, obj, tmp_path / "c", dtype=dtype)
    sel = AnswerHeadSelector(pm)
    batch = _batch(tiny_world, rows, ORDER)
    plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
    loss0, terms0 = unlearning_loss(pm, plain, obj, sel)
    loss1, terms1 = unlearning_loss(pm, plain, obj, sel, cache.lookup(batch, obj))
    assert set(terms0) == set(terms1)
    l0, l1 = float(loss0.detach()), float(loss1.detach())
    assert abs(l1 - l0) <= tol, (l0, l1)
    for k in terms0:
        assert abs(terms1[k] - terms0[k]) <= tol, (k, terms0[k], terms1[k])
    if dtype == "float32":  # the gradients agree too
        loss0.backward()
        g0 = {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}
        pm.zero_grad()
        loss1.backward()
        for n, p in pm.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, g0[n], rtol=1e-4, atol=1e-6)  # as test_engine's gradients
    sel.remove()


@pytest.mark.parametrize("divergence", ["renyi", "kl"])
def test_topk_with_k_equal_to_the_vocabulary_is_the_full_divergence(tiny_world, tmp_path, divergence):
    obj = ObjectiveOptions(retain_divergence=divergence)
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    vocab = len(tiny_world["tokenizer"])
    full = _build(pm, rows, obj, tmp_path / "full")
    topk = _build(pm, rows, obj, tmp_path / "topk", mode="topk", topk=vocab)
    assert topk.header["retain"] == "topk" and topk.header["topk"] == vocab
    batch = _batch(tiny_world, rows, ORDER)
    plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
    _, t_full = unlearning_loss(pm, plain, obj, None, full.lookup(batch, obj))
    ref_topk = topk.lookup(batch, obj)
    assert ref_topk.retain_topk is not None and ref_topk.retain_logits is None
    assert torch.isneginf(ref_topk.retain_topk[2]).all()  # no tail at k = V
    _, t_topk = unlearning_loss(pm, plain, obj, None, ref_topk)
    # k = V: the same distribution through another formula (float32 sums over V = 512: ~sqrt(V) * u
    # relative ~1.4e-6, more where the divergence is a small difference): rel 1e-5, abs 1e-7
    assert t_topk["divergence"] == pytest.approx(t_full["divergence"], rel=1e-5, abs=1e-7)
    assert t_topk["npo"] == pytest.approx(t_full["npo"], rel=1e-6)


def test_topk_with_small_k_is_a_bounded_lower_approximation(tiny_world, tmp_path):
    """Error of the top-k divergence against the full one, for a clearly perturbed adapter. It is a
    lower bound (bucketing), and the error shrinks as k grows."""
    obj = ObjectiveOptions()
    pm = _lora_model(tiny_world, scale=0.2)
    rows = _rows(tiny_world)
    batch = _batch(tiny_world, rows, ORDER)
    plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
    full = _build(pm, rows, obj, tmp_path / "full")
    _, t_full = unlearning_loss(pm, plain, obj, None, full.lookup(batch, obj))
    d_full = t_full["divergence"]
    assert d_full > 1e-3  # the check means something
    errors = {}
    for k in (4, 16, 64, 256):
        cache = _build(pm, rows, obj, tmp_path / f"k{k}", mode="topk", topk=k)
        _, t = unlearning_loss(pm, plain, obj, None, cache.lookup(batch, obj))
        errors[k] = (d_full - t["divergence"]) / d_full
        assert t["divergence"] <= d_full * (1 + 1e-5) + 1e-7  # lower bound
        assert t["npo"] == pytest.approx(t_full["npo"], rel=1e-6)  # NPO is untouched by top-k
    ks = sorted(errors)
    assert all(errors[a] >= errors[b] - 1e-6 for a, b in zip(ks, ks[1:])), errors
    # measured here (V = 512, LoRA B ~ N(0, 0.2), alpha 0.5): 13%, 8.6%, 4.8%, 2.7% at k = 4, 16, 64, 256
    # an approximation-quality guard, not a rounding tolerance: deterministic math, where another CPU
    # changes the errors by rounding only (~1e-6), far below the distance to these bounds
    bounds = {4: 0.25, 16: 0.15, 64: 0.08, 256: 0.04}
    assert all(errors[k] < bounds[k] for k in ks), errors


def test_auto_mode_picks_full_within_the_budget_and_no_cache_beyond(tiny_world, tmp_path):
    obj = ObjectiveOptions()
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    big = _build(pm, rows, obj, tmp_path / "a", mode="auto", dtype="float16", budget_gib=1.0)
    assert big.header["retain"] == "full" and big.vocab.dtype.itemsize == 2
    with pytest.raises(ValueError, match="exceed the budget"):  # top-k is never chosen for the user
        _build(pm, rows, obj, tmp_path / "b", mode="auto", budget_gib=1e-6, topk=32)
    small = _build(pm, rows, obj, tmp_path / "b", mode="topk", budget_gib=1e-6, topk=32)
    assert small.header["retain"] == "topk" and small.header["topk"] == 32
    assert small.nbytes() < big.nbytes()
    legacy = _build(
        pm, rows, ObjectiveOptions(retain_divergence="token_renyi_legacy"), tmp_path / "l", mode="auto"
    )
    assert legacy.header["retain"] == "logp" and not (tmp_path / "l" / "vocab.bin").exists()
    assert cache_mode.resolve_mode("auto", 10, 100, "float32", 4000 / 2**30) == "full"
    assert cache_mode.resolve_mode("auto", 11, 100, "float32", 4000 / 2**30) == "off"


def test_lookup_refuses_what_it_does_not_hold(tiny_world, tmp_path):
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    cache = _build(pm, rows, ObjectiveOptions(retain_divergence="token_renyi_legacy"), tmp_path / "l")
    batch = _batch(tiny_world, rows, ORDER)
    with pytest.raises(ValueError, match="needs a vocabulary tensor"):
        cache.lookup(batch, ObjectiveOptions())
    bad = dict(batch, row_key=batch["row_key"] + 100)
    with pytest.raises(KeyError, match="not in the reference cache"):
        cache.lookup(bad, ObjectiveOptions(retain_divergence="token_renyi_legacy"))
    with pytest.raises(ValueError, match="nothing to cache"):
        _build(pm, rows, ObjectiveOptions(method="sugd"), tmp_path / "s")


def test_fingerprint_reuses_or_rebuilds(tiny_world, tmp_path):
    obj = ObjectiveOptions()
    pm = _lora_model(tiny_world)
    rows = _rows(tiny_world)
    kw = dict(mode="auto", dtype="float16", budget_gib=8.0, topk=256)
    d = tmp_path / reference_source.CACHE_DIRNAME
    _, built = cache_build.open_or_build(pm, rows, obj, d, **kw)
    assert built
    mtime = (d / "header.json").stat().st_mtime_ns
    n = cache_build.BUILD_COUNT
    with torch.no_grad():  # the adapter is not part of the reference: still reused
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)
    cache, built = cache_build.open_or_build(pm, rows, obj, d, **kw)
    assert not built and cache_build.BUILD_COUNT == n and (d / "header.json").stat().st_mtime_ns == mtime
    _, built = cache_build.open_or_build(pm, rows, obj, d, **dict(kw, dtype="float32"))  # another dtype
    assert built and cache_build.BUILD_COUNT == n + 1
    _, built = cache_build.open_or_build(pm, rows[:-1], obj, d, **dict(kw, dtype="float32"))  # other rows
    assert built
    with torch.no_grad():  # other base weights
        pm.get_output_embeddings().weight[0, 0] += 1.0
    _, built = cache_build.open_or_build(pm, rows[:-1], obj, d, **dict(kw, dtype="float32"))
    assert built
    _, built = cache_build.open_or_build(pm, rows[:-1], obj, d, **dict(kw, dtype="float32"))
    assert not built
    # several processes without a process group: rank 1 keeps its own copy beside rank 0's
    _, built = cache_build.open_or_build(
        pm, rows[:-1], obj, d, **dict(kw, dtype="float32"), rank=1, world_size=2
    )
    rank1 = tmp_path / f"{reference_source.CACHE_DIRNAME}-rank1"
    assert built and (rank1 / "header.json").is_file() and (d / "header.json").is_file()
    reference_source.remove_cache_dirs(tmp_path)
    assert not d.exists() and not rank1.exists()


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
        "train.reference_cache": "off",  # the default is auto; each test names the mode it runs
    }
    base.update(over)
    return build_config(overrides=base)


def _adapter(path):
    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


# Tolerance, derived. The cached reference log-probs differ from the live ones by float32 rounding of
# the V-term log-softmax (other batch shapes, another summation order): with random-walk rounding
# delta ~ sqrt(V) * u * max|logit| ~ sqrt(512) * 6e-8 * 10 ~ 1.4e-5 (u = 2**-24). The reference enters
# the loss only through bounded weights (NPO: d/d ref <= 2; the divergence likewise), so each
# gradient moves by a relative ~delta, and under SGD (linear in the gradient) the adapter by
# ~delta * |adapter| <= 1.4e-5 * 0.5 ~ 7e-6 (|lora_B| stays below 0.5 at lr 0.2 here): atol 1e-5.
# Adam divides by sqrt(v) + 1e-8, which turns rounding noise in near-zero gradient entries into steps
# of ~lr, so no such bound exists: there the trajectory is compared at its first step (the same
# weights, only the reference differs: |d loss| <= 3 * delta) and both runs must have trained.
SGD_ADAPTER_ATOL = 1e-5
FIRST_LOSS_ATOL = 3 * 1.4e-5


@pytest.mark.parametrize("optim,lr", [("sgd", 0.2), ("adamw_torch", 1e-3)])
def test_a_run_with_an_fp32_cache_gives_the_adapter_of_a_run_without(tiny_world, tmp_path, optim, lr):
    """The cached reference differs from the live one by float32 rounding only (see the derivation
    above): under SGD the adapters agree within SGD_ADAPTER_ATOL, under Adam the first loss agrees."""
    tok = tiny_world["tokenizer"]
    over = {"train.learning_rate": lr, "training_args": {"optim": optim}}
    run_unlearning(
        _cfg(tiny_world, tmp_path / "off", **over), model=tiny_world["make_model"](), tokenizer=tok
    )
    n = cache_build.BUILD_COUNT
    run_unlearning(
        _cfg(
            tiny_world,
            tmp_path / "on",
            **over,
            **{"train.reference_cache": "full", "train.reference_cache_dtype": "float32"},
        ),
        model=tiny_world["make_model"](),
        tokenizer=tok,
    )
    assert cache_build.BUILD_COUNT == n + 1
    assert not (tmp_path / "on" / reference_source.CACHE_DIRNAME).exists()  # a finished run removes it
    a, b = _adapter(tmp_path / "off"), _adapter(tmp_path / "on")
    assert a.keys() == b.keys()
    assert (
        max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 100 * SGD_ADAPTER_ATOL
    )  # it trained
    h_off = [json.loads(x) for x in (tmp_path / "off" / "log_history.jsonl").read_text().splitlines()]
    h_on = [json.loads(x) for x in (tmp_path / "on" / "log_history.jsonl").read_text().splitlines()]
    assert len(h_on) == len(h_off)
    assert h_on[0]["loss"] == pytest.approx(h_off[0]["loss"], abs=FIRST_LOSS_ATOL)
    if optim == "sgd":
        assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) < 0.5  # the bound's premise
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=SGD_ADAPTER_ATOL)


class _Kill(Exception):
    pass


def test_resume_reuses_the_cache(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.train.checkpoint as run_mod

    tok = tiny_world["tokenizer"]
    over = {"train.reference_cache": "auto", "train.reference_cache_dtype": "float32"}
    run_unlearning(
        _cfg(tiny_world, tmp_path / "full", **over), model=tiny_world["make_model"](), tokenizer=tok
    )
    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        if a[2] == 1:
            raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        run_unlearning(
            _cfg(tiny_world, tmp_path / "res", **over), model=tiny_world["make_model"](), tokenizer=tok
        )
    header = tmp_path / "res" / reference_source.CACHE_DIRNAME / "header.json"
    assert header.is_file()
    n = cache_build.BUILD_COUNT
    fp = json.loads(header.read_text())["fingerprint"]
    assert fp["model_path"] == str(tiny_world["model_dir"]) and fp["tokenization"]["add_eos"] is True
    assert len(fp["data_files"]) == 2 and all(len(h) == 64 for h in fp["data_files"].values())
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    run_unlearning(
        _cfg(tiny_world, tmp_path / "res", **over), model=tiny_world["make_model"](), tokenizer=tok
    )
    assert cache_build.BUILD_COUNT == n  # reused, not rebuilt
    assert not header.exists()  # the finished run removed it
    a, b = _adapter(tmp_path / "full"), _adapter(tmp_path / "res")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_resume_with_a_stale_cache_rebuilds_it(tiny_world, tmp_path, monkeypatch):
    import llm_unlearn.train.checkpoint as run_mod

    tok = tiny_world["tokenizer"]
    over = {"train.reference_cache": "full", "train.reference_cache_dtype": "float32", "schedule.epochs": 1}
    real_save = run_mod.save_checkpoint

    def save_then_die(out, *a, **k):
        real_save(out, *a, **k)
        raise _Kill()

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_die)
    with pytest.raises(_Kill):
        run_unlearning(
            _cfg(tiny_world, tmp_path / "r", **over), model=tiny_world["make_model"](), tokenizer=tok
        )
    header = tmp_path / "r" / reference_source.CACHE_DIRNAME / "header.json"
    h = json.loads(header.read_text())
    h["fingerprint"]["model_path"] = "somewhere/else"  # as if built for another model
    header.write_text(json.dumps(h))
    n = cache_build.BUILD_COUNT
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    run_unlearning(_cfg(tiny_world, tmp_path / "r", **over), model=tiny_world["make_model"](), tokenizer=tok)
    assert cache_build.BUILD_COUNT == n + 1
