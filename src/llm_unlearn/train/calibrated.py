"""The calibration of one unlearning run: evaluates on schedule, applies the gate, decides when to end a
chunk or the run, and keeps the best adapter weights. `loop.py` calls it; the rules it applies are the
pure functions of `calibration.py`, the measurements those of `train/monitor.py`.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from typing import Any

import torch

from llm_unlearn.config import UnlearnConfig, eval_interval
from llm_unlearn.train import beta_from_gap, retain_guard
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.bisect import Neighbours, bisect_if_crossed, bisect_selected, keep_upper
from llm_unlearn.train.sharding import load_trainable, trainable_state
from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS

log = logging.getLogger(__name__)


class Calibrator:
    def __init__(self, cfg: UnlearnConfig, monitor, per_chunk_steps: list[int], interval: str | int):
        self.c, self.cfg = cfg.calibration, cfg
        self.npo_beta: dict[str, Any] | None = None  # calibration.npo_beta_from_gap: what was chosen
        self.monitor = monitor
        self.per_chunk_steps = per_chunk_steps
        self.interval = interval
        self.evaluations: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_index: int | None = None
        self.active: dict[int, bool] | None = None
        self.caps: dict[int, float] | None = (
            None  # per-step answer-NLL caps of the rows that are their own unit
        )
        self.stop_reason: str | None = None
        self.chunk_ends: list[dict[str, Any]] = []
        # calibration.backtrack: the state an overshoot goes back to (evaluation index, adapter weights),
        # whether the latest evaluation became it (the loop then saves its optimizer state), what was done
        self.anchor: tuple[int, dict[str, torch.Tensor]] | None = None
        self.anchor_taken = False
        self.backtracks: list[dict[str, Any]] = []
        # calibration.bisect: the latest state above the band (evaluation index, adapter weights), the records
        self.upper: tuple[int, dict[str, torch.Tensor]] | None = None
        self.bisections: list[dict[str, Any]] = []
        self.extensions: list[dict[str, Any]] = []  # calibration.extend: one entry a pass more
        self.near = Neighbours(self)  # calibration.bisect_selected: the states its search starts from
        self.retain_scale = 1.0  # calibration.retain_guard: the retain-side terms' multiplier

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        cfg: UnlearnConfig,
        tokenizer,
        forget,
        retain,
        per_chunk_steps: list[int],
        document_rows: set[int] | None = None,
    ) -> Calibrator | None:
        from llm_unlearn.data.holdout import read_forget_documents, read_holdout
        from llm_unlearn.train.monitor import TrainingMonitor

        c = cfg.calibration
        interval = eval_interval(c.eval_every)
        holdout = read_holdout(c.holdout) if c.holdout else None
        docs = read_forget_documents(c.forget_documents) if c.forget_documents else None
        if interval == "auto":
            interval = "auto" if holdout is not None else "off"
            if holdout is None and c.mode != "off":
                log.warning(
                    "no holdout given (--holdout FILE): the run is not calibrated (no evaluation during "
                    "training, no gate, the last state is kept); see README 'Calibrated unlearning'"
                )
        if interval == "off":
            return None
        if holdout is None and c.mode != "off":
            log.warning(
                "no holdout given (--holdout FILE): evaluations measure knowledge and regurgitation only; "
                "no MIA AUC, no gate, no calibrated stop"
            )
        monitor = TrainingMonitor(
            tokenizer,
            forget,
            retain,
            holdout=holdout,
            forget_documents=docs,
            items=c.eval_items,
            max_new_tokens=c.eval_max_new_tokens,
            batch_size=c.eval_batch_size,
            quantile=c.gate_quantile,
            spread=c.gate_spread,
            gate=c.mode == "gate" and holdout is not None,
            seed=cfg.train.seed,
            document_rows=document_rows,
            mmlu=c.mmlu,
            mmlu_items=c.mmlu_items,
            pull_band=c.pull_band if c.pull > 0 and c.mode == "gate" and holdout is not None else None,
            push_answered=c.push_answered and c.mode == "gate" and holdout is not None,
        )
        return cls(cfg, monitor, per_chunk_steps, interval)

    # ------------------------------------------------------------------ schedule
    def every(self, chunk: int) -> int | None:
        """Steps between evaluations inside chunk `chunk` (None: only at its end)."""
        if self.interval == "chunk":
            return None
        if self.interval == "auto":  # 4 a chunk; 8 in the last, where the run stops and is selected
            per = 8 if chunk == len(self.per_chunk_steps) - 1 else 4
            if self._near_half():  # calibration.dense_near: 4 times as many near the crossing
                per *= 4
            return max(1, math.ceil(self.per_chunk_steps[chunk] / per))
        return int(self.interval)

    def _near_half(self) -> bool:
        """Whether the last evaluation's MIA AUC is within calibration.dense_near of 0.5."""
        near = float(self.c.dense_near)
        if near <= 0 or not self.evaluations:
            return False
        auc = self.evaluations[-1].get("mia_auc")
        return auc is not None and math.isfinite(auc) and abs(auc - 0.5) <= near

    def due(self, step_in_chunk: int, chunk: int) -> bool:
        n = self.every(chunk)
        return n is not None and step_in_chunk % n == 0 and step_in_chunk < self.per_chunk_steps[chunk]

    def gate_due(self, step_in_chunk: int, chunk: int) -> bool:
        """A gate refresh now: ``gate_refresh`` evenly spaced steps between two evaluations (never at an
        evaluation's step, never with the gate off)."""
        k = self.c.gate_refresh
        n = self.every(chunk)
        if self.c.mode != "gate" or not k or n is None or self.active is None:
            return False
        if self.due(step_in_chunk, chunk) or step_in_chunk >= self.per_chunk_steps[chunk]:
            return False
        stride = max(1, n // (k + 1))
        return (step_in_chunk % n) % stride == 0

    def refresh_gate(self, trainer) -> None:
        """Between evaluations: the trainer's gate and caps from fresh unit and holdout losses (no
        evaluation row, no stop, no candidate checkpoint)."""
        got = self.monitor.refresh_gate(trainer.model)
        if got is not None:
            self.active, self.caps = got
            self.apply_to(trainer)
            trainer.last_row_nll = {}  # every unit measured afresh

    def apply_to(self, trainer) -> None:
        """The trainer's per-row state from the calibration's latest decisions: the gate, the per-step
        caps, the pull-back losses (calibration.pull) and the still-answered rows (push_answered)."""
        trainer.forget_active, trainer.forget_caps = self.active, self.caps
        trainer.forget_pull_caps = self.pull_caps
        trainer.answered = set(self.answered or ())
        trainer.retain_scale = self.retain_scale

    @property
    def answered(self) -> set[int] | None:
        """The forget rows calibration.push_answered keeps pushed (None: the rule is off)."""
        return getattr(self.monitor, "answered", None)

    @property
    def pull_caps(self) -> dict[int, float] | None:
        """{document row: the loss above which calibration.pull draws it back} (None: no pull)."""
        return getattr(self.monitor, "pull_caps", None)

    @property
    def floors(self) -> dict[str, float]:
        """The quality floors of the selection and the calibrated stop (calibration.py)."""
        return {"retain_floor": float(self.c.retain_floor), "forget_em_max": float(self.c.forget_em_max)}

    def _key(self, ev):
        return cal.candidate_key(ev, self.evaluations[0], **self.floors)

    # ------------------------------------------------------------------ one evaluation
    def evaluate(
        self,
        model,
        *,
        step: int,
        chunk: int,
        chunk_rows: list[int] | None = None,
        can_continue: bool = True,
    ) -> str | None:
        """Evaluate now; returns "stop" (end the run), "end_chunk" (this chunk's forget rows all look
        unseen), "backtrack" (an overshoot: go back to the anchor, `take_backtrack`; only when
        ``can_continue``, i.e. steps are left to train) or None."""
        first = not self.evaluations
        if first:  # minutes on a large model, with no bar of its own: say what it is doing
            m = self.monitor
            log.info(
                "calibration: evaluating at step %d (greedy answers to %d forget + %d retain items, losses of "
                "%d forget documents against %d holdout documents); every later evaluation costs the same",
                step,
                len(getattr(m, "forget_sample", ())),
                len(getattr(m, "retain_sample", ())),
                len(getattr(m, "documents", ()) or ()),
                len(getattr(getattr(m, "holdout", None), "documents", ()) or ()),
            )
        measured = None
        shared = SWEEP_HOOKS.get("start_measurement")
        if first and step == 0 and shared is not None and _untrained(model):
            measured = shared.get()  # the same start measured by an earlier trial of the sweep
            if measured is None:
                measured = self.monitor.measure(model)
                shared.put(measured)
            measured = copy.deepcopy(measured)
        ev = self.monitor.evaluate(model, step=step, chunk=chunk + 1, measured=measured)
        if first:
            log.info("calibration: one evaluation took %.1fs", ev.get("seconds") or 0.0)
            if step == 0:
                self.npo_beta = beta_from_gap.choose(self.cfg, ev)
        active, caps = ev.pop("_active", None), ev.pop("_caps", None)
        if active is not None:
            self.active, self.caps = active, caps
        if self.c.mode != "off":
            bisect_if_crossed(self, model, ev, step=step, chunk=chunk)
        # the weights of this evaluation (whole tensors: gathered under FSDP), copied once and shared by the
        # best state, the bisection's upper end and the backtrack's anchor (only read: load_trainable copies)
        snapshot = functools.cache(lambda: trainable_state(model))
        self._add(ev, snapshot)
        if self.c.mode == "off":
            return None
        retain_guard.update(self, ev)
        keep_upper(self, ev, snapshot)
        if self._backtrack_due(ev, can_continue, snapshot):
            return "backtrack"
        last = chunk == len(self.per_chunk_steps) - 1
        reason = cal.should_stop(
            ev.get("mia_auc"),
            tolerance=self.c.tolerance,
            last_chunk=last,
            active_fraction=ev.get("active_fraction"),
            meets_floors=cal.meets_floors(ev, self.evaluations[0], **self.floors),
        )
        if reason:
            self.stop_reason = f"step {step}: {reason}"
            return "stop"
        if self.active is not None and chunk_rows and not any(self.active.get(i, True) for i in chunk_rows):
            self.chunk_ends.append(
                {"chunk": chunk + 1, "step": step, "reason": "every forget row of the chunk is gated off"}
            )
            return "end_chunk"
        return None

    def _add(self, ev: dict[str, Any], state, *, track: bool = True) -> None:
        """Append an evaluation; when it is the best candidate so far, keep its weights (``state()``).
        ``track``: it may be a neighbour of the best candidate (calibration.bisect_selected)."""
        self.evaluations.append(ev)
        key = self._key(ev)
        became = key is not None and (
            self.best_index is None or key >= self._key(self.evaluations[self.best_index])
        )
        if became:
            self.best_index = len(self.evaluations) - 1
            self.best_state = state()
        if track and int(self.c.bisect_selected) > 0 and self.c.mode != "off":
            self.near.track(ev, state, became)

    def kept_states(self) -> dict[int, dict[str, torch.Tensor]]:
        """{evaluation index: adapter weights} calibration.bisect_selected holds (saved with the checkpoint)."""
        return self.near.kept_states()

    def _backtrack_due(self, ev, can_continue: bool, state) -> bool:
        """calibration.backtrack: keep the latest anchor (`calibration.is_anchor`), or say that this
        overshoot goes back to it."""
        n = int(self.c.backtrack)
        if n <= 0:
            return False
        tol = float(self.c.tolerance)
        if cal.is_anchor(ev, self.evaluations[0], tolerance=tol, **self.floors):
            self.anchor = (len(self.evaluations) - 1, state())
            self.anchor_taken = True
            return False
        return can_continue and cal.should_backtrack(
            ev.get("mia_auc"), tolerance=tol, left=n - len(self.backtracks), anchored=self.anchor is not None
        )

    def take_backtrack(self, model, *, step: int, factor: float) -> dict[str, Any]:
        """Load the anchor's adapter weights into ``model`` and record the backtrack (the loop restores
        the optimizer state and scales the learning rate); returns the record."""
        idx, state = self.anchor
        load_trainable(model, state)
        to = self.evaluations[idx]
        entry = {
            "step": step,
            "mia_auc": self.evaluations[-1].get("mia_auc"),
            "to_evaluation": idx + 1,
            "to_step": to.get("step"),
            "to_mia_auc": to.get("mia_auc"),
            "lr_factor": float(factor) ** (len(self.backtracks) + 1),
        }
        self.backtracks.append(entry)
        return entry

    def lr_factor(self) -> float:
        """The learning rate's factor from the backtracks so far (1 without any)."""
        return float(self.c.backtrack_factor) ** len(self.backtracks)

    # ------------------------------------------------------------------ end of run
    def finish(self, model) -> dict[str, Any]:
        """Load the selected weights into `model`; returns run.json's `calibration` entry."""
        if self.c.select == "best" and self.c.mode != "off" and int(self.c.bisect_selected) > 0:
            bisect_selected(self, model)
        if self.c.select == "best":
            idx, reason = cal.select_best(self.evaluations, **self.floors)
        else:
            idx, reason = None, "calibration.select = last: the last state is kept"
        chosen = "last"
        if idx is not None and idx == self.best_index and self.best_state is not None:
            load_trainable(model, self.best_state)
            chosen = f"evaluation {idx + 1} (step {self.evaluations[idx]['step']})"
        return {
            "mode": self.c.mode,
            "tolerance": self.c.tolerance,
            "gate_quantile": self.c.gate_quantile,
            "gate_spread": self.c.gate_spread,
            **self.floors,
            "unit_quantiles": _unit_q_rows(getattr(self.monitor, "unit_q", None)),
            "evaluations": self.evaluations,
            "selected": chosen,
            "selected_index": idx,
            "selection_reason": reason,
            "stop_reason": self.stop_reason,
            "chunks_ended_early": self.chunk_ends,
            "backtracks": self.backtracks,
            "bisections": self.bisections,
            "extensions": self.extensions,
            "npo_beta": self.npo_beta,
        }

    def state(self) -> dict[str, Any]:
        return {
            "evaluations": self.evaluations,
            "best_index": self.best_index,
            "active": self.active,
            "caps": self.caps,
            "stop_reason": self.stop_reason,
            "chunk_ends": self.chunk_ends,
            "backtracks": self.backtracks,
            "bisections": self.bisections,
            "extensions": self.extensions,
            "npo_beta": self.npo_beta,
            "unit_quantiles": _unit_q_rows(getattr(self.monitor, "unit_q", None)),
            **self.near.state(),
            "pull_caps": self.pull_caps,
            "answered": sorted(self.answered) if self.answered is not None else None,
            "retain_scale": self.retain_scale,
        }

    def restore(
        self,
        st: dict[str, Any],
        best_state: dict[str, torch.Tensor] | None = None,
        states: dict[int, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """The calibration as ``state()`` left it; ``best_state`` and ``states`` (``kept_states()``) are the
        weights saved beside it."""
        self.evaluations = list(st.get("evaluations", []))
        self.near.restore(st, states or {})
        self.best_index = st.get("best_index")
        self.active = {int(k): v for k, v in st["active"].items()} if st.get("active") else None
        self.caps = {int(k): v for k, v in st["caps"].items()} if st.get("caps") else None
        self.stop_reason = st.get("stop_reason")
        self.chunk_ends = list(st.get("chunk_ends", []))
        self.backtracks = list(
            st.get("backtracks", [])
        )  # the anchor itself is not saved: none until the next
        self.extensions = list(st.get("extensions", []))
        self.bisections = list(st.get("bisections", []))  # the upper end is not saved: none until the next
        self.best_state = best_state
        self.npo_beta, self.retain_scale = st.get("npo_beta"), float(st.get("retain_scale", 1.0))
        if self.npo_beta is not None:  # the beta the run chose at its start (beta_from_gap)
            self.cfg.objective.npo_beta = float(self.npo_beta["npo_beta"])
        if st.get("unit_quantiles") is not None and hasattr(self.monitor, "unit_q"):
            self.monitor.unit_q = {(k, int(j)): float(q) for k, j, q in st["unit_quantiles"]}
        if st.get("answered") is not None and hasattr(self.monitor, "answered"):
            self.monitor.answered = {int(i) for i in st["answered"]}
        if st.get("pull_caps") is not None and hasattr(self.monitor, "pull_caps"):
            self.monitor.pull_caps = {int(k): float(v) for k, v in st["pull_caps"].items()}


def _untrained(model) -> bool:
    """Whether ``model`` computes exactly its target: every LoRA B matrix is still zero (PEFT's
    initialisation: the adapter adds exactly 0); a model with trainable weights but no LoRA never counts."""
    bs = [p for n, p in model.named_parameters() if "lora_B" in n]
    return bool(bs) and all(not bool(p.detach().any()) for p in bs)


def _unit_q_rows(unit_q) -> list[list] | None:
    """The spread targets as JSON rows ``[kind, unit, quantile]`` (None before the first gate)."""
    return None if unit_q is None else [[k, j, q] for (k, j), q in sorted(unit_q.items())]
