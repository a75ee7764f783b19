"""Training plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

from llm_unlearn.io_utils import atomic_write_bytes

TERM_STYLE = {
    "loss": ("total loss", "black"),
    "npo": ("NPO (forget)", "tab:red"),
    "retain_nll": ("retain NLL", "tab:blue"),
    "divergence": ("retain divergence", "tab:green"),
    "forget_nll": ("forget NLL", "tab:orange"),
    "sugd": ("SUGD", "tab:purple"),
}


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
