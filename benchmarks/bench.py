"""Benchmark harness: the unlearning step against a plain LoRA fine-tuning step, and the evaluation.

    python benchmarks/bench.py --shape small --device cpu --quick        # = make bench-quick (<= 10 min)
    python benchmarks/bench.py --shape small --device cpu --part steps   # = make bench-steps (one part)
    python benchmarks/bench.py --shape small --device cpu --merge        # = make bench-merge
    python benchmarks/bench.py --shape olmo-1b --device cuda             # see benchmarks/gpu_check.sh

``make bench`` runs every registered part (``--list-parts``: steps, mmlu, eval, scaling; see
``_register_parts`` and benchmarks/harness.py), each in its own process writing
``results/<shape>-<device>.<part>.json``, then merges them into ``results/<shape>-<device>.json``. Without
``--part``/``--quick``/``--merge`` it runs steps, mmlu and eval in one process (and scaling with
``--scaling``) and writes the merged file directly, as before. Every part prints progress lines on
stderr (what, step i of n, time left; at least every 20 s) and the end a summary beside the
committed numbers.

One process, one randomly initialised model of the chosen shape with one LoRA adapter (its B
matrices made non-zero so that model and reference differ), the same batches and the same seed for
every variant. All variants run in ONE bare loop (forward, backward, optimizer step), round-robin:
in each round every variant takes one step, starting from its own adapter and optimizer state, so
load changes on the machine hit every variant alike. The first round is warm-up (excluded; its losses
are the "step 0" losses, all from the same initial adapter). Reported: the median over the measured
rounds. Variants:

* ``sft_floor``: a plain LoRA SFT step the standard way, ``model(input_ids, labels=labels).loss``
  (labels on the answer tokens; full ``[B, T, V]`` logits);
* ``seed_style``: the original implementation's step re-created: a second full forward with the
  adapter disabled (autograd on), full-vocabulary log-softmax of both, gather, NPO + NLL + Rényi;
* ``ours``: the default step (answer-only head, divergence on) with the reference cache;
* ``ours_no_cache``: the same with the reference computed live on every step;
* ``ours_no_divergence``: ``retain_divergence = none``, reference cache on (NPO's forget log-probs);
* ``ours_gc`` / ``sft_floor_gc``: ``ours`` / ``sft_floor`` with gradient checkpointing (non-reentrant).

Memory: on CUDA ``torch.cuda.max_memory_allocated`` during one step; everywhere the bytes saved for
backward (``torch.autograd.graph.saved_tensors_hooks``, parameters excluded) and the largest tensor
whose last dimension is the vocabulary (seen by a ``TorchDispatchMode`` over forward and backward),
both from one extra, untimed step per variant.

Evaluation: the demo's model (OLMo-2 architecture, hidden 128, 4 layers, BPE 1024) trained on the
demo's synthetic data for 100 steps (partly memorized), then ``evaluate_semeval`` batched (batch 32)
and with ``official_compat=True`` on the same 120 items, max 48 new tokens; items/s of each (after a
warm-up call), the speedup, and whether the scores agree: |delta| <= 0.005 of the harmonic-mean task
aggregate and of every term in it (plus the fraction of identical generations).

Results: ``benchmarks/results/<shape>-<device>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent
SCHEMA = "llm-unlearn-bench/1"

# hidden, layers, heads, intermediate, vocab; batch rows x sequence length; forget rows per batch;
# answer fraction of each row (the answer is the end of the row, the prompt the rest)
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "arch": "olmo2",
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "intermediate": 256,
        "vocab": 512,
        "batch": 4,
        "seq": 32,
        "n_forget": 1,
        "answer_fraction": 0.3,
        "tie_embeddings": False,
    },
    "small": {
        "arch": "olmo2",
        "hidden": 512,
        "layers": 8,
        "heads": 8,
        "intermediate": 2048,
        "vocab": 8192,
        "batch": 8,
        "seq": 128,
        "n_forget": 1,
        "answer_fraction": 0.3,
        "tie_embeddings": False,
    },
    # OLMo-1B-0724-hf (the SemEval-2025 Task 4 1B model): OLMo architecture, tied embeddings
    "olmo-1b": {
        "arch": "olmo",
        "hidden": 2048,
        "layers": 16,
        "heads": 16,
        "intermediate": 8192,
        "vocab": 50304,
        "batch": 8,
        "seq": 512,
        "n_forget": 1,
        "answer_fraction": 0.3,
        "tie_embeddings": True,
    },
}
# every run also measures, in the same loop: the decoder alone (forward + backward, no output layer:
# the floor of any step that must train every layer's LoRA) and the reference's forward alone
VARIANTS = (
    "sft_floor",
    "seed_style",
    "ours",
    "ours_no_cache",
    "ours_no_divergence",
    "ours_gc",
    "trunk_floor",
    "ref_forward",
)
# not run by default: sft_floor with checkpointing; ours with the top-k cache (k = 256)
DIAGNOSTICS = ("sft_floor_gc", "ours_topk")
FORWARD_ONLY = ("ref_forward",)
RATIOS = {
    "ours/trunk_floor": ("ours", "trunk_floor"),
    "ours/sft_floor": ("ours", "sft_floor"),
    "ours_no_cache/sft_floor": ("ours_no_cache", "sft_floor"),
    "ours_no_divergence/sft_floor": ("ours_no_divergence", "sft_floor"),
    "seed_style/ours": ("seed_style", "ours"),
    "ours_gc/ours": ("ours_gc", "ours"),
    "sft_floor_gc/sft_floor": ("sft_floor_gc", "sft_floor"),
    "trunk_floor/sft_floor": ("trunk_floor", "sft_floor"),
    "ref_forward/sft_floor": ("ref_forward", "sft_floor"),
}
TARGETS = {  # issue 13's targets (CPU, small shape); the sft_floor ratios are reported, not targeted
    "ours/trunk_floor": ("<=", 1.05),
    "seed_style/ours": (">=", 2.0),
    "eval.speedup": (">=", 8.0),
    "mmlu.prefix_cache.speedup": (">=", 3.0),
}
LORA_TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


# ----------------------------------------------------------------------------- model and data
def build_model(shape: dict[str, Any], dtype: torch.dtype, device: torch.device, seed: int):
    from transformers import Olmo2Config, Olmo2ForCausalLM, OlmoConfig, OlmoForCausalLM

    cls_cfg, cls_model = (
        (OlmoConfig, OlmoForCausalLM) if shape["arch"] == "olmo" else (Olmo2Config, Olmo2ForCausalLM)
    )
    cfg = cls_cfg(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=max(2048, shape["seq"]),
        tie_word_embeddings=shape["tie_embeddings"],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls_model(cfg)
    return model.to(dtype)


def make_batches(shape: dict[str, Any], n_batches: int, seed: int, device: torch.device) -> list[dict]:
    """Random token rows of full length; labels on the last answer_fraction of each row; the first
    n_forget rows are forget rows. row_key numbers the rows of all batches."""
    g = torch.Generator().manual_seed(seed)
    B, T, V = shape["batch"], shape["seq"], shape["vocab"]
    prompt = T - max(2, round(T * shape["answer_fraction"]))
    batches = []
    for b in range(n_batches):
        ids = torch.randint(3, V, (B, T), generator=g)
        labels = ids.clone()
        labels[:, :prompt] = -100
        batches.append(
            {
                "input_ids": ids.to(device),
                "attention_mask": torch.ones_like(ids).to(device),
                "labels": labels.to(device),
                "is_forget": (torch.arange(B) < shape["n_forget"]).to(device),
                "row_key": (torch.arange(B) + b * B).to(device),
            }
        )
    return batches


def batch_rows(batches: list[dict]) -> list[dict]:
    """The batches as tokenized rows (what the reference cache is built from)."""
    rows = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            rows.append(
                {
                    "input_ids": batch["input_ids"][i].tolist(),
                    "labels": batch["labels"][i].tolist(),
                    "attention_mask": batch["attention_mask"][i].tolist(),
                    "is_forget": bool(batch["is_forget"][i]),
                    "row_key": int(batch["row_key"][i]),
                }
            )
    return rows


# ----------------------------------------------------------------------------- the steps
def seed_style_loss(pm, batch, obj):
    """The original step: model and reference (adapter disabled, autograd ON) full forwards, full
    log-softmax of both, gather; NPO (token level) + NLL + Rényi divergence over the vocabulary."""
    from llm_unlearn import losses

    ids, mask, labels, is_forget = (
        batch["input_ids"],
        batch["attention_mask"],
        batch["labels"],
        batch["is_forget"],
    )
    logits = pm(input_ids=ids, attention_mask=mask, use_cache=False).logits
    with pm.disable_adapter():
        ref_logits = pm(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    ref_all = torch.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    valid = targets.ne(-100)
    safe = targets.clamp_min(0)[..., None]
    logp = logp_all.gather(-1, safe)[..., 0]
    ref_logp = ref_all.gather(-1, safe)[..., 0]
    f_mask = valid & is_forget[:, None]
    r_mask = valid & ~is_forget[:, None]
    npo = losses.npo_loss(logp[f_mask], ref_logp[f_mask], obj.npo_beta)
    nll = losses.nll_loss(logp[r_mask])
    div = losses.renyi_divergence(logp_all, ref_all, r_mask, obj.renyi_alpha)
    total = obj.forget_weight * npo + obj.retain_weight * nll + obj.divergence_weight * div
    return total, {
        "npo": float(npo.detach()),
        "retain_nll": float(nll.detach()),
        "divergence": float(div.detach()),
    }


class Bench:
    """The model, its adapter, the batches, and one step function per variant."""

    def __init__(
        self,
        shape: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype,
        seed: int,
        cache_dtype: str,
        workdir: Path,
        variants: list[str],
        n_batches: int = 2,
    ):
        from llm_unlearn.config import ObjectiveOptions, TrainOptions
        from llm_unlearn.modeling import apply_lora
        from llm_unlearn.train import cache_build
        from llm_unlearn.train.head import AnswerHeadSelector

        self.shape, self.device, self.dtype = shape, device, dtype
        model = build_model(shape, dtype, device, seed)
        with _load_sibling("harness").quiet_deprecations():  # peft reads is_gradient_checkpointing
            self.pm = apply_lora(model, r=16, alpha=64, dropout=0.0, target_modules=LORA_TARGETS)
        torch.manual_seed(seed + 1)
        with torch.no_grad():  # a trained-looking adapter: model and reference differ
            for n, p in self.pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
        self.pm.train()
        self.params = [p for p in self.pm.parameters() if p.requires_grad]
        self.names = [n for n, p in self.pm.named_parameters() if p.requires_grad]
        self.batches = make_batches(shape, n_batches, seed + 2, device)
        self.selector = AnswerHeadSelector(self.pm)
        self.obj = ObjectiveOptions()
        self.obj_nodiv = ObjectiveOptions(retain_divergence="none")
        opts = TrainOptions()
        t0 = time.perf_counter()
        rows = batch_rows(self.batches)
        kw = dict(
            mode="auto",
            dtype=cache_dtype,
            budget_gib=opts.reference_cache_budget_gib,
            topk=opts.reference_cache_topk,
            selector=self.selector,
        )
        self.cache = cache_build.build_cache(self.pm, rows, self.obj, workdir / "cache", **kw)
        self.cache_nodiv = self.cache_topk = None
        if "ours_no_divergence" in variants:
            self.cache_nodiv = cache_build.build_cache(
                self.pm, rows, self.obj_nodiv, workdir / "cache_nodiv", **kw
            )
        if "ours_topk" in variants:
            self.cache_topk = cache_build.build_cache(
                self.pm, rows, self.obj, workdir / "cache_topk", **dict(kw, mode="topk")
            )
        self.cache_seconds = time.perf_counter() - t0
        self.init_state = [p.detach().clone() for p in self.params]

    # each returns (loss tensor, terms dict) for one batch
    def loss(self, variant: str, batch: dict):
        from llm_unlearn.train.loss import unlearning_loss
        from llm_unlearn.train.reference import compute_reference
        from llm_unlearn.train.step import answer_positions

        plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
        if variant.startswith("sft_floor"):
            loss = self.pm(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                use_cache=False,
            ).loss
            return loss, {"sft_nll": float(loss.detach())}
        if variant == "seed_style":
            return seed_style_loss(self.pm, batch, self.obj)
        if variant in ("ours", "ours_gc"):
            return unlearning_loss(
                self.pm, plain, self.obj, self.selector, self.cache.lookup(batch, self.obj)
            )
        if variant == "ours_topk":
            return unlearning_loss(
                self.pm, plain, self.obj, self.selector, self.cache_topk.lookup(batch, self.obj)
            )
        if variant == "ours_no_cache":
            return unlearning_loss(self.pm, plain, self.obj, self.selector)
        if variant == "ours_no_divergence":
            ref = self.cache_nodiv.lookup(batch, self.obj_nodiv)
            return unlearning_loss(self.pm, plain, self.obj_nodiv, self.selector, ref)
        if variant == "trunk_floor":
            pos = answer_positions(batch["labels"])
            hidden = (
                self.pm.get_base_model()
                .get_decoder()(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                )
                .last_hidden_state
            )
            loss = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pos.flat).float().pow(2).mean()
            return loss, {"hidden_sq": float(loss.detach())}
        if variant == "ref_forward":
            ref = compute_reference(self.pm, self.selector, plain, self.obj)
            return torch.zeros(()), {"ref_forget_logp_sum": float(ref.forget_logp.sum())}
        raise ValueError(f"unknown variant {variant}")

    @contextlib.contextmanager
    def checkpointing(self, on: bool):
        hz = _load_sibling("harness")
        base = self.pm.get_base_model()
        if on:
            hz.checkpointing_on(base, {"use_reentrant": False})
        try:
            yield
        finally:
            if on:
                hz.checkpointing_off(base)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# ----------------------------------------------------------------------------- memory probes
class _VocabWatch:
    """Largest tensor produced by any op (forward or backward) whose last dimension is the vocabulary
    (views of the weights excluded)."""

    def __init__(self, vocab: int, skip_storages: set[int]):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        watch = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if (
                        isinstance(t, torch.Tensor)
                        and t.dim()
                        and t.shape[-1] == vocab
                        and t.untyped_storage().data_ptr() not in skip_storages
                    ):  # not a weight view
                        nbytes = t.numel() * t.element_size()
                        if nbytes > watch.max_bytes:
                            watch.max_bytes, watch.shape, watch.dtype = nbytes, list(t.shape), str(t.dtype)
                            watch.op = str(func)
                return out

        self.mode = Mode()
        self.max_bytes, self.shape, self.dtype, self.op = 0, None, None, None


@contextlib.contextmanager
def memory_probes(bench: Bench, out: dict[str, Any]):
    """Wrap one step: bytes saved for backward (parameters excluded), largest vocabulary-sized tensor,
    and on CUDA the peak allocation above what was allocated before the step."""
    param_storages = {p.untyped_storage().data_ptr() for p in bench.pm.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in param_storages:
            saved[ptr] = max(saved.get(ptr, 0), st.nbytes())
        return t

    watch = _VocabWatch(bench.shape["vocab"], param_storages)
    if bench.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), watch.mode:
        yield
    if bench.device.type == "cuda":
        torch.cuda.synchronize()
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated() - before)
    out.update(
        {
            "saved_for_backward_bytes": int(sum(saved.values())),
            "largest_vocab_tensor_bytes": int(watch.max_bytes),
            "largest_vocab_tensor_shape": watch.shape,
            "largest_vocab_tensor_dtype": watch.dtype,
            "largest_vocab_tensor_op": watch.op,
        }
    )


# ----------------------------------------------------------------------------- the loop
def run_steps(
    bench: Bench, variants: list[str], steps: int, warmup: int, probes: bool = True, progress=None
) -> dict[str, dict[str, Any]]:
    """Round-robin: each round, every variant loads its own adapter state, takes one step (timed:
    cache lookup, forward, backward, optimizer step, zero_grad), and saves its state. The last warm-up
    round runs under the memory probes (untimed); the first gives the step-0 losses."""
    if warmup < 1:
        raise ValueError("at least one warm-up round is needed (it carries the memory probes)")
    states = {v: [t.clone() for t in bench.init_state] for v in variants}
    opts = {v: torch.optim.AdamW(bench.params, lr=1e-4, weight_decay=0.0) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu_times: dict[str, list[float]] = {v: [] for v in variants}
    step0: dict[str, dict[str, float]] = {}
    memory: dict[str, dict[str, Any]] = {v: {} for v in variants}
    for r in range(warmup + steps):
        batch = bench.batches[r % len(bench.batches)]
        order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotate the order each round
        for v in order:
            if progress is not None:
                phase = f"warm-up round {r + 1}/{warmup}" if r < warmup else f"round {r + 1 - warmup}/{steps}"
                progress.begin(f"{phase}, {v}")
            with torch.no_grad():
                for p, s in zip(bench.params, states[v]):
                    p.copy_(s)
            probe = (
                memory_probes(bench, memory[v]) if probes and r == warmup - 1 else contextlib.nullcontext()
            )
            with bench.checkpointing(v.endswith("_gc")), probe:
                bench.sync()
                t0, c0 = time.perf_counter(), time.process_time()
                loss, terms = bench.loss(v, batch)
                if v not in FORWARD_ONLY:
                    loss.backward()
                    opts[v].step()
                    opts[v].zero_grad(set_to_none=True)
                bench.sync()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                step0[v] = {"total": float(loss.detach()), **terms}
            if r >= warmup:
                times[v].append(dt)
                cpu_times[v].append(dc)
            del loss
            with torch.no_grad():
                for p, s in zip(bench.params, states[v]):
                    s.copy_(p)
    with torch.no_grad():
        for p, s in zip(bench.params, bench.init_state):
            p.copy_(s)
    tokens = bench.shape["batch"] * bench.shape["seq"]
    answer_tokens = int(
        sum(int(b["labels"][:, 1:].ne(-100).sum()) for b in bench.batches) / len(bench.batches)
    )
    out = {}
    for v in variants:
        med = statistics.median(times[v])
        out[v] = {
            "ms_per_step": round(med * 1e3, 2),
            "ms_min": round(min(times[v]) * 1e3, 2),
            "ms_steps": [round(t * 1e3, 2) for t in times[v]],
            # CPU time of this process per step (median): what the step costs when other work
            # preempts it on a shared machine (all threads summed)
            "cpu_ms_per_step": round(statistics.median(cpu_times[v]) * 1e3, 2),
            "tokens_per_s": round(tokens / med, 1),
            "answer_tokens_per_s": round(answer_tokens / med, 1),
            "loss_step0": step0[v],
            "memory": memory[v],
        }
    return out


# ----------------------------------------------------------------------------- evaluation
EVAL_SIZES = {
    # quick: for tests (seconds); demo: the demo's model and data, memorized for 100 steps only, so that
    # the scores are partial (neither all 0 nor all 1) and their agreement means something
    "quick": {
        "entities": 2,
        "hidden": 32,
        "layers": 1,
        "mem_steps": 30,
        "max_new_tokens": 8,
        "vocab": 300,
        "repeats": 1,
    },
    "demo": {
        "entities": 8,
        "hidden": 128,
        "layers": 4,
        "mem_steps": 100,
        "max_new_tokens": 48,
        "vocab": 1024,
        "repeats": 3,
    },
}


def _generations(path: Path) -> list[str]:
    rows = [json.loads(x) for x in (path / "generations.jsonl").read_text().splitlines() if x.strip()]
    return [r["model_output"] for r in sorted(rows, key=lambda r: r["id"])]


def eval_bench(
    device: torch.device, size: str, workdir: Path, batch_size: int = 32, progress=None
) -> dict[str, Any]:
    """Batched evaluation vs official-compat on the same items of a (partially) memorized model.

    Items/s = items / wall time of `evaluate_semeval` (generation, answer NLL, scoring; no output
    files), after a warm-up call that pays the one-time imports; median of `repeats` timed runs
    (official-compat: repeats - 1, at least 1). One more untimed run per mode writes the outputs, whose
    generations are compared."""
    import types

    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
    from llm_unlearn.demo import MEMORIZATION, memorization_texts
    from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval
    from llm_unlearn.finetune import memorize_tiny
    from llm_unlearn.tiny import train_bpe_tokenizer

    sz = EVAL_SIZES[size]
    # progress steps: memorize (weight 6), warm-up, per mode an untimed run and the timed runs
    n_timed = sz["repeats"] + max(1, sz["repeats"] - 1)
    prog = _load_sibling("harness").open_progress(progress, 4 + n_timed, 6 + 1 + 2 + n_timed)
    prog.begin(f"memorizing the demo data ({sz['mem_steps']} steps)", weight=6, force=True)
    ds = make_synthetic_dataset(n_entities_per_task=sz["entities"], seed=0)
    write_synthetic_dataset(ds, workdir / "eval-data")
    bundle = load_unlearning_data(workdir / "eval-data")
    texts = memorization_texts(ds.forget + ds.retain, ds.documents)
    tok = train_bpe_tokenizer(texts, vocab_size=sz["vocab"])
    t0 = time.perf_counter()
    model, info = memorize_tiny(
        texts,
        tok,
        **MEMORIZATION,
        tiny_hidden=sz["hidden"],
        tiny_layers=sz["layers"],
        tiny_intermediate=512,
        max_steps=sz["mem_steps"],
        lr=3e-3,
        progress=False,
    )
    mem_seconds = time.perf_counter() - t0
    model = model.to(device).eval()
    n_items = len(bundle.forget) + len(bundle.retain)
    kw = dict(max_new_tokens=sz["max_new_tokens"], batch_size=batch_size, progress=False)
    warm = types.SimpleNamespace(forget=bundle.forget[:2], retain=bundle.retain[:2], files=[])
    prog.begin("warm-up calls (2 items, both modes)")
    with _load_sibling("harness").quiet_small_splits():
        evaluate_semeval(model, tok, warm, **kw)
        evaluate_semeval(model, tok, warm, official_compat=True, **kw)
    out: dict[str, Any] = {
        "model": {
            "hidden": sz["hidden"],
            "layers": sz["layers"],
            "vocab": len(tok),
            "memorize_steps": info["steps"],
            "memorize_seconds": round(mem_seconds, 1),
            "final_epoch_loss": round(info["final_epoch_loss"], 5),
        },
        "items": n_items,
        "max_new_tokens": sz["max_new_tokens"],
        "batch_size": batch_size,
    }
    res, gens = {}, {}
    for name, compat in (("batched", False), ("official_compat", True)):
        # one untimed run writes the outputs (generations.jsonl, report, plots); the timed runs write nothing
        prog.begin(f"{name}: untimed run writing the outputs ({n_items} items)")
        res[name] = evaluate_semeval(
            model, tok, bundle, official_compat=compat, output_dir=workdir / f"eval-{name}", **kw
        )
        gens[name] = _generations(workdir / f"eval-{name}")
        runs = []
        n_runs = sz["repeats"] if not compat else max(1, sz["repeats"] - 1)
        for i in range(n_runs):
            prog.begin(f"{name}: timed run {i + 1}/{n_runs} ({n_items} items)")
            t0 = time.perf_counter()
            res[name] = evaluate_semeval(model, tok, bundle, official_compat=compat, **kw)
            runs.append(time.perf_counter() - t0)
        dt = statistics.median(runs)
        r = res[name]
        out[name] = {
            "seconds": round(dt, 3),
            "seconds_runs": [round(x, 3) for x in runs],
            "items_per_s": round(n_items / dt, 2),
            "harmonic-mean-task-aggregate": r["harmonic-mean-task-aggregate"],
            "aggregated-terms": [round(x, 4) for x in r["aggregated-terms"]],
            "stages": {k: v for k, v in r["timing"].items() if isinstance(v, dict)},
        }
    out["speedup"] = round(out["batched"]["items_per_s"] / out["official_compat"]["items_per_s"], 2)
    a, b = res["batched"], res["official_compat"]
    agg_a, agg_b = a["harmonic-mean-task-aggregate"], b["harmonic-mean-task-aggregate"]
    out["aggregate_abs_diff"] = None if agg_a is None or agg_b is None else abs(agg_a - agg_b)
    terms_a, terms_b = a["aggregated-terms"], b["aggregated-terms"]
    out["terms_max_abs_diff"] = (
        max((abs(x - y) for x, y in zip(terms_a, terms_b)), default=0.0)
        if len(terms_a) == len(terms_b)
        else None
    )
    out["identical_generations"] = round(
        sum(x == y for x, y in zip(gens["batched"], gens["official_compat"])) / max(len(gens["batched"]), 1),
        4,
    )
    out["scores_agree"] = (
        out["aggregate_abs_diff"] is not None
        and out["aggregate_abs_diff"] <= 0.005
        and out["terms_max_abs_diff"] is not None
        and out["terms_max_abs_diff"] <= 0.005
    )
    return out


# ----------------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _ratio(variants: dict[str, Any], a: str, b: str, key: str = "ms_per_step") -> float | None:
    if a in variants and b in variants:
        return round(variants[a][key] / variants[b][key], 3)
    return None


def target_status(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (op, bound) in TARGETS.items():
        if name == "eval.speedup":
            value = (result.get("eval") or {}).get("speedup")
        elif name == "mmlu.prefix_cache.speedup":
            value = ((result.get("mmlu") or {}).get("prefix_cache") or {}).get("speedup")
        else:
            value = result["ratios"].get(name)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        if name == "eval.speedup" and met is not None:  # and the same scores
            met = met and bool(result["eval"].get("scores_agree"))
        if name == "mmlu.prefix_cache.speedup" and met is not None:  # and identical float32 predictions
            met = met and result["mmlu"]["prefix_cache"].get("agreement") == 1.0
        out[name] = {"value": value, "target": f"{op} {bound}", "met": met}
    return out


def _load_sibling(name: str):
    """benchmarks/<name>.py as a module (bench.py is also loaded by path, from the tests)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


