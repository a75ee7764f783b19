"""How the step's cost grows: ``ours`` and ``seed_style`` over sequence length, vocabulary size and
answer fraction (``python benchmarks/bench.py --scaling``; ``make bench`` runs it too).

One sweep per axis around a base point (the other two axes held at their base value):

* sequence length 128, 256, 512 (base 256);
* vocabulary 8k, 32k, 100k (base 32k; 100k ~ OLMo-2's 100,278);
* answer fraction 0.1, 0.3, 0.6 (base 0.3).

Every (point, variant) runs in a fresh process, so that the process's peak RSS (``VmHWM``; on CUDA
``torch.cuda.max_memory_allocated``) belongs to that variant alone. The process builds the model (an
OLMo-2 of ``--scaling-shape``: by default hidden 256, 4 layers, batch 4, sized to run in a few minutes
on 2 CPU cores), its LoRA adapter and (for ``ours``) the reference cache, records its RSS, then takes
``1 + steps`` steps of bench.py's loop (the first is warm-up); reported: median step time, the peak
RSS, and the peak minus the RSS before the first step (what the step itself adds).
Results: ``benchmarks/results/scaling-<device>.json`` and ``scaling-<device>.png``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE = {"seq": 256, "vocab": 32768, "answer_fraction": 0.3}
AXES = {"seq": [128, 256, 512], "vocab": [8192, 32768, 100352], "answer_fraction": [0.1, 0.3, 0.6]}
SHAPE = {
    "arch": "olmo2",
    "hidden": 256,
    "layers": 4,
    "heads": 4,
    "intermediate": 1024,
    "batch": 4,
    "n_forget": 1,
    "tie_embeddings": False,
}
VARIANTS = ("ours", "seed_style")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One (point, variant) in this process; returns its measurements."""
    import tempfile

    import torch

    if "bench" in sys.modules and hasattr(sys.modules["bench"], "Bench"):
        bench = sys.modules["bench"]
    else:
        import importlib.util

        spec_ = importlib.util.spec_from_file_location("bench", HERE / "bench.py")
        bench = importlib.util.module_from_spec(spec_)
        sys.modules["bench"] = bench
        spec_.loader.exec_module(bench)

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    shape = dict(spec["shape"], seq=spec["seq"], vocab=spec["vocab"], answer_fraction=spec["answer_fraction"])
    with tempfile.TemporaryDirectory(prefix="llm-unlearn-scaling-") as tmp:
        b = bench.Bench(shape, device, dtype, 0, "float16", Path(tmp), [spec["variant"]])
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        rss_before = _rss_bytes()
        peak_before = _peak_rss_bytes()
        res = bench.run_steps(b, [spec["variant"]], spec["steps"], 1, probes=False)[spec["variant"]]
        peak = _peak_rss_bytes()
        out = {
            "ms_per_step": res["ms_per_step"],
            "ms_steps": res["ms_steps"],
            "tokens_per_s": res["tokens_per_s"],
            "rss_before_step_bytes": rss_before,
            "peak_rss_bytes": peak,
            "step_peak_rss_increase_bytes": max(0, peak - max(rss_before, 0)),
            "peak_rss_before_step_bytes": peak_before,
            "loss_step0": res["loss_step0"]["total"],
        }
        if device.type == "cuda":
            torch.cuda.synchronize()
            out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
            out["cuda_step_peak_increase_bytes"] = int(torch.cuda.max_memory_allocated() - before)
    return out


def points() -> list[tuple[str, dict[str, Any]]]:
    """(axis, point) for each sweep; the base point appears once per axis (shared measurement)."""
    out = []
    for axis, values in AXES.items():
        for v in values:
            out.append((axis, dict(BASE, **{axis: v})))
    return out


def _harness():
    if "harness" in sys.modules:
        return sys.modules["harness"]
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness", HERE / "harness.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = mod
    spec.loader.exec_module(mod)
    return mod


