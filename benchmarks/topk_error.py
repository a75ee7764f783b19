"""How far is the top-k reference cache from the full one? Measured on the demo-size setup.

    python benchmarks/topk_error.py            # -> benchmarks/results/topk-error.json

The demo's data (synthetic, 8 entities per task) and the demo's target model (OLMo-2 architecture,
hidden 128, 4 layers, BPE vocabulary 1024) memorized from scratch as ``llm-unlearn demo`` does; or pass
``--model-dir DIR/target-model --data DIR/data`` of a finished demo to skip that. Then a LoRA adapter
(r 16, alpha 32, the demo's) is trained with the default objective (token NPO + NLL + Rényi alpha 0.5,
lr 5e-3, batches of 1 forget + 2 retain rows per 3) and, at a few points of that run, over ALL retain
rows:

* the divergence term with the full fp32 reference vs the top-k cache for several k (relative error;
  top-k is a lower bound, so the error is >= 0), and the divergence gradient w.r.t. the LoRA weights
  (cosine similarity and relative norm of the difference);
* the same for the full cache stored in float16 and bfloat16 instead of float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent


def _grad_vector(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def measure(pm, selector, rows, caches, obj, batch_size=16):
    """Divergence (mean over retain answer tokens) and its gradient for every cache; relative to 'full32'."""
    from llm_unlearn import losses
    from llm_unlearn.data.tokenize import UnlearnCollator
    from llm_unlearn.train.head import answer_logits
    from llm_unlearn.train.methods._shared import divergence_term
    from llm_unlearn.train.step import Step, answer_positions

    params = [p for p in pm.parameters() if p.requires_grad]
    retain = [r for r in rows if not r["is_forget"]]
    collate = UnlearnCollator(0)
    values = {name: 0.0 for name in caches}
    grads = {name: None for name in caches}
    n_tok = 0
    for start in range(0, len(retain), batch_size):
        batch = collate(retain[start : start + batch_size])
        pos = answer_positions(batch["labels"])
        n = pos.flat.numel()
        for name, cache in caches.items():
            ref = cache.lookup(batch, obj)
            logits = answer_logits(pm, selector, batch["input_ids"], batch["attention_mask"], pos)
            logp = losses.token_log_probs(logits, pos.targets)
            is_forget = batch["is_forget"]
            step = Step(pm, batch, pos, logits, logp, is_forget, is_forget, get_reference=lambda r=ref: r)
            d = divergence_term(step, obj).value * n  # the production term (train/methods/_shared.py)
            g = _grad_vector(d, params)
            values[name] += float(d.detach())
            grads[name] = g if grads[name] is None else grads[name] + g
        n_tok += n
    base_v, base_g = values["full32"] / n_tok, grads["full32"]
    out = {"divergence_full": base_v, "retain_answer_tokens": n_tok}
    for name in caches:
        if name == "full32":
            continue
        v, g = values[name] / n_tok, grads[name]
        out[name] = {
            "divergence": v,
            "relative_error": (base_v - v) / base_v if base_v else None,
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g, base_g, dim=0)),
            "grad_relative_error": float((g - base_g).norm() / base_g.norm())
            if float(base_g.norm())
            else None,
        }
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="a demo's target-model directory (else memorized here)")
    p.add_argument("--data", default=None, help="the matching data directory (forget.jsonl, retain.jsonl)")
    p.add_argument("--ks", default="8,32,64,128,256,512", help="top-k sizes")
    p.add_argument("--steps", type=int, default=40, help="unlearning steps")
    p.add_argument("--at", default="1,10,40", help="measure after these steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memorize-steps", type=int, default=300)
    p.add_argument("--out", default=str(ROOT / "results" / "topk-error.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()

    from llm_unlearn.config import ObjectiveOptions
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
    from llm_unlearn.data.tokenize import UnlearnCollator, tokenize_records
    from llm_unlearn.demo import MEMORIZATION, memorization_texts
    from llm_unlearn.finetune import memorize_tiny
    from llm_unlearn.modeling import apply_lora, load_model_and_tokenizer
    from llm_unlearn.tiny import train_bpe_tokenizer
    from llm_unlearn.train import cache_build
    from llm_unlearn.train.head import AnswerHeadSelector
    from llm_unlearn.train.loss import unlearning_loss

    tmp = Path(tempfile.mkdtemp(prefix="llm-unlearn-topk-"))
    if args.model_dir:
        model, tok = load_model_and_tokenizer(args.model_dir, dtype="float32", device="cpu")
        bundle = load_unlearning_data(args.data)
        source = {"model_dir": args.model_dir, "data": args.data}
    else:
        ds = make_synthetic_dataset(seed=0)
        write_synthetic_dataset(ds, tmp / "data")
        bundle = load_unlearning_data(tmp / "data")
        texts = memorization_texts(ds.forget + ds.retain, ds.documents)
        tok = train_bpe_tokenizer(texts + [d["document"] for d in ds.nonmember_docs], vocab_size=1024)
        model, info = memorize_tiny(
            texts, tok, **MEMORIZATION, max_steps=args.memorize_steps, lr=3e-3, progress=False
        )
        source = {"memorized": {k: info[k] for k in ("steps", "final_epoch_loss")}}
    obj = ObjectiveOptions()
    forget = tokenize_records(tok, bundle.forget, add_eos=True)
    retain = tokenize_records(tok, bundle.retain, add_eos=True)
    rows = forget + retain
    for key, r in enumerate(rows):
        r["row_key"] = key
    torch.manual_seed(0)
    pm = apply_lora(model, r=16, alpha=32)
    pm.train()
    selector = AnswerHeadSelector(pm)
    vocab = len(tok)
    ks = [k for k in (int(x) for x in args.ks.split(",")) if k <= vocab]
    caches = {
        "full32": cache_build.build_cache(
            pm, rows, obj, tmp / "full32", mode="full", dtype="float32", selector=selector
        )
    }
    for dt in ("float16", "bfloat16"):
        caches[f"full_{dt}"] = cache_build.build_cache(
            pm, rows, obj, tmp / dt, mode="full", dtype=dt, selector=selector
        )
    for k in ks:
        caches[f"top{k}"] = cache_build.build_cache(
            pm, rows, obj, tmp / f"k{k}", mode="topk", topk=k, dtype="float16", selector=selector
        )

    # the demo's schedule, simplified: batches of 1 forget + 2 retain rows
    g = torch.Generator().manual_seed(0)
    collate = UnlearnCollator(tok.pad_token_id)
    opt = torch.optim.AdamW([q for q in pm.parameters() if q.requires_grad], lr=5e-3, weight_decay=0.0)
    at = sorted(int(x) for x in args.at.split(","))
    points = []
    for step in range(1, args.steps + 1):
        fi = torch.randint(len(forget), (1,), generator=g).tolist()
        ri = torch.randint(len(retain), (2,), generator=g).tolist()
        batch = collate([forget[i] for i in fi] + [retain[i] for i in ri])
        ref = caches["full32"].lookup(batch, obj)
        plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
        loss, terms = unlearning_loss(pm, plain, obj, selector, ref)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step in at:
            m = measure(pm, selector, rows, caches, obj)
            m["step"] = step
            m["train_terms"] = terms
            points.append(m)
            print(
                f"step {step}: D_full {m['divergence_full']:.5f}  "
                + "  ".join(
                    f"{name} {m[name]['relative_error']:.2e}/cos {m[name]['grad_cosine']:.4f}"
                    for name in caches
                    if name != "full32"
                ),
                flush=True,
            )
    result = {
        "what": "relative error of the retain divergence term (and cosine of its LoRA gradient) vs the full fp32 "
        "reference; top-k caches store fp16 top-k log-probs + an exact fp32 tail",
        "vocab": vocab,
        "ks": ks,
        "objective": {"retain_divergence": obj.retain_divergence, "renyi_alpha": obj.renyi_alpha},
        "source": source,
        "n_forget": len(forget),
        "n_retain": len(retain),
        "points": points,
        "threads": torch.get_num_threads(),
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent / "src"))
    main()
