"""The calibration options measured against each other on the demo (same data, target and budget).

    python benchmarks/demo_calibration.py [--out benchmarks/results/demo-calibration.json]

Each variant runs the whole demo (`llm-unlearn demo`: synthetic data, memorized tiny model, unlearning,
SemEval evaluation) with only the calibration options changed:
- uncalibrated: no evaluation during training, the last state kept (what the demo did before);
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
    "uncalibrated": {"calibration.mode": "off", "calibration.eval_every": "off", "calibration.select": "last"},
    "select": {"calibration.mode": "off"},
    "stop": {"calibration.mode": "stop"},
    "gate": {},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo-calibration.json"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [v for v in args.variants.split(",") if v]:
            r = run_demo(Path(tmp) / name, progress=False, unlearn_overrides=VARIANTS[name], print_table=False)
            run = json.loads((Path(tmp) / name / "unlearned" / "run.json").read_text())
            cal = run.get("calibration") or {}
            results[name] = {"overrides": VARIANTS[name], "after": r["after"], "before": r["before"],
                             "unlearn_steps": run["steps_done"], "seconds": r["seconds"],
                             "selected": cal.get("selected"), "stop_reason": cal.get("stop_reason")}
            a = r["after"]
            print(f"{name:13s} forget EM {a['forget']['knowledge_em']:.3f} R-L {a['forget']['regurgitation_rougeL']:.3f}"
                  f" retain EM {a['retain']['knowledge_em']:.3f} R-L {a['retain']['regurgitation_rougeL']:.3f}"
                  f" AUC {a['mia_auc']:.3f} ({r['seconds']:.0f}s)", flush=True)
    atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
