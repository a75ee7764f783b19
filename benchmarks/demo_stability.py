"""Is the demo's calibrated result a property of the method or of one CPU? (issue 19.2)

    python benchmarks/demo_stability.py [--seeds 0,1,2,3,4] [--perturb none,ulp] [--threads 1]
                                        [--out benchmarks/results/demo-stability.json]

Runs the whole demo (`llm-unlearn demo`: synthetic data, memorized tiny model, calibrated unlearning,
SemEval evaluation) for every seed under every numeric perturbation that imitates another CPU:
- `ulp`: every weight of the memorized target moved by one unit in the last place (float32), up or
  down at random (seeded), before the evaluation and the unlearning: the size of the differences that
  another CPU's kernels leave, injected where they then grow through every later step;
- a torch thread count (`--threads 1,2`): changes the order of the reductions in every matrix
  product, as another CPU's kernels do (slow on a busy 2-core machine: two threads then wait on
  each other).
The runs of one seed differ only by float noise, so they show whether the calibration's decisions
(gate, stop, selection) turn it into a different result. The file holds every run and the distribution over all of them,
checked against the issue's target: median |AUC - 0.5| <= 0.05, worst <= 0.10, every run with forget
EM <= 0.2 and retain EM and ROUGE-L >= 0.9 x before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llm_unlearn.demo import run_demo  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json  # noqa: E402

TARGET = {
    "median_abs_auc_dev": 0.05,
    "worst_abs_auc_dev": 0.10,
    "forget_em_max": 0.2,
    "retain_ratio_min": 0.9,
}


def nudge_one_ulp(model, seed: int) -> int:
    """Move every float weight of ``model`` one ulp up or down (a seeded coin per element); returns
    how many elements moved."""
    import torch

    g = torch.Generator().manual_seed(seed)
    moved = 0
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point():
                continue
            up = torch.rand(p.shape, generator=g) < 0.5
            toward = torch.where(up, torch.full_like(p, float("inf")), torch.full_like(p, float("-inf")))
            new = torch.nextafter(p, toward)
            moved += int((new != p).sum())
            p.copy_(new)
    return moved


def one(out: Path, seed: int, threads: int, perturb: str, overrides: dict | None = None) -> dict:
    import llm_unlearn.demo as demo

    t0 = time.time()
    real = demo._prepare_target
    moved = {}

    def perturbed(*a, **k):
        res = real(*a, **k)
        if perturb == "ulp":
            moved["n"] = nudge_one_ulp(res[4], seed=seed + 77)
        return res

    demo._prepare_target = perturbed
    try:
        r = run_demo(
            out, seed=seed, threads=threads, progress=False, print_table=False, unlearn_overrides=overrides
        )
    finally:
        demo._prepare_target = real
    run = json.loads((out / "unlearned" / "run.json").read_text())
    cal = run.get("calibration") or {}
    b, a = r["before"], r["after"]
    ratio = min(
        a["retain"][k] / b["retain"][k] if b["retain"][k] else 1.0
        for k in ("knowledge_em", "regurgitation_rougeL")
    )
    return {
        "seed": seed,
        "threads": threads,
        "perturb": perturb,
        "weights_moved": moved.get("n", 0),
        "before": b,
        "after": a,
        "abs_auc_dev": abs(a["mia_auc"] - 0.5),
        "retain_ratio": ratio,
        "selected": cal.get("selected"),
        "stop_reason": cal.get("stop_reason"),
        "evaluations": len(cal.get("evaluations", [])),
        # every calibration evaluation, compact: where the run went and what the selection saw
        "trajectory": [
            {
                k: e.get(k)
                for k in (
                    "step",
                    "chunk",
                    "mia_auc",
                    "loss_gap",  # calibration.extend reads it too: a changed rule can be replayed
                    "forget_em",
                    "retain_em",
                    "retain_rougeL",
                    "proxy",
                    "bisect",
                )
            }
            for e in cal.get("evaluations", [])
        ],
        "selection_reason": cal.get("selection_reason"),
        # the passes the run added to its last chunk and the jumps it bisected (calibration.extend/bisect)
        "extensions": cal.get("extensions") or [],
        "bisections": len(cal.get("bisections") or []),
        "options": effective_options(run.get("config") or {}),
        "unlearn_steps": r["timing"]["unlearn_steps"],
        "seconds": round(time.time() - t0, 1),
    }


# options that changed what a run does after result files existed: recorded so that --merge and the
# table tell runs with and without them apart (a file without the key predates the option)
RECORDED = ("calibration.extend_revisit",)


def effective_options(config: dict) -> dict:
    """The run's values of every option a gated calibrated run may take by default, and of ``RECORDED``
    (run.json's config): what the run really used, whether from --set or from config.GATED_DEFAULTS."""
    from llm_unlearn.config import GATED_DEFAULTS

    out = {}
    for key in (*GATED_DEFAULTS, *RECORDED):
        section, name = key.split(".")
        out[key] = (config.get(section) or {}).get(name)
    return out


def summarize(runs: list[dict]) -> dict:
    dev = [r["abs_auc_dev"] for r in runs]
    auc = [r["after"]["mia_auc"] for r in runs]
    em = [r["after"]["forget"]["knowledge_em"] for r in runs]
    ratio = [r["retain_ratio"] for r in runs]
    s = {
        "runs": len(runs),
        "auc": _mmm(auc),
        "abs_auc_dev": {"median": statistics.median(dev), "worst": max(dev)},
        "forget_em": _mmm(em),
        "forget_rougeL": _mmm([r["after"]["forget"]["regurgitation_rougeL"] for r in runs]),
        "retain_ratio": {"min": min(ratio), "median": statistics.median(ratio)},
        "same_seed_auc_spread": _same_seed_spread(runs),
    }
    s["meets_target"] = {
        "median_abs_auc_dev": s["abs_auc_dev"]["median"] <= TARGET["median_abs_auc_dev"],
        "worst_abs_auc_dev": s["abs_auc_dev"]["worst"] <= TARGET["worst_abs_auc_dev"],
        "forget_em": max(em) <= TARGET["forget_em_max"],
        "retain": min(ratio) >= TARGET["retain_ratio_min"],
    }
    return s


def _mmm(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def _options_of(result: dict) -> str:
    """What a result file ran with, for --merge: the effective options its runs recorded (the same
    whether they came from --set or from the gated defaults), else (older files) its --set options."""
    runs = result.get("runs") or []
    if runs and all("options" in r for r in runs):
        seen = {json.dumps(r["options"], sort_keys=True) for r in runs}
        return seen.pop() if len(seen) == 1 else "mixed: " + " | ".join(sorted(seen))
    return json.dumps(result.get("overrides") or {}, sort_keys=True)


def _same_seed_spread(runs: list[dict]) -> dict:
    """Per seed: the largest AUC difference between its conditions (float noise alone)."""
    by: dict[int, list[float]] = {}
    for r in runs:
        by.setdefault(r["seed"], []).append(r["after"]["mia_auc"])
    return {str(k): max(v) - min(v) for k, v in sorted(by.items())}


def table_row(result: dict) -> str:
    """One markdown row of the README's stability table from a result file (its overrides named)."""
    s, o = result["summary"], result.get("overrides") or {}
    name = (
        result.get("label") or ", ".join(f"`{k.split('.', 1)[1]}={v}`" for k, v in o.items()) or "the default"
    )
    ok = s["meets_target"]
    short = {
        "median_abs_auc_dev": "median",
        "worst_abs_auc_dev": "worst",
        "forget_em": "EM",
        "retain": "retain",
    }
    mark = (
        "**all met**"
        if all(ok.values())
        else "missed: " + ", ".join(short[k] for k, v in ok.items() if not v)
    )
    return (
        f"| {name} | {s['runs']} | {s['auc']['min']:.3f} / {s['auc']['median']:.3f} / {s['auc']['max']:.3f} "
        f"| {s['abs_auc_dev']['median']:.3f} / {s['abs_auc_dev']['worst']:.3f} "
        f"| {s['forget_em']['median']:.3f} / {s['forget_em']['max']:.3f} "
        f"| {s['retain_ratio']['min']:.3f} / {s['retain_ratio']['median']:.3f} | {mark} |"
    )


TABLE_HEAD = (
    "| variant (unlabelled: options over the previous default) | runs | MIA AUC min / median / max | \\|AUC − 0.5\\| median / worst "
    "| forget EM median / max | retain (× before) min / median | target |\n|---|---|---|---|---|---|---|"
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--perturb", default="none,ulp")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an unlearning option (YAML value)"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo-stability.json"))
    ap.add_argument("--label", help="the name of this variant in the README's table (default: its options)")
    ap.add_argument(
        "--table",
        nargs="+",
        metavar="FILE",
        help="print the README's table of these result files, run nothing",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="FILE",
        help="write --out from these result files (the same options, other seeds: runs run in parallel)",
    )
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        if len({_options_of(p) for p in parts}) != 1:
            ap.error("--merge: the files were run with different options")
        runs = [r for p in parts for r in p["runs"]]
        merged = {**parts[0], "summary": summarize(runs), "runs": runs, "merged_from": len(parts)}
        merged["seconds"] = round(sum(p["seconds"] for p in parts), 1)
        merged["load_average"] = [x for p in parts for x in p["load_average"]]
        atomic_write_json(args.out, merged)
        print(json.dumps(merged["summary"], indent=1))
        return 0
    if args.table:
        print(TABLE_HEAD)
        for f in args.table:
            print(table_row(json.loads(Path(f).read_text())))
        return 0
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    perturbs = [x for x in args.perturb.split(",") if x.strip()]
    conds = [(th, pt) for th in threads for pt in perturbs]
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.set)}
    runs, t0 = [], time.time()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for th, pt in conds:
                r = one(Path(tmp) / f"s{seed}-t{th}-{pt}", seed, th, pt, overrides)
                runs.append(r)
                print(
                    f"[{len(runs)}/{len(seeds) * len(conds)}] seed {seed} threads {th} perturb {pt}: AUC "
                    f"{r['after']['mia_auc']:.3f}, forget EM {r['after']['forget']['knowledge_em']:.3f}, "
                    f"retain ratio {r['retain_ratio']:.3f} ({r['seconds']:.0f}s)",
                    flush=True,
                )
    result = {
        "what": "make demo for every seed x numeric perturbation (standing in for another CPU)",
        "target": TARGET,
        "overrides": overrides,
        **({"label": args.label} if args.label else {}),
        "summary": summarize(runs),
        "runs": runs,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
