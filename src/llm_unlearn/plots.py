"""Training plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from llm_unlearn.io_utils import atomic_write_bytes

log = logging.getLogger(__name__)

TERM_STYLE = {
    "loss": ("total loss", "black"),
    "npo": ("NPO (forget)", "tab:red"),
    "retain_nll": ("retain NLL", "tab:blue"),
    "divergence": ("retain divergence", "tab:green"),
    "forget_nll": ("forget NLL", "tab:orange"),
    "sugd": ("SUGD", "tab:purple"),
    "forget_pull": ("forget documents drawn back (pull)", "tab:olive"),
    "forget_active": ("forget rows pushed (gate)", "tab:brown"),
}

EVAL_PANELS = (
    ("MIA AUC (0.5 = unseen)", (("mia_auc", "forget vs holdout", "tab:red"),), 0.5),
    ("knowledge (EM)", (("forget_em", "forget", "tab:red"), ("retain_em", "retain", "tab:blue")), None),
    (
        "regurgitation (ROUGE-L)",
        (("forget_rougeL", "forget", "tab:red"), ("retain_rougeL", "retain", "tab:blue")),
        None,
    ),
    ("answer NLL", (("forget_nll", "forget", "tab:red"), ("retain_nll", "retain", "tab:blue")), None),
    (
        "scores",
        (
            ("task_aggregate", "task aggregate", "black"),
            ("proxy", "proxy of final score", "tab:green"),
            ("active_fraction", "forget rows pushed", "tab:brown"),
        ),
        None,
    ),
)


def plot_losses(history: list[dict], path: str | Path) -> Path:
    """Each logged loss term over global steps, one panel per term, chunk boundaries as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in TERM_STYLE if any(k in r for r in history)]
    n = max(len(present), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n + 0.6), sharex=True, squeeze=False)
    boundaries = [r["step"] for prev, r in zip(history, history[1:]) if r["chunk"] != prev["chunk"]]
    for ax, key in zip(axes[:, 0], present):
        label, color = TERM_STYLE[key]
        pts = [(r["step"], r[key]) for r in history if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for b in boundaries:
            ax.axvline(b - 0.5, color="grey", ls=":", lw=0.8)
    axes[-1, 0].set_xlabel("optimizer step (dotted lines: chunk boundaries)")
    fig.suptitle("llm-unlearn: loss terms")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def evaluation_x(ev: dict) -> float:
    """Where an evaluation sits on the step axis: its step; a bisected state (calibration.bisect) at its
    place on the line between the two steps it was interpolated from."""
    b = ev.get("bisect")
    if not b:
        return ev["step"]
    return b["from_step"] + b["t"] * (b["to_step"] - b["from_step"])


def plot_evaluations(
    evaluations: list[dict], chunks: list[dict], path: str | Path, selected_step: float | None = None
) -> Path:
    """Each evaluation metric over steps (one panel per metric family), chunk boundaries dotted, the
    selected checkpoint as a solid green line, 0.5 marked on the MIA AUC panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in EVAL_PANELS if any(e.get(k) is not None for e in evaluations for k, _, _ in p[1])]
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n + 0.6), sharex=True, squeeze=False)
    own = [e for e in evaluations if "bisect" not in e]  # the training path; bisected states as crosses
    boundaries = [e["step"] for prev, e in zip(own, own[1:]) if e["chunk"] != prev["chunk"]]
    for ax, (title, series, ref) in zip(axes[:, 0], panels):
        for key, label, color in series:
            pts = [(e["step"], e[key]) for e in own if e.get(key) is not None]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    ms=3,
                    color=color,
                    lw=1.2,
                    label=label,
                )
            cross = [
                (evaluation_x(e), e[key]) for e in evaluations if "bisect" in e and e.get(key) is not None
            ]
            if cross:
                ax.scatter([p[0] for p in cross], [p[1] for p in cross], marker="x", s=18, color=color)
        if ref is not None:
            ax.axhline(ref, color="grey", lw=0.8)
        for b in boundaries:
            ax.axvline(b, color="grey", ls=":", lw=0.8)
        if selected_step is not None:
            ax.axvline(selected_step, color="tab:green", lw=1.0)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel(
        "optimizer step (dotted: chunk boundaries; green: selected checkpoint; x: bisected states)"
    )
    fig.suptitle("llm-unlearn: evaluation during training")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_run(history: list[dict], chunk_summaries: list[dict], calibration: dict | None, out: Path) -> None:
    """A training run's plots: ``out/plots/losses.png``, and ``evaluation.png`` when it was calibrated
    (the kept evaluation marked). A plot that fails is a warning: it must never lose a finished run."""
    try:
        plot_losses(history, out / "plots" / "losses.png")
        if calibration and calibration["evaluations"]:
            idx = calibration["selected_index"]
            plot_evaluations(
                calibration["evaluations"],
                chunk_summaries,
                out / "plots" / "evaluation.png",
                selected_step=evaluation_x(calibration["evaluations"][idx]) if idx is not None else None,
            )
    except Exception as exc:  # a plot must never lose a finished run
        log.warning("could not draw the plots: %s", exc)
