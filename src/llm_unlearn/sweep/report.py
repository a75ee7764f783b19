"""A sweep's outputs, from the study alone (any process can write them, at any time):

- ``best.yaml`` (the best method's; ``best-METHOD.yaml`` for each method when several were tuned): the
  base YAML with the best trial's options written into it, which ``train --config`` takes as it is;
- ``trials.csv``: every trial's method, number, state, value (the validation proxy), seconds, the trial it
  retries, and its options;
- ``plots/`` (Optuna's matplotlib backend): ``history-METHOD.png``, ``importances-METHOD.png``,
  ``intermediate-METHOD.png`` (the evaluations the pruner saw);
- ``summary.txt`` (the one-screen summary, also printed) and ``sweep.json`` (the same as data).
"""

from __future__ import annotations

import copy
import csv
import io
import logging
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.io_utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["best_yaml", "trials_rows", "write_outputs", "summary_text", "method_result"]


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        sec, name = key.split(".", 1)
        out.setdefault(sec, {})[name] = value
    return out


def best_yaml(base_yaml: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The base YAML (nested sections) with `options` (dotted keys) written into it."""
    out = copy.deepcopy(base_yaml)
    for sec, values in nested(options).items():
        section = out.setdefault(sec, {})
        if not isinstance(section, dict):
            raise ValueError(f"the base config's section {sec!r} is not a mapping")
        section.update(values)
    return out


def _state(t) -> str:
    return t.state.name.lower()


def trials_rows(method: str, study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        opts = t.user_attrs.get("options") or {}
        rows.append(
            {
                "method": method,
                "number": t.number,
                "state": _state(t),
                "value": t.value,
                "seconds": t.user_attrs.get("seconds"),
                "retry_of": t.system_attrs.get("failed_trial"),
                "default": bool(t.user_attrs.get("default")),
                "evaluations": len(t.intermediate_values),
                **{k: v for k, v in opts.items() if k != "objective.method"},
            }
        )
    return rows


def method_result(method: str, study) -> dict[str, Any]:
    """Counts, the best trial and the default configuration's trial of one method's study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {
        s: sum(t.state == getattr(TrialState, s.upper()) for t in trials)
        for s in ("complete", "pruned", "fail", "running")
    }
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(done, key=lambda t: (t.value, -t.number)) if done else None
    default = next((t for t in done if t.user_attrs.get("default")), None)
    seconds = [t.user_attrs.get("seconds") for t in trials if t.user_attrs.get("seconds") is not None]
    return {
        "method": method,
        "study": study.study_name,
        "trials": count,
        "best": None
        if best is None
        else {"number": best.number, "value": best.value, "options": best.user_attrs.get("options")},
        "default": None if default is None else {"number": default.number, "value": default.value},
        "trial_seconds_total": round(sum(seconds), 1),
    }


def summary_text(results: list[dict[str, Any]], storage: str, out: Path) -> str:
    lines = [f"sweep of {len(results)} method(s); study storage {storage}", ""]
    lines.append(f"{'method':<20} {'done':>4} {'pruned':>6} {'failed':>6} {'default':>8} {'best':>8}  trial")
    for r in results:
        c, b, d = r["trials"], r["best"], r["default"]
        lines.append(
            f"{r['method']:<20} {c['complete'] + c['pruned']:>4} {c['pruned']:>6} {c['fail']:>6} "
            f"{'-' if d is None else format(d['value'], '.4f'):>8} {'-' if b is None else format(b['value'], '.4f'):>8}  "
            f"{'-' if b is None else b['number']}"
        )
    top = max((r for r in results if r["best"]), key=lambda r: r["best"]["value"], default=None)
    if top is not None:
        lines += ["", f"best: {top['method']} (validation proxy {top['best']['value']:.4f}):"]
        lines += [f"  {k}: {v}" for k, v in sorted((top["best"]["options"] or {}).items())]
        lines += ["", f"train it:   llm-unlearn train --config {out / 'best.yaml'} --output-dir RUN"]
    lines.append(f"held out:   {out / 'evaluation'} (units no trial saw: evaluate the run there)")
    lines.append(f"dashboard:  optuna-dashboard {storage}")
    return "\n".join(lines)


def _plots(method: str, study, plots: Path) -> list[str]:
    """Optuna's matplotlib plots of one study; a plot that cannot be drawn is logged, never fatal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    for name, fn in (
        ("history", ovm.plot_optimization_history),
        ("importances", ovm.plot_param_importances),
        ("intermediate", ovm.plot_intermediate_values),
    ):
        path = plots / f"{name}-{method}.png"
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path.name)
        except Exception as exc:  # e.g. importances need 2 complete trials with a varying option
            log.info("sweep: no %s plot for %s (%s)", name, method, exc)
            plt.close("all")
    return written


def write_outputs(
    studies: dict[str, Any], base_yaml: dict, out: Path, storage: str, extra: dict
) -> dict[str, Any]:
    """Write every output named in the module docstring; returns sweep.json's content."""
    import warnings

    out = Path(out)
    results = [method_result(m, s) for m, s in studies.items()]
    for r in results:
        if r["best"] is not None and len(studies) > 1:
            atomic_write_text(
                out / f"best-{r['method']}.yaml",
                yaml.safe_dump(best_yaml(base_yaml, r["best"]["options"]), sort_keys=False),
            )
    top = max((r for r in results if r["best"]), key=lambda r: r["best"]["value"], default=None)
    if top is not None:
        atomic_write_text(
            out / "best.yaml", yaml.safe_dump(best_yaml(base_yaml, top["best"]["options"]), sort_keys=False)
        )
    rows = [row for m, s in studies.items() for row in trials_rows(m, s)]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "trials.csv", buf.getvalue())
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        drawn = {m: _plots(m, s, plots) for m, s in studies.items()}
    text = summary_text(results, storage, out)
    atomic_write_text(out / "summary.txt", text + "\n")
    result = {"storage": storage, "methods": results, "plots": drawn, **extra}
    atomic_write_json(out / "sweep.json", result)
    return result