MMLU_SIZES = {
    "small": {"n_subjects": 2, "n_test": 6, "repeats": 3},
    "quick": {
        "n_subjects": 2,
        "n_test": 3,
        "repeats": 1,
        "small": {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "vocab": 512},
    },
}


def _mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:8.1f}"


def format_table(result: dict[str, Any]) -> str:
    v = result["variants"]
    lines = [
        f"shape {result['shape']} on {result['device']} ({result['device_name']}), {result['dtype']}, "
        f"{result['threads']} thread(s), median of {result['steps']} steps",
        f"{'variant':<20}{'ms/step':>10}{'tokens/s':>11}{'saved MiB':>11}{'vocab-max MiB':>15}"
        + ("{:>13}".format("cuda MiB") if result["device"] == "cuda" else "")
        + "   step-0 loss",
    ]
    for name, row in v.items():
        mem = row.get("memory", {})
        cuda = (
            "{:>13}".format(_mib(mem.get("cuda_max_allocated_bytes"))) if result["device"] == "cuda" else ""
        )
        lines.append(
            f"{name:<20}{row['ms_per_step']:>10.1f}{row['tokens_per_s']:>11.0f}"
            f"{_mib(mem.get('saved_for_backward_bytes')):>11}{_mib(mem.get('largest_vocab_tensor_bytes')):>15}"
            f"{cuda}   {row['loss_step0']['total']:.6f}"
        )
    lines.append("ratios (time: median wall, fastest wall, median process CPU):")
    for name, value in result["ratios"].items():
        if value is None:
            continue
        t = result["targets"].get(name)
        tgt = (
            f"   target {t['target']}: {'met' if t['met'] else 'MISSED'}"
            if t and t["met"] is not None
            else ""
        )
        lines.append(
            f"  {name:<30}{value:>7.3f}{result['ratios_min'][name]:>8.3f}{result['ratios_cpu'][name]:>8.3f}{tgt}"
        )
    mm = result.get("mmlu")
    if mm:
        pc, t = mm["prefix_cache"], result["targets"]["mmlu.prefix_cache.speedup"]
        bf = pc.get("bfloat16") or {}
        lines.append(
            f"mmlu ({mm['questions']} questions, 5-shot, prompts {mm['prompt_tokens']['prompt_mean']} tokens of which "
            f"{mm['prompt_tokens']['prefix_mean']} shared): prefix cache {pc['questions_per_s']} q/s, whole prompt "
            f"{mm['whole_prompt']['questions_per_s']} q/s, speedup {pc['speedup']} (target {t['target']}: "
            f"{'met' if t['met'] else 'MISSED'}); float32 agreement {pc['agreement']}, bfloat16 agreement "
            f"{bf.get('agreement')} (speedup {bf.get('speedup')})"
        )
    ev = result.get("eval")
    if ev:
        if ev.get("stages_items_per_s"):
            lines.append(
                "eval stages, items/s (batched / official-compat): "
                + ", ".join(
                    f"{k} {v['batched']} / {v['official_compat']}"
                    for k, v in ev["stages_items_per_s"].items()
                )
            )
        t = result["targets"]["eval.speedup"]
        lines.append(
            f"eval: batched {ev['batched']['items_per_s']} items/s, official-compat "
            f"{ev['official_compat']['items_per_s']} items/s, speedup {ev['speedup']} "
            f"(target {t['target']}: {'met' if t['met'] else 'MISSED'}); aggregate "
            f"{ev['batched']['harmonic-mean-task-aggregate']} vs "
            f"{ev['official_compat']['harmonic-mean-task-aggregate']}, max term diff "
            f"{ev['terms_max_abs_diff']}, identical generations {ev['identical_generations']} "
            f"(agree: {ev['scores_agree']})"
        )
    c = result["checks"]
    lines.append(
        f"checks: |ours - ours_no_cache| at step 0 = {c.get('ours_vs_ours_no_cache')}, "
        f"|seed_style - ours_no_cache| = {c.get('seed_style_vs_ours_no_cache')}"
    )
    return "\n".join(lines)


