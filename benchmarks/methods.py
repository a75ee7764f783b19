"""Every registered unlearning method on the demo's data and target model, with the same budget.

    python benchmarks/methods.py [--out benchmarks/results] [--work runs/methods] [--methods a,b]

1. the demo's steps 1-3 once (`llm_unlearn.demo`, seed 0): the synthetic SemEval-layout dataset, a BPE
   tokenizer, a tiny OLMo-2 that has memorized forget and retain (saved to WORK/target-model/);
2. the "before" evaluation of that target (`evaluate_semeval` exactly as the demo calls it);
3. for every method in `llm_unlearn.train.methods.OBJECTIVES` (new methods appear by themselves):
   unlearning through the public API (`build_config` + `run_unlearning`) from the saved target, with the
   demo's unlearning options (lr 5e-3, 3 chunks, 8 epochs per chunk, 3 retain rows per forget row, LoRA
   alpha 32, the forget people's documents unlearned too) and calibration off (no gate, no stop, the
   last state kept), so that every method takes the same optimizer steps; each method's own defaults
   (`config/presets.py` METHOD_DEFAULTS) apply; altpo gets `objective.alternatives: retain`;
4. the demo's evaluation of each unlearned model (forget / retain exact match and ROUGE-L, loss-attack
   MIA AUC, the task aggregate);
5. `OUT/methods-cpu.json` (per method: the metrics, the evaluator's score objects, the final means of
   the objective's terms from run.json, wall seconds, the options used) and `OUT/methods-cpu.png`.

No method is tuned: a method that does nothing at this budget is reported as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llm_unlearn import demo  # noqa: E402
from llm_unlearn.config import build_config  # noqa: E402
from llm_unlearn.data.records import read_mia_documents  # noqa: E402
from llm_unlearn.evaluation.metrics.semeval import mia_score  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json  # noqa: E402
from llm_unlearn.train.loop import run_unlearning  # noqa: E402
from llm_unlearn.train.methods import OBJECTIVES  # noqa: E402

SEED = 0  # the demo's
# the same for every method: no evaluation during training, no gate, no early stop, the last state kept
UNCALIBRATED = {
    "calibration.mode": "off",
    "calibration.eval_every": "off",
    "calibration.select": "last",
}
# what a method cannot run without (not tuning: altpo has no default source of alternatives)
REQUIRED = {"altpo": {"objective.alternatives": "retain"}}
# the evaluator's score objects kept per method (the test recomputes the headline numbers from them)
KEEP = (
    "forget-set",
    "retain-set",
    "aggregated-terms",
    "harmonic-mean-task-aggregate",
    "mia_loss_acc",
    "mia_final_score",
    "mia_attacks",
)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def metrics(results: dict) -> dict:
    """The headline numbers of one evaluation."""
    s = demo._summary(results)
    auc = results.get("mia_loss_acc")
    return {
        "forget_em": s["forget"]["knowledge_em"],
        "forget_rougeL": s["forget"]["regurgitation_rougeL"],
        "retain_em": s["retain"]["knowledge_em"],
        "retain_rougeL": s["retain"]["regurgitation_rougeL"],
        "mia_auc": auc,
        "mia_score": None if auc is None else mia_score(auc),
        "task_aggregate": results.get("harmonic-mean-task-aggregate"),
    }


def kept(results: dict) -> dict:
    return {k: results[k] for k in KEEP if k in results}


def final_terms(run: dict) -> dict:
    """The last chunk's mean of the loss and of every term logged (run.json `chunks`)."""
    chunks = run.get("chunks") or []
    if not chunks:
        return {}
    last = chunks[-1]
    return {k: v for k, v in last.items() if k.startswith("mean_") or k == "last_loss"}


