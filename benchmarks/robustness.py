"""Is it really forgotten? Every registered method on the demo's data and budget, then the whole attack suite.

    python benchmarks/robustness.py [--out benchmarks/results] [--work runs/robustness] [--methods a,b]

1. the demo's steps 1-3 once (as `benchmarks/methods.py`: synthetic SemEval-layout data, a BPE tokenizer,
   a tiny OLMo-2 that memorized forget and retain -> WORK/target-model/), and a **never-trained** model:
   the same tiny model memorizing the retain records and the non-member documents only, with the same
   memorization options (-> WORK/never-trained/);
2. for every method of the registry: unlearning with the demo's options and budget, uncalibrated (as
   `make methods`: `methods.base_overrides`, `methods.run_method`), then
3. one `evaluate` of the unlearned model through the one runner (timed: the cost reference) and the
   attack stage (`llm_unlearn.attacks.stage.run_attacks`, all four attacks, default settings, the
   never-trained model given) on the same data;
4. `OUT/robustness-cpu.json` (per method: the recovery of every attack and metric with its
   denominator, the baseline metrics, the relearning gap to the never-trained model, the prompt template
   wins, the logit-lens best layers, seconds and items/s per attack, the suite / evaluate time ratio)
   and `OUT/robustness-cpu.png` (forget ROUGE-L recovery, methods x attacks).

Not done here yet: the calibrated default on the real SemEval slice (issue 20 asks for it too); run
`llm-unlearn attack` on that model by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import methods as mb  # noqa: E402

from llm_unlearn import demo  # noqa: E402
from llm_unlearn.attacks.options import AttackOptions  # noqa: E402
from llm_unlearn.attacks.stage import run_attacks  # noqa: E402
from llm_unlearn.evaluation.benchmark import get_benchmark  # noqa: E402
from llm_unlearn.evaluation.run import ModelSource, run_evaluation  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json  # noqa: E402
from llm_unlearn.train.methods import OBJECTIVES  # noqa: E402

ATTACK_ROWS = ("quantization_nf4", "quantization_int8", "relearning", "prompts", "logit_lens")
# the metric shown per attack: forget ROUGE-L; the logit lens has no generation: the share of answer
# tokens ranked first (best layer vs final)
METRIC = {a: "forget_top1" if a == "logit_lens" else "forget_rouge" for a in ATTACK_ROWS}


def recovery_of(m: dict, attack: str):
    return m["recovery"].get(attack, {}).get(METRIC[attack], {}).get("recovery")


def never_trained(work: Path, bundle, mia, tokenizer, progress: bool) -> Path:
    """The demo's tiny model memorizing retain records + non-member documents only (never the forget set)."""
    from llm_unlearn.finetune import memorize_tiny

    path = work / "never-trained"
    texts = demo.memorization_texts([r.__dict__ for r in bundle.retain], [d["document"] for d in mia[1]])
    model, _ = memorize_tiny(
        texts,
        tokenizer,
        **demo.MEMORIZATION,
        max_steps=demo.DEMO_MEMORIZE_STEPS,
        lr=3e-3,
        seed=mb.SEED,
        progress=progress,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def attack_method(
    name: str, work: Path, data_dir: Path, target_dir: Path, never_dir: Path, progress: bool
) -> dict:
    bench = get_benchmark("semeval")
    opts = bench.options(data=str(data_dir), mia_data=str(data_dir / "mia"))  # the benchmark defaults
    source = ModelSource(model=str(target_dir), adapter=str(work / name / "unlearned" / "adapter"))
    t0 = time.time()
    run_evaluation("semeval", source, opts, work / name / "evaluate", overwrite=True, progress=progress)
    t_eval = time.time() - t0
    t1 = time.time()
    a = AttackOptions(never_trained_model=str(never_dir))
    summary = run_attacks(
        "semeval", source, opts, a, work / name / "attacks", overwrite=True, progress=progress
    )
    t_suite = time.time() - t1
    timing = json.loads((work / name / "attacks" / "attack_timing.json").read_text())
    attacks = summary["metrics"]["attacks"]
    rel = attacks.get("relearning", {})
    return {
        "baseline": summary["metrics"]["baseline"],
        "recovery": {k: v["recovery"] for k, v in attacks.items()},
        "relearning_never_trained": rel.get("never_trained"),
        "relearning_gap_after": rel.get("gap_after_relearning"),
        "open_unlearning_relearning_robustness": rel.get("open_unlearning_relearning_robustness"),
        "open_unlearning_quantization_robustness": {
            k: v.get("open_unlearning_quantization_robustness")
            for k, v in attacks.items()
            if k.startswith("quantization")
        },
        "prompt_wins": attacks.get("prompts", {}).get("wins"),
        "prompts_never_trained_best": attacks.get("prompts", {}).get("never_trained_best"),
        "logit_lens": {
            m: {
                "best_layer": s["best_layer"],
                "final_layer": s["final_layer"],
                "best": s["best"],
                "final": s["final"],
            }
            for m, s in attacks.get("logit_lens", {}).get("per_model", {}).items()
        },
        "evaluate_seconds": round(t_eval, 2),
        "suite_seconds": round(t_suite, 2),
        "suite_over_evaluate": round(t_suite / t_eval, 2) if t_eval > 0 else None,
        "timing": timing,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n, m in result["methods"].items() if "recovery" in m]
    grid = np.full((len(names), len(ATTACK_ROWS)), np.nan)
    for i, n in enumerate(names):
        for j, a in enumerate(ATTACK_ROWS):
            v = recovery_of(result["methods"][n], a)
            grid[i, j] = np.nan if v is None else v
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.8))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", aspect="auto")
    for i in range(len(names)):
        for j in range(len(ATTACK_ROWS)):
            ax.text(
                j,
                i,
                "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
            )
    ax.set_xticks(range(len(ATTACK_ROWS)), ATTACK_ROWS, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    fig.colorbar(im, ax=ax, label="recovery (forget ROUGE-L; logit lens: top-1 share); 1 = all back")
    ax.set_title("What each attack brings back, per method (demo data, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """The README table: per method the forget ROUGE-L after unlearning and the recovery per attack."""

    def cell(m: dict, attack: str) -> str:
        v = recovery_of(m, attack)
        return "n/a" if v is None else f"{v:.2f}"

    def gap(m: dict) -> str:
        g = (m.get("relearning_gap_after") or {}).get("forget_rouge")
        return "n/a" if g is None else f"{g:+.2f}"

    head = (
        "| method | forget ROUGE-L (target → unlearned) | "
        + " | ".join(ATTACK_ROWS)
        + " | relearning gap to never-trained | suite / evaluate |"
    )
    lines = [head, "|" + "---|" * (len(ATTACK_ROWS) + 4)]
    for name, m in result["methods"].items():
        if "recovery" not in m:
            lines.append(f"| {name} | failed | " + " | ".join("" for _ in ATTACK_ROWS) + " | |")
            continue
        b = m["baseline"]
        lines.append(
            f"| {name} | {b['target']['forget_rouge']:.2f} → {b['unlearned']['forget_rouge']:.2f} | "
            + " | ".join(cell(m, a) for a in ATTACK_ROWS)
            + f" | {gap(m)}"
            + f" | {m['suite_seconds']:.0f} s / {m['evaluate_seconds']:.0f} s = ×{m['suite_over_evaluate']:.2f} |"
        )
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--work", default=str(REPO / "runs" / "robustness"))
    ap.add_argument("--methods", default="", help="comma-separated subset (default: every registered one)")
    ap.add_argument("--name", default="robustness-cpu")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the README table from the JSON in --out")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an unlearning option for every method (YAML value), e.g. train.sam_rho=0.05",
    )
    args = ap.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    if args.table:
        print(table(json.loads((out / f"{args.name}.json").read_text())))
        return 0
    if args.replot:
        plot(json.loads((out / f"{args.name}.json").read_text()), out / f"{args.name}.png")
        return 0
    torch.set_num_threads(1)
    progress = not args.no_progress
    names = [n for n in args.methods.split(",") if n] or list(OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        ap.error(f"unknown methods: {', '.join(unknown)}")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    load_start = _load()
    print(f"[robustness] demo data, target and never-trained models in {work}", flush=True)
    bundle, mia, data_dir, target_dir, model, tokenizer, mem = mb.prepare(work, progress)
    del model
    never_dir = never_trained(work, bundle, mia, tokenizer, progress)
    base = mb.base_overrides(work, data_dir, target_dir, len(bundle.forget), progress)
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.set)}
    base.update(extra)
    result = {
        "benchmark": "benchmarks/robustness.py",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpu": mb.cpu_name(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "load_average_start": load_start,
        },
        "data": {
            "source": "llm-unlearn demo synthetic dataset (seed 0)",
            "n_forget": len(bundle.forget),
            "n_retain": len(bundle.retain),
        },
        "attack_options": {
            k: v
            for k, v in AttackOptions().__dict__.items()
            if k not in ("target_model", "never_trained_model")
        },
        "overrides": extra,
        "methods": {},
    }
    for i, name in enumerate(names, 1):
        print(f"[robustness] {i}/{len(names)} {name}: unlearning", flush=True)
        try:
            r = mb.run_method(name, base, work, tokenizer, bundle, mia, progress)
            print(f"[robustness] {name}: evaluate + attacks", flush=True)
            a = attack_method(name, work, data_dir, target_dir, never_dir, progress)
        except Exception:
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            result["methods"][name] = {"error": tb}
            continue
        result["methods"][name] = {
            "unlearn_metrics": r["metrics"],
            "unlearn_seconds": r["unlearn_seconds"],
            **a,
        }
        rec = {k: recovery_of(a, k) for k in ATTACK_ROWS if k in a["recovery"]}
        print(
            f"[robustness] {name}: forget ROUGE-L recovery {rec}; suite {a['suite_seconds']}s = x{a['suite_over_evaluate']} evaluate",
            flush=True,
        )
        atomic_write_json(out / f"{args.name}.json", result)  # kept after every method
    result["seconds_total"] = round(time.time() - t_all, 1)
    result["machine"]["load_average_end"] = _load()
    atomic_write_json(out / f"{args.name}.json", result)
    plot(result, out / f"{args.name}.png")
    print(
        f"[robustness] wrote {out / (args.name + '.json')} and .png in {result['seconds_total']:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
