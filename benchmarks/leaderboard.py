"""The tuned leaderboard: every method tuned with the same trial budget on the demo data, then its best
configuration (and its default one) run with N training seeds on the held-out evaluation side and scored
officially.

    python benchmarks/leaderboard.py [--trials 8] [--methods a,b] [--work runs/leaderboard] [--out benchmarks/results]

1. the demo's steps 1-3 once (`benchmarks/methods.prepare`: synthetic data seed 0, tiny OLMo-2 target);
   the calibration holdout is the demo's (documents about other fictitious people, never trained on);
2. a base config: the demo's unlearning options (lr 5e-3, 3 chunks of the validation forget set, 8 epochs,
   3 retain rows per forget row, LoRA alpha 32), calibrated against the holdout, evaluated at every chunk;
3. per method, `llm-unlearn sweep` (`sweep.run.run_sweep`, the target shared in memory) with `--trials T`:
   the trials train on the validation half of the units and are scored by the calibration's proxy; the
   default configuration is its trial 0; the best trials and the default are confirmed with other seeds
   (`--confirm`, `--confirm-seeds`: the sweep's selection by the mean, `sweep/confirm.py`);
4. on the evaluation half (units no trial saw, MIA non-members no trial saw): the default config and the
   tuned best.yaml, each trained with `--heldout-seeds` seeds and scored by the SemEval evaluator (task
   aggregate, MIA AUC); the table shows each metric's median over the seeds, the JSON every run;
5. `OUT/leaderboard-cpu.json` and `OUT/leaderboard-cpu.png`: per method default vs tuned, the validation
   proxies, the trial states (complete / pruned), the sweep's seconds and its ratio to one default run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import methods as mb  # noqa: E402

from llm_unlearn import demo  # noqa: E402
from llm_unlearn.config import build_config  # noqa: E402
from llm_unlearn.data.records import load_unlearning_data, read_mia_documents  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl  # noqa: E402
from llm_unlearn.sweep.options import SweepOptions  # noqa: E402
from llm_unlearn.sweep.run import run_sweep  # noqa: E402
from llm_unlearn.train.loop import run_unlearning  # noqa: E402
from llm_unlearn.train.methods import OBJECTIVES  # noqa: E402

FRACTION = 0.5


def base_config(work: Path, data_dir: Path, target_dir: Path, n_forget: int) -> Path:
    """The demo's unlearning options, calibrated, as a YAML file (the sweep's --config)."""
    o = demo._unlearning_overrides(work, data_dir, target_dir, round(n_forget * FRACTION), mb.SEED, False)
    o.pop("train.output_dir")
    o.pop("train.overwrite")
    o.update(
        {
            "calibration.holdout": str(data_dir / "holdout.jsonl"),
            "calibration.forget_documents": str(data_dir / "mia" / "member.jsonl"),
            "calibration.eval_every": "chunk",
            "train.plots": False,
            "train.merge": False,
        }
    )
    nested: dict = {}
    for k, v in o.items():
        sec, name = k.split(".", 1)
        nested.setdefault(sec, {})[name] = v
    path = work / "base.yaml"
    path.write_text(yaml.safe_dump(nested, sort_keys=False))
    return path


def heldout(
    config: Path, method: str, sweep_dir: Path, out: Path, tokenizer, extra: dict, seeds: int
) -> dict:
    """`heldout_run` with `seeds` training seeds (the config's, then +1, ...): every run's metrics, their
    median per metric (``metrics``: what the table and the counts use) and their min / max."""
    import statistics

    seed = build_config(config, {"objective.method": method, **extra}).train.seed
    runs = [
        heldout_run(config, method, sweep_dir, out / f"seed{seed + i}", tokenizer, extra, seed + i)
        for i in range(seeds)
    ]
    keys = list(runs[0]["metrics"])

    def agg(fn):
        return {
            k: (
                fn(vals) if (vals := [r["metrics"][k] for r in runs if r["metrics"][k] is not None]) else None
            )
            for k in keys
        }

    return {
        "metrics": agg(statistics.median),
        "min": agg(min),
        "max": agg(max),
        "seeds": [seed + i for i in range(seeds)],
        "runs": [r["metrics"] for r in runs],
        # the cost ratio's denominator: the median run (one run's time moves with the machine's load)
        "unlearn_seconds": statistics.median(r["unlearn_seconds"] for r in runs),
        "unlearn_seconds_runs": [r["unlearn_seconds"] for r in runs],
        "steps": runs[0]["steps"],
        "steps_runs": [r["steps"] for r in runs],
    }


def heldout_run(
    config: Path, method: str, sweep_dir: Path, out: Path, tokenizer, extra: dict, seed: int
) -> dict:
    """Train `config` once (training seed `seed`) on the evaluation side of the sweep's split, score it
    officially."""
    ev = sweep_dir / "evaluation"
    over = {
        "train.seed": seed,
        "objective.method": method,
        **extra,
        "data.data": None,
        "data.forget": str(ev / "forget.jsonl"),
        "data.retain": str(ev / "retain.jsonl"),
        "calibration.forget_documents": str(ev / "mia" / "member.jsonl"),
        "train.output_dir": str(out),
        "train.overwrite": True,
        "train.progress": False,
    }
    cfg = build_config(config, over)
    t0 = time.time()
    summary = run_unlearning(cfg, tokenizer=tokenizer)
    seconds = time.time() - t0
    model = summary["model"].eval()
    bundle = load_unlearning_data(None, forget=ev / "forget.jsonl", retain=ev / "retain.jsonl")
    mia = read_mia_documents(ev / "mia")
    results = demo._evaluate(model, tokenizer, bundle, mia, out / "eval", False)
    return {
        "metrics": mb.metrics(results),
        "unlearn_seconds": round(seconds, 1),
        "steps": summary.get("steps_done"),
    }


def tune(name: str, base: Path, work: Path, trials: int, model, tokenizer, args) -> dict:
    workers = args.workers
    extra = mb.REQUIRED.get(name, {})
    sweep_dir = work / f"sweep-{name}"
    opts = SweepOptions(
        config=str(base),
        trials=trials,
        method=[name],
        output_dir=str(sweep_dir),
        progress=True,
        workers=workers,
        confirm=args.confirm,
        confirm_seeds=args.confirm_seeds,
        pruner=args.pruner,
    )
    t0 = time.time()
    if workers > 1:  # every process reads the target from disk once
        res = run_sweep(opts, extra_overrides=extra)
    else:
        res = run_sweep(opts, model=model, tokenizer=tokenizer, extra_overrides=extra)
    sweep_seconds = time.time() - t0
    r = res["methods"][0]
    n = args.heldout_seeds
    default = heldout(base, name, sweep_dir, work / name / "default", tokenizer, extra, n)
    tuned = heldout(sweep_dir / "best.yaml", name, sweep_dir, work / name / "tuned", tokenizer, extra, n)
    return {
        "summary": OBJECTIVES[name].summary,
        "trials": r["trials"],
        "validation_proxy": {"default": (r["default"] or {}).get("value"), "tuned": r["best"]["value"]},
        "best_trial": r["best"]["number"],
        "validation_runs": {"default": (r["default"] or {}).get("runs"), "tuned": r["best"].get("runs")},
        "best_options": r["best"]["options"],
        "sweep_seconds": round(sweep_seconds, 1),
        "default": default,
        "tuned": tuned,
        "cost_ratio": round(sweep_seconds / max(default["unlearn_seconds"], 1e-9), 2),
        "workers": workers,
    }


def readme_table(result: dict) -> str:
    """The README's table: per method, default vs tuned on the held-out evaluation (and the validation
    proxies the sweep saw), from the JSON."""

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    n = result.get("heldout_seeds", 1)
    of = f" (median of {n} seeds)" if n > 1 else ""
    lines = [
        f"| method | trials (pruned) | validation proxy default → tuned | task aggregate default → tuned{of} | "
        f"MIA AUC default → tuned{of} | MIA score default → tuned{of} | sweep s (× one default run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["methods"].items():
        d, t, v = r["default"]["metrics"], r["tuned"]["metrics"], r["validation_proxy"]
        n = r["trials"]["complete"] + r["trials"]["pruned"]
        lines.append(
            f"| {name} | {n} ({r['trials']['pruned']}) | {f(v['default'])} → {f(v['tuned'])} | "
            f"{f(d['task_aggregate'])} → {f(t['task_aggregate'])} | {f(d['mia_auc'])} → {f(t['mia_auc'])} | "
            f"{f(d['mia_score'])} → {f(t['mia_score'])} | {r['sweep_seconds']:.0f} ({r['cost_ratio']:.1f}×) |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names) + 4), 5))
    for ax, key, title in (
        (axes[0], "task_aggregate", "task aggregate"),
        (axes[1], "mia_score", "MIA score"),
    ):
        x = range(len(names))
        for side, dx, color in (("default", -0.2, "tab:gray"), ("tuned", 0.2, "tab:blue")):
            rows = [result["methods"][n][side] for n in names]
            mid = [r["metrics"][key] or 0 for r in rows]
            err = None
            if all("min" in r for r in rows):  # the seeds' range around the median
                lo = [m - (r["min"][key] or 0) for m, r in zip(mid, rows)]
                hi = [(r["max"][key] or 0) - m for m, r in zip(mid, rows)]
                err = [lo, hi]
            ax.bar([i + dx for i in x], mid, 0.4, yerr=err, capsize=3, label=side, color=color)
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        seeds = result.get("heldout_seeds", 1)
        span = f", median and range of {seeds} seeds" if seeds > 1 else ""
        ax.set_title(f"{title} on the held-out evaluation{span} (higher is better)")
        ax.legend()
    fig.suptitle(f"default vs tuned ({result['trials_per_method']} trials per method, demo data, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8, help="trials per method (the same for every method)")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: every registered one)")
    ap.add_argument("--work", default=str(REPO / "runs" / "leaderboard"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--name", default="leaderboard-cpu")
    ap.add_argument(
        "--resume", action="store_true", help="keep the methods already in the JSON in --out, run the rest"
    )
    ap.add_argument("--table", action="store_true", help="only print the README table from the JSON in --out")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="sweep processes (one torch thread each; the default run it is compared to has one too)",
    )
    ap.add_argument("--confirm", type=int, default=3, help="the sweep's --confirm (0: the best single trial)")
    ap.add_argument("--confirm-seeds", type=int, default=2, help="the sweep's --confirm-seeds")
    ap.add_argument("--pruner", default=SweepOptions.pruner, help="the sweep's --pruner")
    ap.add_argument(
        "--heldout-seeds",
        type=int,
        default=3,
        help="training seeds of each held-out run (the table shows the median, the JSON every run)",
    )
    args = ap.parse_args(argv)
    if args.table:
        print(readme_table(json.loads((Path(args.out) / f"{args.name}.json").read_text(encoding="utf-8"))))
        return 0
    torch.set_num_threads(1)
    # the default method and the ones the issue names first, so that a run cut short holds them
    first = [n for n in ("npo_rt_div", "npo", "simnpo", "rmu") if n in OBJECTIVES]
    names = [n for n in args.methods.split(",") if n] or first + [n for n in OBJECTIVES if n not in first]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        ap.error(f"unknown methods: {', '.join(unknown)}")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    load0 = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    print(f"[leaderboard] preparing the demo data and target model in {work}", flush=True)
    bundle, mia, data_dir, target_dir, model, tokenizer, mem = mb.prepare(work, False)
    _, _, _, holdout_docs = demo._synthetic_data(work / "holdout-src", mb.SEED)  # the demo's holdout
    atomic_write_jsonl(data_dir / "holdout.jsonl", holdout_docs)
    base = base_config(work, data_dir, target_dir, len(bundle.forget))
    result = {
        "benchmark": "benchmarks/leaderboard.py",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpu": mb.cpu_name(),
            "torch": torch.__version__,
            "torch_threads": 1,
            "loadavg_start": load0,
        },
        "trials_per_method": args.trials,
        "confirm": {"trials": args.confirm, "seeds": args.confirm_seeds},
        "pruner": args.pruner,
        "heldout_seeds": args.heldout_seeds,
        "validation_fraction": FRACTION,
        "base_config": yaml.safe_load(base.read_text()),
        "target_model": mem,
        "methods": {},
    }
    path = out / f"{args.name}.json"
    if args.resume and path.is_file():  # a run cut short: its methods are kept, the rest run now
        old = json.loads(path.read_text(encoding="utf-8"))
        result["methods"] = old["methods"]
        result["runs"] = [*old.get("runs", [old["date"]]), result["date"]]
        result["seconds_total"] = old.get("seconds_total", 0.0)
        t_all -= result["seconds_total"]
        result["machine"]["loadavg_start"] = old["machine"]["loadavg_start"]
        names = [n for n in names if n not in result["methods"]]
    for i, name in enumerate(names, 1):
        print(f"[leaderboard] {i}/{len(names)} {name}: {args.trials} trials", flush=True)
        r = tune(name, base, work, args.trials, model, tokenizer, args)
        result["methods"][name] = r
        d, t = r["default"]["metrics"], r["tuned"]["metrics"]
        print(
            f"[leaderboard] {name}: task agg {d['task_aggregate']:.3f} -> {t['task_aggregate']:.3f}, MIA score "
            f"{d['mia_score']:.3f} -> {t['mia_score']:.3f}; {r['trials']['pruned']} pruned; sweep "
            f"{r['sweep_seconds']:.0f}s = {r['cost_ratio']:.1f} x one default run",
            flush=True,
        )
        result["seconds_total"] = round(time.time() - t_all, 1)
        result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        atomic_write_json(out / f"{args.name}.json", result)  # after every method: a kill keeps the rest
        plot(result, out / f"{args.name}.png")
    print(f"[leaderboard] wrote {out / (args.name + '.json')} in {result['seconds_total']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