def add_eval_stages(ev: dict[str, Any], mm: dict[str, Any] | None) -> None:
    """``ev["stages_items_per_s"]``: items/s per stage of both modes, and MMLU's questions/s."""
    if "stages" not in ev.get("batched", {}):
        return
    ev["stages_items_per_s"] = {
        k: {
            "batched": ev["batched"]["stages"][k]["items_per_s"],
            "official_compat": ev["official_compat"]["stages"].get(k, {}).get("items_per_s"),
        }
        for k in ev["batched"]["stages"]
        if isinstance(ev["batched"]["stages"][k], dict) and "items_per_s" in ev["batched"]["stages"][k]
    }
    if mm is not None:
        ev["stages_items_per_s"]["mmlu"] = {
            "batched": mm["prefix_cache"]["questions_per_s"],
            "official_compat": mm["whole_prompt"]["questions_per_s"],
            "note": "questions/s of the MMLU benchmark: prefix cache vs whole prompts "
            "(Open-Instruct scores MMLU batched; there is no one-at-a-time MMLU)",
        }


def merge_eval(out: Path, eval_json: Path) -> dict[str, Any]:
    """Replace the evaluation section of the results ``out`` by ``eval_json`` (written by
    ``benchmarks/eval_bench.py``, the realistic check run on its own) and recompute the targets."""
    result = json.loads(out.read_text())
    ev = json.loads(eval_json.read_text())
    ev["size"], ev["from"] = "realistic", str(eval_json)
    add_eval_stages(ev, result.get("mmlu"))
    result["eval"] = ev
    result["targets"] = target_status(result)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)
    return result


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="model dtype (default: float32 on cpu, bfloat16 on cuda)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="measured rounds per repeat (default: 5 x 2 repeats = 10 rounds; --quick: 2 x 3); "
        "--steps N alone: N rounds, one repeat",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats of --steps rounds; each gives one ratio of medians, reported min/median/max "
        "(default 2; --quick: 3)",
    )
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds, excluded (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest and steadiest "
        "for this size when other work shares the CPU)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated, from " + ",".join(VARIANTS + DIAGNOSTICS)
        + " (default: the first eight; --quick: " + ",".join(QUICK_VARIANTS) + ")",
    )  # fmt: skip
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the *_gc variants (default on)",
    )
    p.add_argument(
        "--cache-dtype",
        choices=["float16", "bfloat16", "float32"],
        default="float16",
        help="reference cache dtype (default float16, the config default)",
    )
    p.add_argument(
        "--eval",
        choices=["realistic", "demo", "quick", "none"],
        default="realistic",
        help="evaluation speed check: realistic (default: small-shape model memorizing a slice of "
        "../shared/data/semeval25, 256 new tokens; demo when that data is absent), demo (the demo's "
        "model), quick (tests), none",
    )
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="batched evaluation's batch size (default: the evaluate command's default)",
    )
    p.add_argument(
        "--eval-model-cache",
        default=None,
        help="directory to keep the memorized evaluation model in (reused when the setup is the same)",
    )
    p.add_argument(
        "--merge-eval",
        default=None,
        help="run nothing: put this JSON (written by benchmarks/eval_bench.py, the realistic check run "
        "on its own) as the evaluation section of --out (default benchmarks/results/<shape>-<device>.json) "
        "and recompute its targets; with --eval none, the two parts of make bench run separately",
    )
    p.add_argument(
        "--mmlu",
        choices=["small", "quick", "none"],
        default="small",
        help="MMLU prefix cache vs whole prompts: small shape (default), quick (tests), none",
    )
    p.add_argument(
        "--scaling",
        action="store_true",
        help="also run benchmarks/scaling.py (step time and peak memory over sequence length, "
        "vocabulary and answer fraction; make bench sets it)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="make bench-quick: the targeted step ratios (" + ",".join(QUICK_VARIANTS) + ", 3 repeats of "
        "2 rounds), MMLU on one subject, the evaluation check on the demo model; writes "
        "results/<shape>-<device>.quick.<part>.json per part and <shape>-<device>.quick.json",
    )
    p.add_argument(
        "--part",
        default=None,
        help="run these registered parts only (comma-separated; make bench-<part>), each written to "
        "results/<shape>-<device>.<part>.json; --list-parts names them",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="run nothing: merge every registered part's file into results/<shape>-<device>.json "
        "(make bench-merge) and print the summary beside the committed numbers",
    )
    p.add_argument("--list-parts", action="store_true", help="print the registered parts' names")
    p.add_argument("--results-dir", default=None, help="where part files go (default benchmarks/results)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<shape>-<device>.json)")
    p.add_argument(
        "--device-name", default=None, help="override the recorded device name (e.g. nvidia-smi's)"
    )
    p.add_argument(
        "--note", default=None, help="recorded as machine.note (e.g. what else was running on the machine)"
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the parts
# quick (make bench-quick): the full run's loop (every variant), 3 repeats of 2 measured rounds. Not a
# subset of the variants: a ratio depends on the loop it is measured in. On the shared machine, at the
# same load (2.3-3.2), seed_style / ours read 1.53 [1.52-1.59] in a loop of the five reported variants
# and 2.41 [2.39-2.43] in the loop of all eight (seed_style's own step 6.2 s vs 9.9 s: what runs
# between its steps changes what its [B, T, V] buffers cost), and the committed 2.16 comes from the
# loop of all eight.
QUICK_VARIANTS = VARIANTS
QUICK_STEPS, QUICK_REPEATS = 2, 3
FULL_REPEATS = 2  # the full run's 10 measured rounds as 2 repeats of 5
# one subject of the small fixture's two, float32 only (bfloat16 matrix products on this CPU ran ~3.5x
# slower than float32 in a trial of this part: the bfloat16 pair took about as long as the rest of it)
QUICK_MMLU = {"n_subjects": 1, "n_test": 6, "repeats": 3, "bf16": False}


def _setup(args) -> dict[str, Any]:
    """Device, dtype, variants and the measured rounds, from the arguments (one place for all parts)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    if args.variants is None:
        variants = list(QUICK_VARIANTS if args.quick else VARIANTS)
    else:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS + DIAGNOSTICS]
    if bad:
        raise SystemExit(f"error: unknown variant(s) {bad}; known: {', '.join(VARIANTS + DIAGNOSTICS)}")
    if not args.gradient_checkpointing:
        variants = [v for v in variants if not v.endswith("_gc")]
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else None)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else None)
    if steps is None and repeats is None:  # the full run: 10 rounds as 2 repeats of 5
        steps, repeats = 5, FULL_REPEATS
    elif repeats is None:  # --steps N alone: N rounds, one repeat (the previous meaning of --steps)
        repeats = 1
    elif steps is None:
        steps = 5
    return {
        "device": device,
        "dtype_name": dtype_name,
        "dtype": getattr(torch, dtype_name),
        "variants": variants,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "shape": dict(SHAPES[args.shape]),
    }


def _header(args, setup: dict[str, Any]) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "schema": SCHEMA,
        "shape": args.shape,
        "shape_config": setup["shape"],
        "device": setup["device"].type,
        "device_name": args.device_name or device_name(setup["device"]),
        "dtype": setup["dtype_name"],
        "threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "platform": platform.platform(),
        "machine": {"cpu_count": os.cpu_count(), "note": args.note},
    }


def part_steps(args, ctx: dict[str, Any]) -> dict[str, Any]:
    """The step ratios: every variant in one round-robin loop (see the module docstring)."""
    hz = _load_sibling("harness")
    setup = ctx["setup"]
    variants, per, repeats = setup["variants"], setup["steps_per_repeat"], setup["repeats"]
    n = per * repeats
    n_steps = (args.warmup + n) * len(variants)
    # the setup (model, adapter, reference cache) weighs about 4 steps
    prog = ctx["progress"](1 + n_steps, 4 + n_steps)
    prog.begin("building the model, its adapter and the reference cache", weight=4, force=True)
    bench = Bench(
        setup["shape"], setup["device"], setup["dtype"], args.seed, args.cache_dtype, ctx["workdir"], variants
    )
    results = run_steps(bench, variants, n, args.warmup, progress=prog)
    step0 = {v: r["loss_step0"]["total"] for v, r in results.items()}
    checks = {}
    if "ours" in step0 and "ours_no_cache" in step0:
        checks["ours_vs_ours_no_cache"] = abs(step0["ours"] - step0["ours_no_cache"])
    if "seed_style" in step0 and "ours_no_cache" in step0:
        checks["seed_style_vs_ours_no_cache"] = abs(step0["seed_style"] - step0["ours_no_cache"])
    if "ours_gc" in step0 and "ours" in step0:
        checks["ours_gc_vs_ours"] = abs(step0["ours_gc"] - step0["ours"])
    section: dict[str, Any] = {
        "steps": n,
        "steps_per_repeat": per,
        "repeats": repeats,
        "warmup": args.warmup,
        "answer_tokens_per_batch": int(bench.batches[0]["labels"][:, 1:].ne(-100).sum()),
        "objective": {
            "npo_level": bench.obj.npo_level,
            "retain_divergence": bench.obj.retain_divergence,
            "renyi_alpha": bench.obj.renyi_alpha,
            "npo_beta": bench.obj.npo_beta,
        },
        "lora": {"r": 16, "alpha": 64, "targets": LORA_TARGETS},
        "reference_cache": {
            "mode": bench.cache.header["retain"],
            "dtype": bench.cache.dtype,
            "bytes": bench.cache.nbytes(),
            "topk_bytes": bench.cache_topk.nbytes() if bench.cache_topk else None,
            "build_seconds_all_caches": round(bench.cache_seconds, 3),
        },
        "variants": results,
        "ratios": {name: _ratio(results, a, b) for name, (a, b) in RATIOS.items()},
        # the same from each variant's fastest step, and from the process CPU time per step: less
        # sensitive to other work on a shared machine
        "ratios_min": {name: _ratio(results, a, b, "ms_min") for name, (a, b) in RATIOS.items()},
        "ratios_cpu": {name: _ratio(results, a, b, "cpu_ms_per_step") for name, (a, b) in RATIOS.items()},
        "checks": checks,
    }
    # the confidence: each repeat's ratio of medians, min / median / max over the repeats
    section["ratio_repeats"] = {
        name: hz.ratio_spread(section, a, b) for name, (a, b) in RATIOS.items() if {a, b} <= set(results)
    }
    if "ours_gc" in results and "ours" in results:
        m0, m1 = results["ours"]["memory"], results["ours_gc"]["memory"]
        key = "cuda_max_allocated_bytes" if setup["device"].type == "cuda" else "saved_for_backward_bytes"
        section["gradient_checkpointing"] = {
            "memory_metric": key,
            "ours_bytes": m0[key],
            "ours_gc_bytes": m1[key],
            "memory_saved_fraction": round(1 - m1[key] / m0[key], 3) if m0[key] else None,
            "time_ratio": section["ratios"]["ours_gc/ours"],
        }
    return section


def part_mmlu(args, ctx: dict[str, Any]) -> dict[str, Any]:
    """MMLU with the shared-prefix cache against whole prompts (eval_bench.mmlu_bench)."""
    size = "quick-fixture" if args.quick and args.mmlu == "small" else args.mmlu
    if size == "none":
        return {"mmlu": None}
    kw = dict(QUICK_MMLU) if size == "quick-fixture" else dict(MMLU_SIZES[size])
    eb = _load_sibling("eval_bench")
    mm = eb.mmlu_bench(ctx["setup"]["device"], ctx["workdir"], progress=ctx["progress"], **kw)
    mm["size"] = size
    mm["prefix_cache"].setdefault("bfloat16", None)  # the full run's key; null: not measured
    return {"mmlu": mm}


def part_eval(args, ctx: dict[str, Any]) -> dict[str, Any]:
    """The evaluation speed check: realistic (SemEval slice, full run), demo (the demo's model: quick,
    or without the SemEval data), quick (tests)."""
    device, workdir = ctx["setup"]["device"], ctx["workdir"]
    eval_size = "demo" if args.quick and args.eval == "realistic" else args.eval
    if eval_size == "none":
        return {"eval": None}
    ev = None
    if eval_size == "realistic":
        eb = _load_sibling("eval_bench")
        kw = {} if args.eval_batch_size is None else {"batch_size": args.eval_batch_size}
        cache = Path(args.eval_model_cache) if args.eval_model_cache else None
        if eb.semeval_slice(1, 1) is None:
            print(
                "eval: ../shared/data/semeval25 not found; running the demo-size check instead",
                file=sys.stderr,
            )
            eval_size = "demo"
        else:
            ev = eb.semeval_bench(device, workdir, model_cache=cache, progress=ctx["progress"], **kw)
    if eval_size in ("demo", "quick"):
        ev = eval_bench(device, eval_size, workdir, args.eval_batch_size or 32, progress=ctx["progress"])
    ev["size"] = eval_size
    return {"eval": ev}


def part_scaling(args, ctx: dict[str, Any]) -> dict[str, Any]:
    """Step time and peak memory over sequence length, vocabulary and answer fraction (scaling.py);
    also writes results/scaling-<device>.json and .png (the README's scaling table and plot)."""
    sc = _load_sibling("scaling")
    setup = ctx["setup"]
    res = sc.run(
        device=setup["device"].type,
        dtype=setup["dtype_name"],
        threads=args.threads,
        out_dir=ctx["results"],
        progress=ctx["progress"],
        **ctx.get("scaling_kw", {}),
    )
    return {"scaling": res}


def _register_parts() -> None:
    hz = _load_sibling("harness")
    # a priori seconds on 2 cores (from the committed runs' timings, load ~1.5-2.6): only the first
    # time-left estimate of each part; the estimate follows the measured speed from the first step on
    hz.register_part("steps", "training step ratios (one round-robin loop)", part_steps,
                     full_s=180, quick_s=130)  # fmt: skip
    hz.register_part("mmlu", "MMLU prefix cache vs whole prompts", part_mmlu, full_s=45, quick_s=25)
    hz.register_part("eval", "evaluation speed: batched vs official-compat", part_eval,
                     full_s=440, quick_s=70)  # fmt: skip
    hz.register_part("scaling", "scaling over sequence length, vocabulary, answer fraction", part_scaling,
                     full_s=150)  # fmt: skip


def run_part(name: str, args, setup: dict[str, Any], workdir: Path, results: Path, **extra) -> dict[str, Any]:
    """Run one registered part with its progress lines; returns its part file's content."""
    hz = _load_sibling("harness")
    part = hz.PARTS[name]
    small_cpu = args.shape == "small" and setup["device"].type == "cpu"
    estimate = (part.quick_s if args.quick else part.full_s) if small_cpu else None
    made: list = []

    def progress(units: int, total_weight: float | None = None):
        if args.no_progress:
            prog = hz.NoProgress()
        else:
            prog = hz.Progress(name, units, estimate, total_weight=total_weight)
        made.append(prog)
        return prog.start(part.title + (" (quick)" if args.quick else ""))

    t0, load0, started = time.time(), hz.loadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with hz.quiet_deprecations():
            section = part.run(args, {"setup": setup, "workdir": workdir, "results": results,
                                      "progress": progress, **extra})  # fmt: skip
    finally:
        for prog in made:
            prog.__exit__(None, None, None)
    seconds = round(time.time() - t0, 1)
    for prog in made:
        prog.close()
    return {
        "schema": hz.PART_SCHEMA,
        "part": name,
        "quick": bool(args.quick),
        "shape": args.shape,
        "device": setup["device"].type,
        "dtype": setup["dtype_name"],
        "threads": torch.get_num_threads(),
        "header": _header(args, setup),
        "section": section,
        "seconds": seconds,
        "loadavg_start": load0,
        "loadavg_end": hz.loadavg(),
        "started_at": started,
    }


def finish(files: dict[str, dict[str, Any]], out: Path | None) -> dict[str, Any]:
    """Merge part files into one result, add the evaluation's stage table and the targets; write it."""
    hz = _load_sibling("harness")
    result = hz.merge_parts(files)
    for key in ("variants", "ratios", "ratios_min", "ratios_cpu", "checks", "eval", "mmlu"):
        result.setdefault(key, {} if key not in ("eval", "mmlu") else None)
    if result.get("eval"):
        add_eval_stages(result["eval"], result.get("mmlu"))
    result["targets"] = target_status(result)
    # the confidence of each step target: its ratio over the repeats and the verdict from their median
    for name, t in result["targets"].items():
        sp = (result.get("ratio_repeats") or {}).get(name)
        if sp is not None:
            t["repeats"] = {k: sp[k] for k in ("min", "median", "max", "n")}
            t["verdict"] = hz.verdict(sp["median"] if sp["n"] > 1 else t["value"], sp, TARGETS[name])
    if out is not None:
        hz.write_json(out, result)
    return result


def _print_summary(result: dict[str, Any], reference_path: Path) -> None:
    hz = _load_sibling("harness")
    ref = hz.committed(reference_path)
    if ref is not None and "scaling" not in ref and result.get("scaling"):  # the README's scaling table
        ref["scaling"] = hz.committed(reference_path.parent / f"scaling-{result['device']}.json")
    rel = (
        reference_path.relative_to(ROOT.parent)
        if reference_path.is_relative_to(ROOT.parent)
        else reference_path
    )
    print(hz.format_summary(result, ref, f"the committed {rel}"))


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    hz = _load_sibling("harness")
    if not hz.PARTS:
        _register_parts()
    results_dir = Path(args.results_dir) if args.results_dir else ROOT / "results"
    if args.list_parts:
        print(" ".join(hz.part_names(quick=args.quick)))
        return {}
    if args.merge_eval:
        out = Path(args.out) if args.out else ROOT / "results" / f"{args.shape}-{args.device}.json"
        result = merge_eval(out, Path(args.merge_eval))
        print(format_table(result))
        print(f"evaluation section of {out} replaced by {args.merge_eval}")
        return result
    torch.set_num_threads(args.threads)
    setup = _setup(args)
    dev = setup["device"].type
    committed_path = hz.merged_path(ROOT / "results", args.shape, dev)
    if args.merge:  # make bench-merge: every registered part's file -> <shape>-<device>.json
        names = hz.part_names(quick=args.quick)
        paths = {n: hz.part_path(results_dir, args.shape, dev, n, args.quick) for n in names}
        missing = [n for n, p in paths.items() if not p.is_file()]
        if missing:
            raise SystemExit(
                "error: no result yet for part(s) " + ", ".join(missing) + "; run "
                + ", ".join(f"make bench-{n}" for n in missing)
            )  # fmt: skip
        files = {n: json.loads(p.read_text()) for n, p in paths.items()}
        out = Path(args.out) if args.out else hz.merged_path(results_dir, args.shape, dev, args.quick)
        result = finish(files, out)
        if result.get("variants"):
            print(format_table(result))
        _print_summary(result, committed_path)
        print(f"merged {', '.join(paths)} into {out}")
        return result
    if args.part:  # make bench-<part>: one part, its own file
        names = [n.strip() for n in args.part.split(",") if n.strip()]
    elif args.quick:
        names = hz.part_names(quick=True)
    else:  # the previous single-process run: steps, mmlu, eval (+ scaling with --scaling)
        names = ["steps", "mmlu", "eval"] + (["scaling"] if args.scaling else [])
    unknown = [n for n in names if n not in hz.PARTS]
    if unknown:
        raise SystemExit(f"error: unknown part(s) {unknown}; known: {', '.join(hz.PARTS)}")
    write_parts = bool(args.part or args.quick)
    files: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="llm-unlearn-bench-") as tmp:
        for name in names:
            if not write_parts and name == "scaling":
                continue  # after the merged file is written, as before
            files[name] = run_part(
                name, args, setup, Path(tmp), results_dir if write_parts else ROOT / "results"
            )
            if write_parts:
                path = hz.part_path(results_dir, args.shape, dev, name, args.quick)
                hz.write_json(path, files[name])
                print(f"part {name}: written to {path} ({files[name]['seconds']:.0f}s)", file=sys.stderr)
    if args.part:  # one part alone: its own summary rows, the merge comes later
        result = finish(files, None)
        if result.get("variants"):
            print(format_table(result))
        _print_summary(result, committed_path)
        return result
    if args.quick:
        out = Path(args.out) if args.out else hz.merged_path(results_dir, args.shape, dev, True)
    else:
        out = Path(args.out) if args.out else committed_path
    result = finish(files, out)
    print(format_table(result))
    print(f"written to {out} ({result['seconds']:.0f}s)")
    if args.quick:
        _print_summary(result, committed_path)
    if args.scaling and not write_parts:
        sc = _load_sibling("scaling")
        res = sc.run(device=dev, dtype=setup["dtype_name"], threads=args.threads, out_dir=out.parent)
        print(sc.format_table(res))
        print(f"scaling: written to {out.parent / f'scaling-{dev}.json'} and .png ({res['seconds']:.0f}s)")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent / "src"))  # run from a checkout without installing
    main()
