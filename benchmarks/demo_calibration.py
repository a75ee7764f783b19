"""The calibration options measured against each other on the demo (same data, target and budget).

    python benchmarks/demo_calibration.py [--out benchmarks/results/demo-calibration.json]

Each variant runs the whole demo (`llm-unlearn demo`: synthetic data, memorized tiny model, unlearning,
SemEval evaluation) with only the calibration options changed:
- records-only-uncalibrated: only the forget records unlearned, no evaluation during training, the last
  state kept (what the demo did before this round);
- uncalibrated: the forget documents unlearned too (`calibration.unlearn_documents`), uncalibrated;
- select: evaluate during training and keep the best evaluation by the proxy, nothing else;
- stop: also stop in the last chunk at |AUC - 0.5| <= 0.05 or on overshoot;
- gate: also stop pushing forget units that look never-seen (the default preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llm_unlearn.demo import run_demo  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json  # noqa: E402

VARIANTS = {
    "records-only-uncalibrated": {
        "calibration.mode": "off",
        "calibration.eval_every": "off",
        "calibration.select": "last",
        "calibration.unlearn_documents": False,
    },
    "uncalibrated": {
        "calibration.mode": "off",
        "calibration.eval_every": "off",
        "calibration.select": "last",
    },
    "select": {"calibration.mode": "off"},
    "stop": {"calibration.mode": "stop"},
    "gate": {},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo-calibration.json"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--merge-into", action="store_true", help="add to an existing --out file")
    ap.add_argument("--seeds", default="0", help="comma-separated demo seeds (data, target model and run)")
    args = ap.parse_args(argv)
    results = json.loads(Path(args.out).read_text()) if args.merge_into and Path(args.out).is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(x) for x in args.seeds.split(",") if x.strip()]:
            for name in [v for v in args.variants.split(",") if v]:
                key = name if seed == 0 else f"{name}@seed{seed}"
                results[key] = one(Path(tmp) / key, name, seed)
    atomic_write_json(args.out, results)
    return 0


def one(out: Path, name: str, seed: int) -> dict:
    """One demo run of variant `name` with `seed`; its numbers, printed and returned."""
    r = run_demo(out, progress=False, unlearn_overrides=VARIANTS[name], print_table=False, seed=seed)
    run = json.loads((out / "unlearned" / "run.json").read_text())
    cal = run.get("calibration") or {}
    a = r["after"]
    print(
        f"{name:13s} seed {seed} forget EM {a['forget']['knowledge_em']:.3f} "
        f"R-L {a['forget']['regurgitation_rougeL']:.3f} retain EM {a['retain']['knowledge_em']:.3f} "
        f"R-L {a['retain']['regurgitation_rougeL']:.3f} AUC {a['mia_auc']:.3f} ({r['seconds']:.0f}s)",
        flush=True,
    )
    return {
        "variant": name,
        "seed": seed,
        "overrides": VARIANTS[name],
        "after": r["after"],
        "before": r["before"],
        "unlearn_steps": run["steps_done"],
        "seconds": r["seconds"],
        "selected": cal.get("selected"),
        "stop_reason": cal.get("stop_reason"),
    }


if __name__ == "__main__":
    raise SystemExit(main())
