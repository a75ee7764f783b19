"""What a run reports while it trains: the progress bar, the log rows, the chunk summaries. Every
loss term appears under its registered name (``methods.all_terms``)."""

from __future__ import annotations

import math

from transformers import TrainerCallback

from llm_unlearn.train import methods
from llm_unlearn.train.process import any_process


def log_row(logs: dict, step: int, chunk: int, epoch: float) -> dict:
    """One row of log_history.jsonl from the Trainer's logs: step, chunk, epoch, loss, every term, lr,
    grad_norm."""
    row = {"step": step, "chunk": chunk, "epoch": round(float(epoch), 4)}
    for k in ("loss", *methods.all_terms(), "learning_rate", "grad_norm"):
        if k in logs:
            row["lr" if k == "learning_rate" else k] = float(logs[k])
    return row


def chunk_summary(c: int, chunk, rows: list[dict], seconds: float) -> dict:
    """One chunk's entry in run.json: its rows, time, the mean of the loss and of every term logged in
    it, and its last loss."""

    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return round(sum(vals) / len(vals), 6) if vals else None

    rows = [r for r in rows if "loss" in r]  # training rows (evaluations are logged beside them)
    summary = {
        "chunk": c + 1,
        "n_forget": sum(1 for k, _ in chunk if k == "forget"),
        "n_retain": sum(1 for k, _ in chunk if k == "retain"),
        "seconds": round(seconds, 2),
        "mean_loss": mean("loss"),
    }
    for term in methods.all_terms():
        value = mean(term)
        if value is not None:
            summary[f"mean_{term}"] = value
    summary["last_loss"] = rows[-1].get("loss") if rows else None
    return summary


class Progress:
    """The run's progress bar (tqdm), over optimizer steps; disabled on other ranks or on request."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="unlearning", unit="step", dynamic_ncols=True)

    def grow(self, steps: int) -> None:
        """``steps`` more to come (calibration.extend)."""
        if self.bar is not None:
            self.bar.total += steps
            self.bar.refresh()

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def postfix(self, row: dict) -> None:
        if self.bar is not None:
            fields = {"chunk": row["chunk"]}
            for k in ("loss", *methods.all_terms()):
                if k in row and not math.isnan(row[k]):
                    fields[k] = f"{row[k]:.3f}"
            self.bar.set_postfix(fields, refresh=False)

    def postfix_eval(self, ev: dict) -> None:
        if self.bar is not None and ev.get("mia_auc") is not None:
            self.bar.set_postfix(
                {"auc": f"{ev['mia_auc']:.2f}", "proxy": f"{ev.get('proxy') or 0:.2f}"}, refresh=False
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LoopCallback(TrainerCallback):
    """Log rows into the run's history, advance the progress bar, stop on a signal, and evaluate when
    the calibration schedule says so."""

    def __init__(self, loop):
        self.loop = loop

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            loop = self.loop
            epoch = logs.get("epoch", state.epoch or 0.0)
            row = log_row(logs, loop.offset + state.global_step, loop.trainer.chunk_index + 1, epoch)
            loop.history.append(row)
            loop.progress.postfix(row)

    def on_step_end(self, args, state, control, **kw):
        loop = self.loop
        loop.progress.update()
        if any_process(loop.stop_flag):  # every process stops after the same step
            control.should_training_stop = True
        elif loop.calib is not None and loop.calib.due(state.global_step, loop.trainer.chunk_index):
            loop.calib_action = loop.evaluate_now(
                loop.offset + state.global_step, loop.trainer.chunk_index, interruptible=True
            )
            if loop.calib_action:
                control.should_training_stop = True
        elif loop.calib is not None and loop.calib.gate_due(state.global_step, loop.trainer.chunk_index):
            with loop.signals_stop_at_once(f"in chunk {loop.trainer.chunk_index + 1}, during a gate refresh"):
                loop.calib.refresh_gate(loop.trainer)