def _peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` of /proc/self/status (the high-water mark of this process's own
    memory, reset by exec), else ``ru_maxrss``. ``ru_maxrss`` alone is not enough: Linux carries it over
    fork + exec, so a point launched from a large process (``bench.py --scaling`` after its own runs)
    would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 1,
    steps: int = 2,
    shape: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    plot: bool = True,
    in_process: bool = False,
    progress=None,
) -> dict[str, Any]:
    """Run every (point, variant) in its own process; write the JSON (and the plot). ``progress``:
    a factory ``(units, total_weight) -> harness.Progress`` (bench.py's), or None."""
    t_start = time.time()
    unique = list(dict.fromkeys(json.dumps(p, sort_keys=True) for _, p in points()))
    prog = _harness().open_progress(progress, len(unique) * len(VARIANTS))
    shape = dict(SHAPE, **(shape or {}))
    measured: dict[str, dict[str, Any]] = {}
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), *filter(None, [env.get("PYTHONPATH")])])
    for axis, point in points():
        key = json.dumps(point, sort_keys=True)
        if key not in measured:
            measured[key] = {}
            for variant in VARIANTS:
                prog.begin(f"{axis} {point[axis]} (seq {point['seq']}, V {point['vocab']}, answers "
                           f"{point['answer_fraction']}): {variant}, 1 warm-up + {steps} steps")  # fmt: skip
                spec = dict(
                    point,
                    variant=variant,
                    device=device,
                    dtype=dtype,
                    threads=threads,
                    steps=steps,
                    shape=shape,
                )
                if in_process:  # tests: the schema, not the memory (the peak is this process's)
                    measured[key][variant] = child(spec)
                    continue
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=900,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"scaling point {spec} failed:\n{proc.stderr[-3000:]}")
                measured[key][variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        m = measured[key]
        rows.append(
            {
                "axis": axis,
                **point,
                **{v: m[v] for v in VARIANTS},
                "seed_style/ours": round(m["seed_style"]["ms_per_step"] / m["ours"]["ms_per_step"], 3),
                "peak_rss_ratio": round(m["seed_style"]["peak_rss_bytes"] / m["ours"]["peak_rss_bytes"], 3),
                "step_rss_increase_ratio": (
                    round(
                        m["seed_style"]["step_peak_rss_increase_bytes"]
                        / m["ours"]["step_peak_rss_increase_bytes"],
                        3,
                    )
                    if m["ours"]["step_peak_rss_increase_bytes"]
                    else None
                ),
            }
        )
    import platform

    import torch

    result = {
        "schema": "llm-unlearn-scaling/1",
        "device": device,
        "dtype": dtype,
        "threads": threads,
        "steps": steps,
        "shape": shape,
        "base": BASE,
        "axes": AXES,
        "memory_metric": "cuda max_memory_allocated" if device == "cuda" else "process peak RSS (VmHWM)",
        "rows": rows,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - t_start, 1),
    }
    out_dir = out_dir or HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"scaling-{device}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    if plot:
        write_plot(result, out_dir / f"scaling-{device}.png")
    return result


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem_key = "cuda_step_peak_increase_bytes" if result["device"] == "cuda" else "peak_rss_bytes"
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, axis in enumerate(AXES):
        rows = [r for r in result["rows"] if r["axis"] == axis]
        xs = [r[axis] for r in rows]
        for variant, style in (("ours", "o-"), ("seed_style", "s--")):
            axes[0, col].plot(xs, [r[variant]["ms_per_step"] for r in rows], style, label=variant)
            axes[1, col].plot(xs, [r[variant][mem_key] / 2**20 for r in rows], style, label=variant)
        for row in (0, 1):
            axes[row, col].set_xlabel(axis.replace("_", " "))
            axes[row, col].grid(alpha=0.3)
            if axis != "answer_fraction":
                axes[row, col].set_xscale("log", base=2)
        axes[0, col].set_ylabel("ms / step")
        axes[1, col].set_ylabel(("CUDA peak" if result["device"] == "cuda" else "peak RSS") + " (MiB)")
    axes[0, 0].legend()
    s = result["shape"]
    fig.suptitle(
        f"step cost: ours vs seed_style ({result['device']}, {result['dtype']}, hidden {s['hidden']}, "
        f"{s['layers']} layers, batch {s['batch']}; base seq {BASE['seq']}, V {BASE['vocab']}, "
        f"answer {BASE['answer_fraction']})"
    )
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def format_table(result: dict[str, Any]) -> str:
    mem_key = "cuda_peak_bytes" if result["device"] == "cuda" else "peak_rss_bytes"
    lines = [
        f"{'axis':<16}{'value':>8}{'ours ms':>10}{'seed ms':>10}{'seed/ours':>10}{'ours MiB':>10}{'seed MiB':>10}"
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['axis']:<16}{r[r['axis']]:>8}{r['ours']['ms_per_step']:>10.0f}{r['seed_style']['ms_per_step']:>10.0f}"
            f"{r['seed_style/ours']:>10.2f}{r['ours'][mem_key] / 2**20:>10.0f}{r['seed_style'][mem_key] / 2**20:>10.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        r = run()
        print(format_table(r))
