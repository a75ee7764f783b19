"""The TOFU example run, sized for 2 CPU cores (a tiny model from scratch, a stated author subset).

Subset of the real TOFU data (``../shared/data/tofu``; authors are consecutive blocks of 20 rows of
``full.jsonl``):

* forget = forget01's 2 authors (``full`` rows 3960-3999; ``forget01_perturbed`` for evaluation);
* retain = authors 0-3 (``full`` rows 0-79; their 80 rows of ``retain_perturbed`` for evaluation);
* "general knowledge" = the first 40 ``real_authors`` and 40 ``world_facts`` questions with their
  answers: a model trained from scratch knows nothing, so both the target and the retain model are
  taught them (the stand-in for pre-training knowledge; the evaluation reads the same 40 + 40 items
  of their ``_perturbed`` files);
* holdout = ``holdout01`` (2 fictitious authors never trained on), for privleak.

Steps (all in ``--work-dir``, default ``runs/tofu-cpu``):

1. write the subset in TOFU's layout (``data/``: full, forget01, retain99, the perturbed files,
   holdout01); train a BPE tokenizer on every text of it;
2. "fine-tune" the target on full(subset) + general knowledge and the retain model on
   retain(subset) + general knowledge: a tiny OLMo-2 (hidden 128, 4 layers) trained from scratch
   with the demo's memorization (``finetune.memorize_tiny`` with ``demo.MEMORIZATION``: loss on every
   token of ``Question: {q}\\nAnswer: {a}``), same seed, same number of steps (this is the same text
   the evaluator scores);
3. unlearn the forget set from the target (``train --data data --split forget01``, i.e. forget01 +
   retain99 of the subset) with the default preset and with NPO only (``retain_weight = divergence_weight = 0``,
   ``retain_per_forget = 0``), with the demo's tiny-model settings (lr 5e-3, 3 chunks, 8 epochs per
   chunk, positive ratio 3, LoRA alpha 32, EOS appended);
4. evaluate all four with the TOFU evaluator (prompt format ``qa``), the retain model's
   ``tofu_items.jsonl`` as ``--retain-reference`` (so the retain model's own forget quality is 1 by
   construction);
5. write ``benchmarks/results/tofu-cpu.json`` and each model's ``tofu_items.jsonl`` /
   ``tofu_summary.json`` under ``benchmarks/results/tofu-cpu/<model>/``, and check: the target's
   forget quality is far below the retain model's, and unlearning raises it.

    python benchmarks/tofu.py                 # ~minutes on 2 CPU cores, one torch thread
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORGET_ROWS = range(3960, 4000)  # forget01 = authors 198, 199
RETAIN_ROWS = range(0, 80)  # authors 0-3
N_GENERAL = 40
MODELS = ("retain", "target", "unlearned_default", "unlearned_npo")


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def build_subset(tofu: Path, data: Path) -> dict:
    """Write the subset in TOFU's layout; return the rows used for training and the counts."""
    full = _read(tofu / "full.jsonl")
    forget = [full[i] for i in FORGET_ROWS]
    retain = [full[i] for i in RETAIN_ROWS]
    if [r["question"] for r in forget] != [r["question"] for r in _read(tofu / "forget01.jsonl")]:
        raise SystemExit("forget01 is not full rows 3960-3999 in this copy of TOFU")
    retain_q = {r["question"] for r in retain}
    retain_pert = [r for r in _read(tofu / "retain_perturbed.jsonl") if r["question"] in retain_q]
    ra = _read(tofu / "real_authors_perturbed.jsonl")[:N_GENERAL]
    wf = _read(tofu / "world_facts_perturbed.jsonl")[:N_GENERAL]
    general = [{"question": r["question"], "answer": r["answer"]} for r in ra + wf]
    _write(data / "full.jsonl", retain + forget)
    _write(data / "forget01.jsonl", forget)
    _write(data / "retain99.jsonl", retain)
    _write(data / "forget01_perturbed.jsonl", _read(tofu / "forget01_perturbed.jsonl"))
    _write(data / "retain_perturbed.jsonl", retain_pert)
    _write(data / "real_authors_perturbed.jsonl", ra)
    _write(data / "world_facts_perturbed.jsonl", wf)
    _write(data / "holdout01.jsonl", _read(tofu / "holdout01.jsonl"))
    return {
        "forget": forget,
        "retain": retain,
        "general": general,
        "counts": {
            "forget": len(forget),
            "retain": len(retain),
            "retain_perturbed": len(retain_pert),
            "real_authors": len(ra),
            "world_facts": len(wf),
            "holdout": 40,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--tofu", default=str(REPO.parent / "shared" / "data" / "tofu"), help="the TOFU data directory"
    )
    p.add_argument("--work-dir", default=str(REPO / "runs" / "tofu-cpu"))
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--steps", type=int, default=600, help="memorization steps of target and retain model")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import copy

    import torch

    from llm_unlearn.config import build_config
    from llm_unlearn.data.benchmarks import load_tofu, qa_prompt
    from llm_unlearn.demo import MEMORIZATION
    from llm_unlearn.evaluation.benchmarks.tofu import evaluate_tofu
    from llm_unlearn.finetune import memorize_tiny
    from llm_unlearn.io_utils import atomic_write_json
    from llm_unlearn.tiny import train_bpe_tokenizer
    from llm_unlearn.train.loop import run_unlearning

    torch.set_num_threads(args.threads)
    tofu, work = Path(args.tofu), Path(args.work_dir)
    if not (tofu / "full.jsonl").is_file():
        print(f"error: TOFU data not found at {tofu}", file=sys.stderr)
        return 2
    if work.exists():
        shutil.rmtree(work)
    t_start, cpu_start = time.time(), time.process_time()
    load_start = round(os.getloadavg()[0], 2)  # the machine is shared: other processes' load, for context
    timing: dict[str, float] = {}
    subset = build_subset(tofu, work / "data")

    def texts(rows):
        return [qa_prompt(r["question"]) + " " + r["answer"] for r in rows]

    corpus = [
        json.dumps(r) for f in sorted((work / "data").glob("*.jsonl")) for r in _read(f)
    ]  # every string of the subset (perturbed answers included) -> one shared vocabulary
    tokenizer = train_bpe_tokenizer(
        texts(subset["retain"] + subset["forget"] + subset["general"]) + corpus, vocab_size=1024
    )

    models = {}
    train_info = {}
    for name, rows in (
        ("target", subset["retain"] + subset["forget"] + subset["general"]),
        ("retain", subset["retain"] + subset["general"]),
    ):
        t = time.time()
        model, info = memorize_tiny(
            texts(rows),
            tokenizer,
            **MEMORIZATION,
            tiny_hidden=args.hidden,
            tiny_layers=args.layers,
            tiny_intermediate=512,
            max_steps=args.steps,
            lr=3e-3,
            seed=args.seed,
            progress=False,
        )
        timing[f"finetune_{name}_s"] = round(time.time() - t, 1)
        train_info[name] = {
            "texts": len(rows),
            "steps": info["steps"],
            "final_epoch_loss": info["final_epoch_loss"],
        }
        d = work / name
        model.save_pretrained(d, safe_serialization=True)
        tokenizer.save_pretrained(d)
        models[name] = model

    n_forget = len(subset["forget"])
    common = {
        "model.name_or_path": str(work / "target"),
        "data.data": str(work / "data"),
        "data.split": "forget01",
        "data.add_eos": True,
        "train.overwrite": True,
        "train.progress": False,
        "train.seed": args.seed + 9550,
        "train.learning_rate": 5e-3,
        "schedule.chunk_size": max(1, math.ceil(n_forget / 3)),
        "schedule.retain_per_forget": 3,
        "schedule.epochs": 8,
        "lora.alpha": 32,
        "train.plots": False,
        "train.merge": False,
    }
    variants = {
        "unlearned_default": {},
        "unlearned_npo": {
            "objective.retain_weight": 0.0,
            "objective.divergence_weight": 0.0,
            "schedule.retain_per_forget": 0,
        },
    }
    unlearn_cfg = {}
    for name, extra in variants.items():
        over = {**common, **extra, "train.output_dir": str(work / name)}
        cfg = build_config(overrides=over)
        t = time.time()
        summary = run_unlearning(cfg, model=copy.deepcopy(models["target"]), tokenizer=tokenizer)
        timing[f"unlearn_{name}_s"] = round(time.time() - t, 1)
        unlearn_cfg[name] = {
            "overrides": {k: v for k, v in over.items() if not k.startswith(("model.", "train.output"))},
            "steps": summary.get("total_steps"),
        }
        models[name] = summary["model"]

    data = load_tofu(work / "data", "forget01")
    results: dict[str, dict] = {}
    ref = work / "eval-retain" / "tofu_items.jsonl"
    for name in MODELS:  # the retain model first: its items are everyone's reference
        t = time.time()
        model = models[name]
        model.eval()
        summary = evaluate_tofu(
            model,
            tokenizer,
            data,
            output_dir=work / f"eval-{name}",
            prompt_format="qa",
            retain_reference=ref if name != "retain" else None,
            batch_size=32,
            max_new_tokens=args.max_new_tokens,
            progress=False,
            config={"model": name},
        )
        if name == "retain":  # its own forget quality against itself (= 1 by construction)
            summary = evaluate_tofu(
                model,
                tokenizer,
                data,
                output_dir=work / f"eval-{name}",
                prompt_format="qa",
                retain_reference=ref,
                batch_size=32,
                max_new_tokens=args.max_new_tokens,
                progress=False,
                config={"model": name},
            )
        timing[f"evaluate_{name}_s"] = round(time.time() - t, 1)
        results[name] = summary
        dest = Path(args.results) / "tofu-cpu" / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("tofu_items.jsonl", "tofu_summary.json"):
            shutil.copyfile(work / f"eval-{name}" / f, dest / f)

    fq = {n: results[n]["headline"]["forget_quality"] for n in MODELS}
    checks = {
        "target_forget_quality_far_below_retain": fq["target"] is not None
        and fq["target"] < 0.01 * fq["retain"],
        "default_raises_forget_quality": fq["unlearned_default"] > fq["target"],
        "npo_raises_forget_quality": fq["unlearned_npo"] > fq["target"],
    }
    timing["total_s"] = round(time.time() - t_start, 1)
    timing["process_cpu_s"] = round(time.process_time() - cpu_start, 1)  # this process, all threads
    timing["load_average_1min_start_end"] = [load_start, round(os.getloadavg()[0], 2)]
    out = {
        "what": "TOFU example run on CPU: tiny OLMo-2 from scratch on a TOFU author subset (see benchmarks/tofu.py)",
        "subset": {
            "forget_rows_of_full": [FORGET_ROWS.start, FORGET_ROWS.stop - 1],
            "retain_rows_of_full": [RETAIN_ROWS.start, RETAIN_ROWS.stop - 1],
            "general_knowledge": f"first {N_GENERAL} real_authors + first {N_GENERAL} world_facts",
            **subset["counts"],
        },
        "model": {
            "architecture": "OLMo-2",
            "hidden_size": args.hidden,
            "num_layers": args.layers,
            "vocab_size": len(tokenizer),
            "memorization": train_info,
        },
        "unlearning": unlearn_cfg,
        "evaluation": {
            "prompt_format": "qa",
            "max_new_tokens": args.max_new_tokens,
            "retain_reference": "the retain model's tofu_items.jsonl",
        },
        "headline": {n: results[n]["headline"] for n in MODELS},
        "metrics": {n: results[n]["metrics"] for n in MODELS},
        "checks": checks,
        "timing": timing,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    atomic_write_json(Path(args.results) / "tofu-cpu.json", out)
    cols = (
        "forget_quality",
        "model_utility",
        "forget_truth_ratio",
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "privleak",
        "extraction_strength",
    )
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for n in MODELS:
        h = results[n]["headline"]
        print(f"| {n} | " + " | ".join("n/a" if h[c] is None else f"{h[c]:.4g}" for c in cols) + " |")
    print(json.dumps(checks), f"total {timing['total_s']} s")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
