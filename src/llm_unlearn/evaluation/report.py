"""One summary shape for every benchmark (SemEval, TOFU, MUSE, MMLU), a common ``report.md`` and plots,
and the pieces every report uses: number formatting (:func:`fmt`), Markdown cells (:func:`md_cell`),
figures (:func:`figure`, :func:`save_figure`). SemEval's own report: ``benchmarks/semeval/report.py``.

``<benchmark>_summary.json``::

    {"benchmark": "tofu" | "muse" | "semeval",
     "headline": {name: number, ...},      # the numbers papers compare, in table order
     "metrics": {name: number, ...},       # every metric of the benchmark (its own key names)
     "n_items": {set: count, ...},
     "reference": {...},                   # the retain model's files / reference AUC used, if any
     "config": {...}}                      # what was evaluated and how

Nothing time- or machine-dependent is written, so the same model and data give identical files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_unlearn.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "fmt",
    "md_cell",
    "figure",
    "save_figure",
    "make_summary",
    "semeval_summary",
    "write_summary",
    "render_benchmark_report",
    "plot_headline",
    "plot_histograms",
]

SEMEVAL_HEADLINE = ("aggregate-score", "harmonic-mean-task-aggregate", "mia_final_score", "mmlu_average")


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table; "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_cell(text: Any, limit: int | None = 160) -> str:
    """Text made safe for one Markdown table cell (pipes escaped, newlines shown as ⏎, shortened)."""
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ")


def figure():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """The figure as a PNG at `path` (written atomically); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    figure().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _clean(value: Any) -> Any:
    """NaN / inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def make_summary(
    benchmark: str,
    headline: Mapping[str, Any],
    metrics: Mapping[str, Any],
    n_items: Mapping[str, int],
    reference: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return _clean(
        {
            "benchmark": benchmark,
            "headline": dict(headline),
            "metrics": dict(metrics),
            "n_items": dict(n_items),
            "reference": dict(reference or {}),
            "config": dict(config or {}),
        }
    )


def semeval_summary(results: Mapping[str, Any], n_items: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The SemEval ``evaluation_results.json`` in the common shape: its scalar results and the two
    split objects under their official key names (timing left out: it differs between runs)."""
    metrics = {k: v for k, v in results.items() if not isinstance(v, (dict, list)) or k.endswith("-set")}
    return make_summary(
        "semeval",
        {k: results.get(k) for k in SEMEVAL_HEADLINE if k in results},
        metrics,
        dict(n_items or {}),
        config=results.get("config") if isinstance(results.get("config"), dict) else None,
    )


def write_summary(output_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    return atomic_write_json(Path(output_dir) / f"{summary['benchmark']}_summary.json", summary)


# ------------------------------------------------------------------------------------------ report
def render_benchmark_report(
    summary: Mapping[str, Any],
    examples: Sequence[Mapping[str, Any]] = (),
    plots: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """``report.md``: headline table, all metrics, item counts, reference, a few generations, plots."""
    name = {"tofu": "TOFU", "muse": "MUSE", "semeval": "SemEval-2025 Task 4"}.get(
        summary["benchmark"], summary["benchmark"]
    )
    lines = [f"# {name} evaluation", ""]
    model = (summary.get("config") or {}).get("model")
    if model:
        adapter = (summary.get("config") or {}).get("adapter")
        lines += [f"Model: `{model}`" + (f" + adapter `{adapter}`" if adapter else ""), ""]
    lines += ["## Headline", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in summary["headline"].items()]
    lines += ["", "## All metrics", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in summary["metrics"].items() if not isinstance(v, (dict, list))]
    lines += ["", "## Items", "", "| set | items |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in summary["n_items"].items()]
    if summary.get("reference"):
        lines += ["", "## Reference (retain model)", ""]
        lines += [f"- {k}: {md_cell(fmt(v), None)}" for k, v in summary["reference"].items()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if examples:
        lines += [
            "",
            "## Example generations",
            "",
            "| set | prompt | expected | generated | score |",
            "| --- | --- | --- | --- | ---: |",
        ]
        for ex in examples:
            lines.append(
                f"| {md_cell(ex.get('set'))} | {md_cell(ex.get('prompt'), 120)} | {md_cell(ex.get('expected'), 120)} "
                f"| {md_cell(ex.get('generation'), 120)} | {fmt(ex.get('score'))} |"
            )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_benchmark_report(output_dir: str | Path, summary, examples=(), plots=(), notes=()) -> Path:
    return atomic_write_text(
        Path(output_dir) / "report.md", render_benchmark_report(summary, examples, plots, notes)
    )


# ------------------------------------------------------------------------------------------ plots
def plot_headline(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Horizontal bars of the headline numbers (each labelled with its value)."""
    plt = figure()
    items = [(k, v) for k, v in summary["headline"].items() if isinstance(v, (int, float)) and v is not None]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * max(len(items), 1)))
    names = [k for k, _ in items]
    values = [float(v) for _, v in items]
    ax.barh(range(len(values)), values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.4g}", va="center", fontsize=9)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_title(f"{summary['benchmark']}: headline metrics")
    return save_figure(fig, path)


def plot_histograms(
    series: Mapping[str, Sequence[float]], path: str | Path, xlabel: str, title: str, log_x: bool = False
) -> Path:
    """Overlaid histograms on common bins (e.g. forget-set truth ratios: model vs retain model)."""
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    clean = {
        k: [float(x) for x in v if x is not None and math.isfinite(x) and (x > 0 or not log_x)]
        for k, v in series.items()
    }
    values = [x for v in clean.values() for x in v]
    if values:
        tr = (lambda x: math.log10(x)) if log_x else (lambda x: x)
        lo, hi = min(map(tr, values)), max(map(tr, values))
        edges = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else [lo - 0.5, lo + 0.5]
        for name, v in clean.items():
            ax.hist([tr(x) for x in v], bins=edges, alpha=0.55, label=f"{name} (n={len(v)})")
        ax.legend()
    ax.set_xlabel(("log10 " if log_x else "") + xlabel)
    ax.set_ylabel("items")
    ax.set_title(title)
    return save_figure(fig, path)
