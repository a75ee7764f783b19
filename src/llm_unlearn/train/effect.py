"""Did the run do anything? At the end of ``train``: the answers' probability under the kept model
against the reference (the starting model), on a seeded sample of forget and retain rows, and one
warning line when the forget side did not move or the retain side went down with it.

The measure of one row is its answer's geometric-mean token probability ``exp(mean_t log p(y_t))``,
in ``(0, 1]``; a side's value is the mean over its ``n`` sampled rows. One row going from certain to
impossible moves that mean by ``1/n``: the measure's resolution, one item's worth, as for exact match
over the same ``n`` items. So:

- **the forget side did not move** when ``|mean_after - mean_before| < 1/n_forget``: the whole run
  changed the forget answers by less than one answer's worth (an unlearning rate of 0, no steps,
  weights of 0 all give exactly 0);
- **the retain side collapsed** when the retain mean fell by at least one item's worth (``1/n_retain``)
  and either to half its start or less (most of what the model knew of the retain answers is gone),
  or by at least as much as the forget mean (the run lowered the answers it should keep as much as
  the ones it should forget: it is not selective).

No threshold depends on the machine: both rules compare a difference of means with ``1/n``. The
passes are forward passes only (no generation): twice ``n`` rows per side.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

SWEEP_HINT = "tune the method's options with `llm-unlearn sweep`"


def judge(
    forget_before: Sequence[float],
    forget_after: Sequence[float],
    retain_before: Sequence[float],
    retain_after: Sequence[float],
) -> dict:
    """The rules of the module docstring on per-row answer probabilities (lists of equal length per
    side). Returns the means, the resolutions and ``verdict``: ``"no_forgetting"``,
    ``"retain_collapsed"`` or ``"ok"`` (``"unmeasured"`` without forget rows)."""
    out: dict = {"n_forget": len(forget_before), "n_retain": len(retain_before)}
    if not forget_before:
        return {**out, "verdict": "unmeasured"}
    fb, fa = _mean(forget_before), _mean(forget_after)
    out.update(forget_before=fb, forget_after=fa, forget_resolution=1.0 / len(forget_before))
    verdict = "ok"
    if abs(fa - fb) < out["forget_resolution"]:
        verdict = "no_forgetting"
    if retain_before:
        rb, ra = _mean(retain_before), _mean(retain_after)
        out.update(retain_before=rb, retain_after=ra, retain_resolution=1.0 / len(retain_before))
        drop_r, drop_f = rb - ra, fb - fa
        if verdict == "ok" and drop_r >= out["retain_resolution"] and (ra <= rb / 2 or drop_r >= drop_f):
            verdict = "retain_collapsed"
    out["verdict"] = verdict
    return out


def warning_line(effect: dict) -> str | None:
    """One line for the log, or None when the run did what it should (or was not measured)."""
    v = effect.get("verdict")
    if v == "no_forgetting":
        return (
            f"the run barely changed the forget answers (mean answer probability {effect['forget_before']:.3f}"
            f" -> {effect['forget_after']:.3f} on {effect['n_forget']} rows, less than one row's worth, "
            f"{effect['forget_resolution']:.3f}): {SWEEP_HINT}"
        )
    if v == "retain_collapsed":
        return (
            f"the retain answers collapsed too (mean answer probability: forget {effect['forget_before']:.3f}"
            f" -> {effect['forget_after']:.3f}, retain {effect['retain_before']:.3f} -> "
            f"{effect['retain_after']:.3f}: half or less, or as much as the forget side): {SWEEP_HINT}"
        )
    return None


def sample_rows(rows: Sequence[dict], k: int, seed: int) -> list[dict]:
    """Up to ``k`` rows with answer tokens, seeded, in their original order."""
    from llm_unlearn.train.step import answer_token_count

    usable = [i for i, r in enumerate(rows) if answer_token_count(r["labels"]) > 0]
    picked = sorted(random.Random(seed).sample(usable, min(k, len(usable))))
    return [rows[i] for i in picked]


@torch.no_grad()
def answer_probabilities(model, reference, rows: Sequence[dict], pad_token_id: int, batch_size: int = 16):
    """(model's, reference's) per-row answer probability ``exp(mean log p)`` of ``rows`` (tokenized
    rows with ``input_ids`` / ``labels``); the reference is a reference source (``train/reference.py``)."""
    from llm_unlearn import losses
    from llm_unlearn.data.tokenize import UnlearnCollator
    from llm_unlearn.train.head import answer_logits
    from llm_unlearn.train.step import answer_positions

    collate = UnlearnCollator(pad_token_id)
    was_training = model.training
    model.eval()
    got: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(0, len(rows), batch_size):
            b = collate(list(rows[i : i + batch_size]))
            dev = next(model.parameters()).device
            ids, mask, labels = (b[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
            pos = answer_positions(labels)
            n = ids.shape[0]
            ref_logits, ref_pos, _ = reference.forward(model, ids, mask, labels)
            for out, logits, p in (
                (got[0], answer_logits(model, None, ids, mask, pos), pos),
                (got[1], ref_logits, ref_pos),
            ):
                mean_logp = -losses.row_mean_nll(losses.token_log_probs(logits, p.targets), p.rows, n)
                out.extend(math.exp(float(v)) for v in mean_logp)
    finally:
        model.train(was_training)
    return got


def run_effect(model, reference, forget_rows, retain_rows, pad_token_id: int, k: int, seed: int) -> dict:
    """:func:`judge` on a seeded sample of up to ``k`` forget and ``k`` retain rows."""
    f = sample_rows(forget_rows, k, seed)
    r = sample_rows(retain_rows, k, seed + 1)
    fa, fb = answer_probabilities(model, reference, f, pad_token_id) if f else ([], [])
    ra, rb = answer_probabilities(model, reference, r, pad_token_id) if r else ([], [])
    return judge(fb, fa, rb, ra)


def measure_run(prep) -> dict:
    """:func:`run_effect` on the kept model of a prepared run (``train/prepare.py``): up to
    ``calibration.eval_items`` rows a side, seeded by ``train.seed``; logs :func:`warning_line` on
    the main process. Every process computes it (a sharded model's forward is collective)."""
    from llm_unlearn.train.process import is_main_process
    from llm_unlearn.train.reference import LiveReference

    reference = LiveReference(None, prep.frozen)  # the hooks of the training's answer-only head are gone
    try:
        effect = run_effect(
            prep.model,
            reference,
            prep.forget_rows,
            prep.retain_rows,
            prep.tokenizer.pad_token_id,
            prep.cfg.calibration.eval_items,
            prep.cfg.train.seed,
        )
    finally:
        if reference.frozen_selector is not None:
            reference.frozen_selector.remove()
    line = warning_line(effect)
    if line and is_main_process():
        log.warning("%s", line)
    return effect


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)
