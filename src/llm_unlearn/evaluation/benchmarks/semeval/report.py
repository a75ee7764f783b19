"""SemEval's human-readable outputs: its ``report.md`` and its two plots (matplotlib, Agg backend; the
shared pieces - number formatting, Markdown cells, figures - are in :mod:`llm_unlearn.evaluation.report`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_unlearn.evaluation.metrics.semeval import SPLITS, mia_score
from llm_unlearn.evaluation.report import figure, fmt, md_cell, save_figure
from llm_unlearn.io_utils import atomic_write_text

__all__ = ["write_report", "render_report", "plot_semeval_scores", "plot_mia_nll"]

TERM_COLUMNS = (
    ("forget", "regurgitation-score", "forget regurgitation\n(1 - x)"),
    ("forget", "knowledge-score", "forget knowledge\n(1 - x)"),
    ("retain", "regurgitation-score", "retain regurgitation"),
    ("retain", "knowledge-score", "retain knowledge"),
)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _tasks(results: Mapping[str, Any]) -> list[str]:
    tasks: set[str] = set()
    for split in SPLITS:
        obj = results.get(f"{split}-set") or {}
        tasks.update(k for k in obj if not k.startswith("overall-"))
    return sorted(tasks)


def _task_table(results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| split | task | sc items | regurgitation (ROUGE-L recall) | ROUGE-1 recall | qa items | knowledge (exact match) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split in SPLITS:
        obj = results.get(f"{split}-set")
        if not obj:
            continue
        split_rows = [r for r in rows if r.get("split") == split]
        groups = [(t, [r for r in split_rows if r.get("task") == t]) for t in _tasks(results) if t in obj]
        groups.append(("**all**", split_rows))
        for task, t_rows in groups:
            sc = [r for r in t_rows if r.get("kind") == "sc"]
            qa = [r for r in t_rows if r.get("kind") == "qa"]
            if task == "**all**":
                reg, kno = obj.get("overall-regurgitation-score"), obj.get("overall-knowledge-score")
            else:
                reg, kno = obj[task].get("regurgitation-score"), obj[task].get("knowledge-score")
            r1 = _mean([r["rouge1_recall"] for r in sc if r.get("rouge1_recall") is not None])
            lines.append(
                f"| {split} | {task} | {len(sc)} | {fmt(reg)} | {fmt(r1)} | {len(qa)} | {fmt(kno)} |"
            )
    return lines


def _item_score(row: Mapping[str, Any]) -> float | None:
    if row.get("kind") == "sc":
        return row.get("regurgitation_score")
    if row.get("kind") == "qa":
        return row.get("knowledge_score")
    return None


def _examples(rows: Sequence[Mapping[str, Any]], n: int = 3) -> list[str]:
    lines: list[str] = []
    headers = {
        ("forget", True): "Forget items the model still reproduces best (unlearning failures)",
        ("forget", False): "Forget items reproduced least (forgotten)",
        ("retain", False): "Retain items reproduced worst (collateral damage)",
        ("retain", True): "Retain items reproduced best",
    }
    for split, best_first in (("forget", True), ("forget", False), ("retain", False), ("retain", True)):
        scored = [r for r in rows if r.get("split") == split and _item_score(r) is not None]
        if not scored:
            continue
        scored.sort(key=lambda r: (_item_score(r), r["id"]), reverse=best_first)
        lines += [
            "",
            f"#### {headers[(split, best_first)]}",
            "",
            "| id | task | kind | score | input | expected | model output |",
            "| --- | --- | --- | ---: | --- | --- | --- |",
        ]
        for r in scored[:n]:
            lines.append(
                f"| {md_cell(r['id'], 60)} | {md_cell(r.get('task'))} | {r.get('kind')} | {fmt(_item_score(r), 3)} "
                f"| {md_cell(r.get('input'), 120)} | {md_cell(r.get('expected_output'))} | {md_cell(r.get('model_output'))} |"
            )
    return lines


def _overview_lines(results: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """Title, model, mode, the aggregate table and the warnings."""
    lines = ["# SemEval-2025 Task 4 evaluation", ""]
    if cfg.get("model"):
        lines.append(
            f"Model: `{cfg['model']}`" + (f" with adapter `{cfg['adapter']}`" if cfg.get("adapter") else "")
        )
    mode = "official-compat (one example at a time, no padding)" if cfg.get("official_compat") else "batched"
    lines += [
        f"Mode: {mode}; greedy decoding, max_new_tokens = {cfg.get('max_new_tokens')}; "
        f"{cfg.get('n_forget', 0)} forget and {cfg.get('n_retain', 0)} retain items, "
        f"{cfg.get('n_members', 0)} member and {cfg.get('n_nonmembers', 0)} non-member MIA documents.",
        "",
        "## Aggregate",
        "",
        "| term | value |",
        "| --- | ---: |",
        f"| task aggregate (harmonic mean of {len(results.get('aggregated-terms', []))} terms) "
        f"| {fmt(results.get('harmonic-mean-task-aggregate'))} |",
        f"| MMLU average | {fmt(results.get('mmlu_average'))} |",
        f"| MIA score (1 - 2·\\|AUC - 0.5\\|, loss attack) | {fmt(results.get('mia_final_score'))} |",
        f"| **final aggregate** (mean of the three; -1 if MMLU or MIA is missing) "
        f"| **{fmt(results.get('aggregate-score'))}** |",
        "",
    ]
    for w in results.get("warnings", []):
        lines.append(f"> **Warning:** {md_cell(w, None)}")
    if results.get("warnings"):
        lines.append("")
    return lines


def _mia_lines(
    results: Mapping[str, Any], mia: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]
) -> list[str]:
    """The membership-inference section: mean NLLs and the AUC of every attack."""
    lines = ["## Membership inference", ""]
    if "mia_attacks" not in results:
        return lines + ["Not computed (no MIA documents given)."]
    members = [m for m in mia if m.get("set") == "member"]
    nonmembers = [m for m in mia if m.get("set") == "nonmember"]
    lines += [
        f"{len(members)} members, {len(nonmembers)} non-members. Mean NLL: members "
        f"{fmt(_mean([m['nll'] for m in members]))}, non-members {fmt(_mean([m['nll'] for m in nonmembers]))}. "
        "AUC 0.5 = members indistinguishable from non-members (the goal); the official score uses the loss attack.",
        "",
        "| attack | AUC | 1 - 2·\\|AUC - 0.5\\| |",
        "| --- | ---: | ---: |",
    ]
    k = cfg.get("min_k_percent", 20)
    names = {
        "loss": "loss (official)",
        "zlib": "zlib ratio",
        "min_k": f"Min-K% (k = {fmt(k, 0)})",
        "min_k_plus_plus": f"Min-K%++ (k = {fmt(k, 0)})",
    }
    for name, auc in results["mia_attacks"].items():
        lines.append(
            f"| {names.get(name, name)} | {fmt(auc)} | {fmt(mia_score(auc) if auc is not None else None)} |"
        )
    ci = results.get("mia_loss_auc_interval")
    if ci:
        lines += [
            "",
            f"How sure the loss AUC is: standard error {fmt(ci['se'])} (DeLong), 95 % interval "
            f"{fmt(ci['low'])}-{fmt(ci['high'])}, so the MIA score lies in {fmt(ci['mia_score_low'])}-"
            f"{fmt(ci['mia_score_high'])}: the sampling noise of {ci['members']} members against "
            f"{ci['nonmembers']} non-members, not a property of the model.",
        ]
    return lines


def _mmlu_and_timing_lines(results: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """The MMLU section (average against the threshold) and the timing table."""
    lines = ["", "## MMLU", ""]
    if results.get("mmlu_average") is not None:
        thr = cfg.get("mmlu_threshold", 0.371)
        ok = results["mmlu_average"] >= thr
        lines.append(
            f"Average accuracy {fmt(results['mmlu_average'])} (threshold {thr}: {'ok' if ok else 'BELOW'})."
        )
    else:
        lines.append("Not given (pass --mmlu-data or --mmlu-metrics).")
    timing = results.get("timing", {})
    lines += ["", "## Timing", "", "| stage | seconds | items | items/s |", "| --- | ---: | ---: | ---: |"]
    for stage, t in timing.items():
        if isinstance(t, Mapping):
            lines.append(
                f"| {stage} | {fmt(t.get('seconds'), 2)} | {t.get('items')} | {fmt(t.get('items_per_s'), 2)} |"
            )
    if "total_seconds" in timing:
        lines.append(f"| total | {fmt(timing['total_seconds'], 2)} | | |")
    return lines


def render_report(
    results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], mia: Sequence[Mapping[str, Any]] = ()
) -> str:
    """The text of ``report.md``."""
    cfg = results.get("config", {})
    lines = _overview_lines(results, cfg)
    lines += ["## Scores per split and task", "", "Forget scores should be low, retain scores high.", ""]
    lines += _task_table(results, rows)
    terms = results.get("aggregated-terms", [])
    lines += ["", "Aggregated terms (forget as 1 - x): " + ", ".join(fmt(t, 3) for t in terms), ""]
    lines += _mia_lines(results, mia, cfg)
    lines += _mmlu_and_timing_lines(results, cfg)
    lines += ["", "## Examples"]
    lines += _examples(rows)
    return "\n".join(lines) + "\n"


def write_report(
    path: str | Path, results: Mapping[str, Any], rows: Sequence[Mapping], mia: Sequence[Mapping] = ()
) -> Path:
    return atomic_write_text(path, render_report(results, rows, mia))


def plot_semeval_scores(results: Mapping[str, Any], path: str | Path) -> Path:
    """The aggregated terms as a tasks x 4 grid of cells (forget shown as 1 - x), annotated, with the
    harmonic mean in the title."""
    plt = figure()
    tasks = _tasks(results) or ["(no task)"]
    grid: list[list[float | None]] = []
    for task in tasks:
        row: list[float | None] = []
        for split, metric, _ in TERM_COLUMNS:
            value = ((results.get(f"{split}-set") or {}).get(task) or {}).get(metric)
            row.append(None if value is None else (1.0 - value if split == "forget" else value))
        grid.append(row)
    data = [[math.nan if v is None else v for v in row] for row in grid]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 1.1 * len(tasks)))
    im = ax.imshow(data, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(
                j, i, "n/a" if v is None else f"{v:.3f}", ha="center", va="center", fontsize=11, color="black"
            )
    ax.set_xticks(range(len(TERM_COLUMNS)), [c[2] for c in TERM_COLUMNS], fontsize=9)
    ax.set_yticks(range(len(tasks)), tasks)
    hm = results.get("harmonic-mean-task-aggregate")
    ax.set_title(f"SemEval-2025 Task 4 terms (higher is better) - harmonic mean = {fmt(hm)}")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return save_figure(fig, path)


def plot_mia_nll(mia: Sequence[Mapping[str, Any]], path: str | Path, auc: float | None = None) -> Path:
    """Histograms of the document NLL of members and non-members."""
    plt = figure()
    members = [m["nll"] for m in mia if m.get("set") == "member" and m.get("nll") is not None]
    nonmembers = [m["nll"] for m in mia if m.get("set") == "nonmember" and m.get("nll") is not None]
    values = members + nonmembers
    fig, ax = plt.subplots(figsize=(7, 4))
    if values:
        lo, hi = min(values), max(values)
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 10
        ax.hist(members, bins=bins, alpha=0.6, label=f"member (n={len(members)})", color="tab:red")
        ax.hist(nonmembers, bins=bins, alpha=0.6, label=f"non-member (n={len(nonmembers)})", color="tab:blue")
        ax.legend()
    ax.set_xlabel("mean token NLL of the document")
    ax.set_ylabel("documents")
    title = "MIA: document NLL"
    if auc is not None:
        title += f" - loss-attack AUC = {auc:.3f}, score = {mia_score(auc):.3f}"
    ax.set_title(title)
    return save_figure(fig, path)
