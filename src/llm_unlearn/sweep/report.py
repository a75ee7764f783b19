"""A sweep's outputs, from the study alone (any process can write them, at any time):

- ``best.yaml`` (the best method's; ``best-METHOD.yaml`` for each method when several were tuned): the
  base YAML with the best trial's options written into it (the best: the highest mean over the
  confirmation seeds, ``sweep/confirm.select``), which ``train --config`` takes as it is;
- ``trials.csv``: every trial's method, number, state, value (the validation proxy of its run), seeds and
  mean (with its confirmation runs: ``sweep/confirm.py``), seconds, the trial it retries, and its options;
- ``plots/`` (Optuna's matplotlib backend): ``history-METHOD.png``, ``importances-METHOD.png``,
  ``intermediate-METHOD.png`` (the evaluations the pruner saw); with confirmation,
  ``confirmation-METHOD.png``: every candidate's runs and mean, the chosen one marked, the runs skipped;
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
    import statistics

    from llm_unlearn.sweep.confirm import runs_of

    rows = []
    for t in study.get_trials(deepcopy=False):
        opts = t.user_attrs.get("options") or {}
        runs = runs_of(study, t) if t.value is not None else []
        rows.append(
            {
                "method": method,
                "number": t.number,
                "state": _state(t),
                "value": t.value,
                "seeds": len(runs) or None,
                "mean": statistics.fmean(runs) if len(runs) > 1 else None,
                "seconds": t.user_attrs.get("seconds"),
                "retry_of": t.system_attrs.get("failed_trial"),
                "default": bool(t.user_attrs.get("default")),
                "evaluations": len(t.intermediate_values),
                **{k: v for k, v in opts.items() if k != "objective.method"},
            }
        )
    return rows


def method_result(method: str, study, confirm: int = 0) -> dict[str, Any]:
    """Counts, the best trial (by its mean over the confirmation seeds when `confirm` > 0:
    ``sweep/confirm.select``) and the default configuration's trial of one method's study. A trial's
    ``value`` is the mean of its runs; ``runs`` lists them (its own first)."""
    import statistics

    from optuna.trial import TrialState

    from llm_unlearn.sweep.confirm import candidates, runs_of, select, skipped_runs

    trials = study.get_trials(deepcopy=False)
    count = {
        s: sum(t.state == getattr(TrialState, s.upper()) for t in trials)
        for s in ("complete", "pruned", "fail", "running")
    }
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best, _ = select(study, confirm)
    default = next((t for t in done if t.user_attrs.get("default")), None)

    def scored(t) -> dict[str, Any]:
        runs = runs_of(study, t)
        return {"number": t.number, "value": statistics.fmean(runs), "runs": runs}

    seconds = [t.user_attrs.get("seconds") for t in trials if t.user_attrs.get("seconds") is not None]
    return {
        "method": method,
        "study": study.study_name,
        "trials": count,
        "best": None if best is None else {**scored(best), "options": best.user_attrs.get("options")},
        "default": None if default is None else scored(default),
        "trial_seconds_total": round(sum(seconds), 1),
        "confirmation": {
            "runs": sum(len(runs_of(study, t)) - 1 for t in candidates(study, confirm)),
            "skipped": skipped_runs(study, confirm),  # could not change the selection (sweep/confirm.py)
        },
    }


def summary_text(results: list[dict[str, Any]], storage: str, out: Path) -> str:
    lines = [f"sweep of {len(results)} method(s); study storage {storage}", ""]
    head = f"{'method':<20} {'done':>4} {'pruned':>6} {'failed':>6} {'default':>8} {'best':>8}  trial  seeds"
    lines.append(head)
    for r in results:
        c, b, d = r["trials"], r["best"], r["default"]
        lines.append(
            f"{r['method']:<20} {c['complete'] + c['pruned']:>4} {c['pruned']:>6} {c['fail']:>6} "
            f"{'-' if d is None else format(d['value'], '.4f'):>8} {'-' if b is None else format(b['value'], '.4f'):>8}  "
            f"{'-' if b is None else b['number']:>5}  {'-' if b is None else len(b['runs']):>5}"
        )
    if any(r["best"] and len(r["best"]["runs"]) > 1 for r in results):
        lines.append("(default, best: the mean validation proxy over the seeds each was trained with)")
    skipped = sum((r.get("confirmation") or {}).get("skipped", 0) for r in results)
    if skipped:
        ran = sum((r.get("confirmation") or {}).get("runs", 0) for r in results)
        lines.append(
            f"(confirmation: {ran} run(s); {skipped} skipped: their means could not reach the best's)"
        )
    top = max((r for r in results if r["best"]), key=lambda r: r["best"]["value"], default=None)
    if top is not None:
        runs = top["best"]["runs"]
        spread = f"; runs {min(runs):.4f}..{max(runs):.4f}" if len(runs) > 1 else ""
        lines += ["", f"best: {top['method']} (validation proxy {top['best']['value']:.4f}{spread}):"]
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


def confirmation_plot(method: str, study, confirm: int, path: Path) -> bool:
    """Each confirmed candidate's validation proxies (its trial's run and its other seeds) and their
    mean, the selected one marked, the number of runs skipped in the title; False (nothing written)
    without confirmation runs."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm_unlearn.sweep.confirm import candidates, runs_of, select, skipped_runs

    cands = candidates(study, confirm)
    runs = [runs_of(study, t) for t in cands]
    if not cands or all(len(r) < 2 for r in runs):
        return False
    best, _ = select(study, confirm)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(cands) + 2), 4))
    for x, (t, r) in enumerate(zip(cands, runs)):
        chosen = best is not None and t.number == best.number
        color = "tab:green" if chosen else "tab:blue"
        ax.scatter([x] * len(r), r, color=color, alpha=0.7, zorder=3)
        ax.scatter([x], [r[0]], facecolors="none", edgecolors="black", s=90, zorder=4)  # the trial's own run
        ax.hlines(statistics.fmean(r), x - 0.3, x + 0.3, color=color, linewidth=2.5)
    labels = [
        f"trial {t.number}" + (" (default)" if t.user_attrs.get("default") else "") + f"\n{len(r)} runs"
        for t, r in zip(cands, runs)
    ]
    ax.set_xticks(range(len(cands)), labels, fontsize=8)
    ax.set_ylabel("validation proxy")
    skipped = skipped_runs(study, confirm)
    ax.set_title(
        f"{method}: confirmation (dots: runs, ringed: the trial's own; bar: mean; green: chosen)"
        + (f"; {skipped} run(s) skipped" if skipped else ""),
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_outputs(
    studies: dict[str, Any], base_yaml: dict, out: Path, storage: str, extra: dict, confirm: int = 0
) -> dict[str, Any]:
    """Write every output named in the module docstring; returns sweep.json's content."""
    import warnings

    out = Path(out)
    results = [method_result(m, s, confirm) for m, s in studies.items()]
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
        for m, st in studies.items():
            name = f"confirmation-{m}.png"
            if confirm and confirmation_plot(m, st, confirm, plots / name):
                drawn[m].append(name)
    text = summary_text(results, storage, out)
    atomic_write_text(out / "summary.txt", text + "\n")
    result = {"storage": storage, "methods": results, "plots": drawn, **extra}
    atomic_write_json(out / "sweep.json", result)
    return result