def prepare(work: Path, progress: bool):
    """The demo's steps 1-3, once: (bundle, mia, data_dir, target_dir, model, tokenizer, info)."""
    data_dir, target_dir = work / "data", work / "target-model"
    t0 = time.time()
    bundle, documents, mia_dir, holdout_docs = demo._synthetic_data(data_dir, SEED)
    members, nonmembers = read_mia_documents(mia_dir)
    model, tokenizer, mem = demo._memorize_synthetic(
        bundle, documents, nonmembers + holdout_docs, target_dir, SEED, progress
    )
    info = {"memorize_seconds": round(time.time() - t0, 1), **mem}
    return bundle, (members, nonmembers), data_dir, target_dir, model, tokenizer, info


def base_overrides(work: Path, data_dir: Path, target_dir: Path, n_forget: int, progress: bool) -> dict:
    """The demo's unlearning options, uncalibrated, the forget documents unlearned too (as the demo)."""
    o = demo._unlearning_overrides(work, data_dir, target_dir, n_forget, SEED, progress)
    o.update(UNCALIBRATED)
    o["calibration.forget_documents"] = str(data_dir / "mia" / "member.jsonl")
    o["train.plots"] = False  # not measured; saves seconds per run
    return o


def run_method(name: str, base: dict, work: Path, tokenizer, bundle, mia, progress: bool) -> dict:
    overrides = {**base, "objective.method": name, **REQUIRED.get(name, {})}
    overrides["train.output_dir"] = str(work / name / "unlearned")
    cfg = build_config(overrides=overrides)
    t0 = time.time()
    summary = run_unlearning(cfg, tokenizer=tokenizer)  # a fresh copy of the target from disk
    t_unlearn = time.time() - t0
    model = summary["model"]
    model.eval()
    t1 = time.time()
    results = demo._evaluate(model, tokenizer, bundle, mia, work / name / "eval", progress)
    t_eval = time.time() - t1
    run = json.loads((work / name / "unlearned" / "run.json").read_text())
    return {
        "summary": OBJECTIVES[name].summary,
        "metrics": metrics(results),
        "semeval": kept(results),
        "terms_final": final_terms(run),
        "mean_loss_per_chunk": [c.get("mean_loss") for c in run.get("chunks") or []],
        "steps": run["steps_done"],
        "total_steps": run["total_steps"],
        "n_forget_rows": run.get("n_forget"),
        "n_retain_rows": run.get("n_retain"),
        "unlearn_seconds": round(t_unlearn, 1),
        "eval_seconds": round(t_eval, 1),
        "options": {
            "objective": cfg.to_dict()["objective"],
            "method_specific_overrides": REQUIRED.get(name, {}),
        },
    }


