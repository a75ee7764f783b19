"""The real slice's calibrated default over seeds and a perturbation that imitates another CPU (issue 19.2/19.3).

    python benchmarks/quality_seeds.py [--seeds 0,1,2,3,4] [--perturb none,ulp] [--workers 2]
                                       [--work runs/quality-seeds]
                                       [--out benchmarks/results/quality-seeds-cpu.json]

The same slice and target as `benchmarks/quality.py` (fine-tuned once here, or reused from --work), then
the plain calibrated default once per (seed, perturbation): `train.seed` = seed; `ulp` moves every weight
of the target one unit in the last place before unlearning. Runs go in parallel (--workers processes,
one torch thread each), each in its own work directory. Every run's evaluation directory is kept under
`<out without .json>/<seed>-<perturb>/` (generations.jsonl, mia.jsonl, evaluation_results.json), and the
file holds each run and the distribution, checked against the issue's targets: median |AUC - 0.5| <= 0.05,
worst <= 0.10, forget EM <= 0.2, retain EM and ROUGE-L >= 0.9 x the target's; task aggregate >= 0.95 and
MIA score >= 0.90 (how many runs reach both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from demo_stability import TARGET as DEMO_TARGET  # noqa: E402

from llm_unlearn.io_utils import atomic_write_json  # noqa: E402

# the demo's targets (issue 19.2), and issue 19.3's for the real slice
TARGET = {**DEMO_TARGET, "task_aggregate_min": 0.95, "mia_score_min": 0.90}


def make_target(work: Path, data: Path, nonmembers: int = 54, holdout: int = 96) -> dict:
    """The slice and the fine-tuned target in ``work`` (reused when already there): quality.py's own,
    with `nonmembers` evaluation non-members (0: as many as members) and `holdout` holdout documents."""
    import quality

    sl = quality.prepare(data, 24, 24, work, holdout, 0, nonmembers or None)
    ft = quality._ft_tiny(sl)
    results = work / "target-eval"
    [entry] = quality.run_model("tiny-olmo2", sl, work, results, ft, [], reuse=True, scale=quality.TINY_SCALE)
    return entry


def run_dir(work: Path, seed: int, perturb: str) -> Path:
    return work / "runs" / f"{seed}-{perturb}"


def launch(
    work: Path,
    data: Path,
    seed: int,
    perturb: str,
    anchor: int = 0,
    sets: tuple[str, ...] = (),
    nonmembers: int = 54,
    holdout: int = 96,
) -> subprocess.Popen:
    """quality.py for one run, in its own work directory whose target is the shared one (a link);
    `sets`: more ``KEY=VALUE`` options of the calibrated run (quality.py --calibrated-set)."""
    d = run_dir(work, seed, perturb)
    (d / "tiny-olmo2").mkdir(parents=True, exist_ok=True)
    link = d / "tiny-olmo2" / "target"
    if not link.exists():
        link.symlink_to((work / "tiny-olmo2" / "target").resolve(), target_is_directory=True)
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "quality.py"),
        "--runs",
        "default-calibrated",
        "--reuse-target",
        "--work",
        str(d),
        "--out",
        str(d / "out"),
        "--calibrated-set",
        f"train.seed={seed}",
        "--perturb",
        perturb,
        "--data",
        str(data),
        "--anchor",
        str(anchor),
        "--nonmembers",
        str(nonmembers),
        "--holdout",
        str(holdout),
        *(a for kv in sets for a in ("--calibrated-set", kv)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=open(d / "log.txt", "w"), stderr=subprocess.STDOUT, env=env)


def collect(work: Path, seed: int, perturb: str, target: dict, keep: Path) -> dict:
    d = run_dir(work, seed, perturb)
    report = json.loads((d / "out" / "quality-cpu.json").read_text())
    [e] = [r for r in report["runs"] if r["run"] == "default-calibrated"]
    src = d / "out" / "quality-cpu" / "tiny-olmo2" / "default-calibrated"
    dst = keep / f"{seed}-{perturb}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    ratio = min(
        e[k] / target[k] if target[k] else 1.0 for k in ("retain_em", "retain_rougeL")
    )  # the target's retain scores are the "before"
    return {
        "run": f"default-calibrated seed {seed} {perturb}",
        "model": e["model"],
        "seed": seed,
        "perturb": perturb,
        **{k: e[k] for k in ("task_aggregate", "mia_auc", "mia_score", "forget_em", "forget_rougeL")},
        **{k: e[k] for k in ("retain_em", "retain_rougeL", "steps", "selected", "stop_reason", "seconds")},
        "abs_auc_dev": abs(e["mia_auc"] - 0.5),
        "retain_ratio": ratio,
        "evaluation_dir": str(dst.relative_to(REPO)) if dst.is_relative_to(REPO) else str(dst),
        "trajectory": trajectory(d / "tiny-olmo2" / "default-calibrated" / "run.json"),
    }


# loss_gap: what calibration.extend reads besides the AUC (so a changed rule can be replayed on the record)
TRAJECTORY_KEYS = (
    "step",
    "chunk",
    "mia_auc",
    "loss_gap",
    "task_aggregate",
    "proxy",
    "active_fraction",
    "tau_document",
)


def trajectory(run_json: Path) -> list[dict] | None:
    """The run's calibration evaluations (what the gate and the selection saw: the AUC against the
    holdout, the proxy, the share of rows still pushed), from its run.json; None when it has none."""
    if not run_json.is_file():
        return None
    evs = (json.loads(run_json.read_text()).get("calibration") or {}).get("evaluations") or []
    return [
        {k: e.get(k) for k in TRAJECTORY_KEYS if k in e} | ({"bisect": True} if "bisect" in e else {})
        for e in evs
    ]


def summarize(runs: list[dict]) -> dict:
    def mmm(k):
        xs = [r[k] for r in runs]
        return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}

    dev = [r["abs_auc_dev"] for r in runs]
    both = [
        r
        for r in runs
        if r["task_aggregate"] >= TARGET["task_aggregate_min"] and r["mia_score"] >= TARGET["mia_score_min"]
    ]
    s = {
        "runs": len(runs),
        "task_aggregate": mmm("task_aggregate"),
        "mia_auc": mmm("mia_auc"),
        "mia_score": mmm("mia_score"),
        "abs_auc_dev": {"median": statistics.median(dev), "worst": max(dev)},
        "forget_em": mmm("forget_em"),
        "retain_ratio": mmm("retain_ratio"),
        "runs_meeting_task_and_mia_score": len(both),
    }
    s["meets_target"] = {
        "median_abs_auc_dev": s["abs_auc_dev"]["median"] <= TARGET["median_abs_auc_dev"],
        "worst_abs_auc_dev": s["abs_auc_dev"]["worst"] <= TARGET["worst_abs_auc_dev"],
        "forget_em": s["forget_em"]["max"] <= TARGET["forget_em_max"],
        "retain": s["retain_ratio"]["min"] >= TARGET["retain_ratio_min"],
        "task_and_mia_score_every_run": len(both) == len(runs),
    }
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "semeval25"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--perturb", default="none,ulp")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=str(REPO / "runs" / "quality-seeds"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality-seeds-cpu.json"))
    ap.add_argument(
        "--anchor", type=int, default=0, help="anchor documents per run (quality.py --anchor; 0: none)"
    )
    ap.add_argument(
        "--nonmembers",
        type=int,
        default=54,
        help="evaluation non-members (quality.py --nonmembers; 0: as many as members)",
    )
    ap.add_argument(
        "--holdout", type=int, default=96, help="calibration holdout documents (quality.py --holdout)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of every run other than the default's (repeatable; e.g. calibration.extend=4)",
    )
    ap.add_argument(
        "--label", default="the plain calibrated default", help="what the runs are (the report's)"
    )
    args = ap.parse_args(argv)
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    keep = out.with_suffix("")
    t0 = time.time()
    target = make_target(work, Path(args.data), args.nonmembers, args.holdout)
    print(f"target: task {target['task_aggregate']:.3f} AUC {target['mia_auc']:.3f}", flush=True)
    todo = [(int(s), p) for s in args.seeds.split(",") if s.strip() for p in args.perturb.split(",") if p]
    running: list[tuple[tuple[int, str], subprocess.Popen]] = []
    runs: list[dict] = []
    while todo or running:
        while todo and len(running) < max(1, args.workers):
            job = todo.pop(0)
            running.append(
                (
                    job,
                    launch(
                        work,
                        Path(args.data),
                        *job,
                        anchor=args.anchor,
                        sets=tuple(args.set),
                        nonmembers=args.nonmembers,
                        holdout=args.holdout,
                    ),
                )
            )
        time.sleep(5)
        for job, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((job, proc))
            if proc.returncode != 0:
                print(f"run {job} failed (rc {proc.returncode}): see {run_dir(work, *job) / 'log.txt'}")
                return 1
            r = collect(work, *job, target, keep)
            runs.append(r)
            print(
                f"[{len(runs)}] seed {r['seed']} {r['perturb']}: task {r['task_aggregate']:.3f} "
                f"AUC {r['mia_auc']:.3f} MIA score {r['mia_score']:.3f} forget EM {r['forget_em']:.3f} "
                f"retain x{r['retain_ratio']:.3f} ({r['seconds']:.0f}s)",
                flush=True,
            )
    runs.sort(key=lambda r: (r["seed"], r["perturb"]))
    report = {
        "what": f"the real SemEval slice of benchmarks/quality.py: {args.label} per (seed, perturbation)",
        "anchor_documents": args.anchor,
        "evaluation_nonmembers": args.nonmembers or 24,
        "holdout_documents": args.holdout,
        "overrides": dict(kv.split("=", 1) for kv in args.set),
        "target": TARGET,
        "target_model": {k: target[k] for k in ("task_aggregate", "mia_auc", "retain_em", "retain_rougeL")},
        "summary": summarize(runs),
        "runs": runs,
        "workers": args.workers,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_average_end": list(os.getloadavg()),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out, report)
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