def notes_for(result: dict) -> list[str]:
    """Plain statements about the numbers (computed, so they stay true on a rerun)."""
    before, methods = result["before"], result["methods"]
    out = []
    ok = {n: m for n, m in methods.items() if "metrics" in m}
    steps = {m["steps"] for m in ok.values()}
    out.append(
        f"every method ran {sorted(steps)} optimizer steps"
        if len(steps) == 1
        else f"the methods ran different step counts: {sorted(steps)}"
    )
    for n, m in methods.items():
        if "error" in m:
            out.append(f"{n}: failed ({m['error'].splitlines()[-1]})")
    for n, m in ok.items():
        x, b = m["metrics"], before
        if x["forget_em"] >= b["forget_em"] - 0.1 and (x["mia_auc"] or 0) >= (b["mia_auc"] or 0) - 0.1:
            out.append(f"{n}: forget EM and MIA AUC barely moved at this budget (does little here)")
        elif x["mia_auc"] is not None and x["mia_auc"] >= (b["mia_auc"] or 0) - 0.1:
            out.append(f"{n}: MIA AUC {x['mia_auc']:.2f}: the forget documents still look like training data")
        if 0.3 <= x["forget_em"] < b["forget_em"] - 0.1:
            out.append(
                f"{n}: forgets only part of the forget records at this budget (EM {x['forget_em']:.2f})"
            )
        if x["retain_em"] <= 0.1 and x["forget_em"] <= 0.1:
            out.append(f"{n}: forget and retain both destroyed (retain EM {x['retain_em']:.2f})")
        elif x["retain_em"] < b["retain_em"] - 0.3:
            out.append(f"{n}: retain EM fell by more than 0.3 ({b['retain_em']:.2f} -> {x['retain_em']:.2f})")
        if x["mia_auc"] is not None and x["mia_auc"] < 0.3:
            out.append(
                f"{n}: MIA AUC {x['mia_auc']:.2f} < 0.5: over-unlearned (the forget documents now look "
                "less familiar than never-seen ones, which an attacker detects too)"
            )
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {n: m["metrics"] for n, m in result["methods"].items() if "metrics" in m}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    b = result["before"]
    ax1.scatter([b["forget_em"]], [b["retain_em"]], marker="*", s=160, color="gray", zorder=3)
    ax1.annotate("before", (b["forget_em"], b["retain_em"]), textcoords="offset points", xytext=(-40, -12))
    # methods at the same point share one label
    points: dict[tuple[float, float], list[str]] = {}
    for n, m in ok.items():
        points.setdefault((round(m["forget_em"], 3), round(m["retain_em"], 3)), []).append(n)
    cmap = plt.get_cmap("tab20")
    placed: list[tuple[float, float, int]] = []
    for i, ((x, y), group) in enumerate(points.items()):
        dy = 4  # move a label down while it would sit on a neighbour's
        while any(abs(x - px) < 0.25 and abs(y - py) < 0.05 and dy == pd for px, py, pd in placed):
            dy -= 11
        placed.append((x, y, dy))
        ax1.scatter([x], [y], s=55, zorder=3, color=cmap(i % 20))
        ax1.annotate(", ".join(group), (x, y), textcoords="offset points", xytext=(6, dy), fontsize=9)
    ax1.set_xlim(-0.05, 1.1)
    ax1.set_ylim(-0.05, 1.1)
    ax1.set_xlabel("forget exact match (lower = forgotten)")
    ax1.set_ylabel("retain exact match (higher = kept)")
    ax1.set_title("forget vs retain knowledge (ideal: top left)")
    ax1.grid(alpha=0.3)
    names = list(ok)
    aucs = [ok[n]["mia_auc"] if ok[n]["mia_auc"] is not None else float("nan") for n in names]
    colors = ["tab:green" if abs(a - 0.5) <= 0.1 else "tab:orange" for a in aucs]
    bars = ax2.bar(names, aucs, color=colors)
    ax2.bar_label(bars, labels=[f"{a:.2f}" for a in aucs], fontsize=8, padding=2)
    ax2.axhline(0.5, color="k", ls="--", lw=1, label="0.5 = looks never seen (ideal)")
    ax2.axhline(b["mia_auc"], color="gray", ls=":", lw=1, label=f"before ({b['mia_auc']:.2f})")
    ax2.set_ylim(0, 1.25)
    ax2.set_ylabel("MIA loss-attack AUC (< 0.5: over-unlearned, > 0.5: still a member)")
    ax2.set_title("membership inference on the forget documents")
    plt.setp(ax2.get_xticklabels(), rotation=40, ha="right")
    ax2.legend(loc="upper center", ncol=2, fontsize=8)
    fig.suptitle(
        f"unlearning methods on the demo data, {result['budget'].get('optimizer_steps')} steps each, "
        f"lr {result['budget'].get('learning_rate')} (CPU)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(REPO / "runs" / "methods"))
    ap.add_argument("--methods", default="", help="comma-separated subset (default: every registered one)")
    ap.add_argument("--name", default="methods-cpu", help="output file stem")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON in --out")
    args = ap.parse_args(argv)
    if args.replot:
        path = Path(args.out) / f"{args.name}.json"
        plot(json.loads(path.read_text(encoding="utf-8")), path.with_suffix(".png"))
        return 0
    torch.set_num_threads(1)  # as the demo: the model is tiny
    progress = not args.no_progress
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.methods.split(",") if n] or list(OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        ap.error(f"unknown methods: {', '.join(unknown)}")

    t_all = time.time()
    print(f"[methods] preparing the demo data and target model in {work}", flush=True)
    bundle, mia, data_dir, target_dir, model, tokenizer, mem = prepare(work, progress)
    t0 = time.time()
    before = demo._evaluate(model, tokenizer, bundle, mia, work / "eval-before", progress)
    before_seconds = round(time.time() - t0, 1)
    del model
    base = base_overrides(work, data_dir, target_dir, len(bundle.forget), progress)
    result = {
        "benchmark": "benchmarks/methods.py",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "device": "cpu",
        },
        "data": {
            "source": "llm-unlearn demo synthetic dataset (seed 0)",
            "n_forget": len(bundle.forget),
            "n_retain": len(bundle.retain),
            "mia_members": len(mia[0]),
            "mia_nonmembers": len(mia[1]),
        },
        "target_model": mem,
        "budget": {},
        "common_overrides": {  # paths under --work shown as WORK/...
            k: v.replace(str(work), "WORK") if isinstance(v, str) else v
            for k, v in base.items()
            if k != "train.output_dir"
        },
        "before": metrics(before),
        "before_semeval": kept(before),
        "before_eval_seconds": before_seconds,
        "methods": {},
    }
    for i, name in enumerate(names, 1):
        print(f"[methods] {i}/{len(names)} {name}", flush=True)
        try:
            r = run_method(name, base, work, tokenizer, bundle, mia, progress)
        except Exception:
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            result["methods"][name] = {"summary": OBJECTIVES[name].summary, "error": tb}
            continue
        m = r["metrics"]
        print(
            f"[methods] {name}: forget EM {m['forget_em']:.3f} retain EM {m['retain_em']:.3f} "
            f"MIA AUC {m['mia_auc']:.3f} task agg {m['task_aggregate']:.3f} "
            f"({r['steps']} steps, {r['unlearn_seconds']:.0f}s + eval {r['eval_seconds']:.0f}s)",
            flush=True,
        )
        result["methods"][name] = r
        if not result["budget"]:
            cfg0 = build_config(overrides=base)
            result["budget"] = {
                "optimizer_steps": r["steps"],
                "learning_rate": base["train.learning_rate"],
                "batch_size": cfg0.train.batch_size,
                "chunk_size": base["schedule.chunk_size"],
                "retain_per_forget": base["schedule.retain_per_forget"],
                "epochs_per_chunk": base["schedule.epochs"],
                "lr_scheduler": cfg0.train.lr_scheduler,
                "optimizer_scope": cfg0.schedule.optimizer_scope,
                "lora_alpha": base["lora.alpha"],
                "seed": base["train.seed"],
                "calibration": "off (no gate, no stop, last state kept)",
            }
    result["seconds_total"] = round(time.time() - t_all, 1)
    result["notes"] = [
        "one run per method, seed 0: differences of one or two records (1/36 EM) are within noise",
        "the same options for all methods (the demo's unlearning options, uncalibrated); each method's "
        "own defaults from METHOD_DEFAULTS apply (options.objective shows them); nothing was tuned",
        "altpo: objective.alternatives 'retain' (same-task retain answers as the preferred answers)",
        "task_aggregate: the harmonic mean of the 12 SemEval terms; no MMLU on CPU, so the official "
        "final aggregate is -1 and not reported",
        *notes_for(result),
    ]
    atomic_write_json(out / f"{args.name}.json", result)
    plot(result, out / f"{args.name}.png")
    print(
        f"[methods] wrote {out / (args.name + '.json')} and .png in {result['seconds_total']:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
