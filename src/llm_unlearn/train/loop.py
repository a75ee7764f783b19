"""An unlearning run: prepare -> build the trainer -> train the chunks -> write the outputs.

One ``UnlearnTrainer`` is trained chunk after chunk (``.train()`` per chunk, the chunk's rows as its
dataset, in the plan's order). After every chunk DIR/checkpoint/ is replaced atomically; the same
command on the same output directory continues after the last complete chunk. Each chunk starts from a
seed derived from (seed, chunk index), so a resumed run computes what an uninterrupted one does.
With a holdout, the calibration driver (``train/calibrated.py``) evaluates on its schedule, gates
forget rows, may end a chunk or the run, and keeps the best evaluation's weights.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from llm_unlearn.config import UnlearnConfig
from llm_unlearn.errors import TrainingInterrupted, UserError
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl, sha256_file
from llm_unlearn.plots import plot_run
from llm_unlearn.train import checkpoint as ckpt
from llm_unlearn.train.backtrack import after_evaluation
from llm_unlearn.train.effect import measure_run
from llm_unlearn.train.extend import extend_last_chunk
from llm_unlearn.train.prepare import Prepared, chunk_epochs, prepare
from llm_unlearn.train.process import (
    any_process,
    frozen_heap,
    install_signal_handlers,
    is_main_process,
    package_versions,
    restore_signal_handlers,
    signals_stop_at_once,
)
from llm_unlearn.train.progress import LoopCallback, Progress, chunk_summary
from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS

log = logging.getLogger(__name__)


class _RowsDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def run_unlearning(cfg: UnlearnConfig, *, model=None, tokenizer=None) -> dict:
    """Run (or resume) an unlearning job described by `cfg`; returns the run summary (run.json).

    The output directory follows `outputs.prepare_output_dir` (kind "train"; inputs: model,
    tokenizer, data) and is locked for the whole run (`outputs.DirectoryLock`); temporary files of
    killed writes are removed first. A signal (SIGTERM / Ctrl-C) at any point ends the run with
    `TrainingInterrupted` (during training: after the current step and the last chunk's checkpoint)."""
    from llm_unlearn.config import validate
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    validate(cfg)  # every option, before anything is loaded
    if not cfg.train.output_dir:
        raise UserError("no output directory given (use --output-dir DIR)")
    out = Path(cfg.train.output_dir)
    d, m, c = cfg.data, cfg.model, cfg.calibration
    alternatives = cfg.objective.alternatives if cfg.objective.alternatives != "retain" else None
    inputs = [m.name_or_path, m.tokenizer, d.data, d.forget, d.retain, c.holdout, c.forget_documents]
    inputs.append(alternatives)
    prepare_output_dir(
        out, "train", inputs, overwrite=cfg.train.overwrite, own_names=ckpt.TRAIN_OWN_NAMES, create=False
    )
    stop_flag = {"stop": False, "raise": True}  # before and after training a signal ends the run at once
    old_handlers = install_signal_handlers(stop_flag)
    existed = out.exists()
    lock = None
    try:
        if is_main_process():
            out.parent.mkdir(parents=True, exist_ok=True)
            lock = DirectoryLock(out).acquire()
            remove_stale_tmp(out)
        t0 = time.time()
        prep = prepare(cfg, model=model, tokenizer=tokenizer)
        if prep.finished:
            return prep.saved
        run = ChunkLoop(prep, stop_flag)
        with frozen_heap():  # the trainer's gc.collect() once a chunk skips what is loaded by now
            run.train_chunks()
        return run.write_outputs(t0)
    finally:
        restore_signal_handlers(old_handlers)
        if lock is not None:
            lock.release()
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # nothing was written: leave no directory behind


class ChunkLoop:
    """The trainer of one run and its chunk loop: checkpoints, calibration, progress, signals."""

    def __init__(self, prep: Prepared, stop_flag: dict):
        self.prep, self.stop_flag = prep, stop_flag
        saved = prep.saved
        self.history: list[dict] = list(saved.get("log_history", [])) if saved else []
        self.chunk_summaries: list[dict] = list(saved.get("chunks", [])) if saved else []
        self.calib_action: str | None = None
        self.summary_extra: dict = {}  # what the next chunk summary also says (train/extend.py)
        prep.out.mkdir(parents=True, exist_ok=True)  # only now: bad data, options or model leave no directory
        if is_main_process():
            from llm_unlearn.outputs import write_marker

            write_marker(prep.out, "train", ckpt.TRAIN_OWN_NAMES)
        self.trainer = self._build_trainer()
        if saved:  # e.g. PDU's multiplier, RMU's control vector
            self.trainer.objective_state = dict(saved.get("objective_state") or {})
        done = sum(prep.per_chunk_steps[: prep.start_chunk])
        self.offset = saved.get("steps_done", done) if saved else 0
        on = prep.cfg.train.progress and is_main_process()
        self.progress = Progress(sum(prep.per_chunk_steps), done, enabled=on)
        self.calib = self._build_calibrator()
        self.run_opt, self.run_sched = self._run_optimizer()

    # ------------------------------------------------------------------ building
    def _build_trainer(self):
        from transformers import PrinterCallback

        from llm_unlearn.data.tokenize import AlternativesCollator, UnlearnCollator
        from llm_unlearn.train import anchor
        from llm_unlearn.train.reference_source import for_run
        from llm_unlearn.train.sharding import shard_for_cpu
        from llm_unlearn.train.trainer import UnlearnTrainer

        p = self.prep
        trainer = UnlearnTrainer(
            model=p.model,
            args=p.args,
            train_dataset=_RowsDataset([]),
            data_collator=AlternativesCollator(
                UnlearnCollator(p.tokenizer.pad_token_id), p.tokenizer.pad_token_id
            ),
            processing_class=p.tokenizer,
            objective=p.cfg.objective,
            sam_rho=p.cfg.train.sam_rho,
        )
        # the reference's outputs: computed once per run when the cache is chosen (reused on resume)
        trainer.reference = for_run(
            p.cfg,
            p.model,
            p.forget_rows + p.retain_rows,
            SWEEP_HOOKS["reference_dir"] or p.out,
            selector=trainer.selector,
            pad_token_id=p.tokenizer.pad_token_id,
            data_files=p.data_files,
            frozen=p.frozen,
        )
        shard_for_cpu(trainer)  # FSDP requested on CPU processes: FSDP2 now, on the whole model's reference
        trainer.anchor = anchor.for_run(p, trainer)  # calibration.anchor_documents
        trainer.add_callback(LoopCallback(self))
        trainer.remove_callback(PrinterCallback)  # our progress bar and log_history.jsonl replace its prints
        return trainer

    def _build_calibrator(self):
        from llm_unlearn.train.calibrated import Calibrator

        p = self.prep
        calib = Calibrator.build(
            p.cfg, p.tokenizer, p.forget_recs, p.retain_recs, p.per_chunk_steps, document_rows=p.document_rows
        )
        if calib is not None and p.saved is not None and p.saved.get("calibration"):
            calib.restore(p.saved["calibration"], **ckpt.load_calibration_states(p.out / ckpt.CHECKPOINT))
            p.args.learning_rate *= calib.lr_factor()  # calibration.backtrack's (chunk optimizers)
        return calib

    def _run_optimizer(self):
        """Optimizer scope 'run': one optimizer and one schedule over all chunks (restored on resume)."""
        p = self.prep
        if p.cfg.schedule.optimizer_scope != "run":
            return None, None
        from transformers import get_scheduler

        total = sum(p.per_chunk_steps)
        opt = self.trainer.create_optimizer()
        sched = get_scheduler(
            p.args.lr_scheduler_type,
            optimizer=opt,
            num_warmup_steps=p.args.get_warmup_steps(total),
            num_training_steps=total,
        )
        saved_opt = p.out / ckpt.CHECKPOINT / "optimizer.pt"
        if p.saved is not None and saved_opt.is_file():
            device = next(p.model.parameters()).device
            st = torch.load(saved_opt, map_location=device, weights_only=True)
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
        return opt, sched

    # ------------------------------------------------------------------ training
    def evaluate_now(self, step: int, c: int, *, interruptible: bool = False) -> str | None:
        """One calibration evaluation: gate and caps for the trainer, a history row, the progress bar.
        ``interruptible`` (inside a chunk, whose stop would drop the result anyway): a signal ends it at
        once; the one at a chunk's end belongs to that chunk's checkpoint and runs to its end."""
        plan = self.prep.plan
        rows = [i for kind, i in plan[c] if kind == "forget"]
        where = f"in chunk {c + 1}/{len(plan)}, during the evaluation at step {step}"
        n0 = len(self.calib.evaluations)
        with self.signals_stop_at_once(where) if interruptible else contextlib.nullcontext():
            more = interruptible or c + 1 < len(plan)  # steps are left to train after it
            action = self.calib.evaluate(
                self.trainer.model, step=step, chunk=c, chunk_rows=rows, can_continue=more
            )
        self.calib.apply_to(self.trainer)
        self.trainer.last_row_nll = {}  # the evaluation measured every unit afresh
        for ev in self.calib.evaluations[n0:]:  # the bisected states (calibration.bisect), then this one
            extra = {f"eval_{k}": v for k, v in ev.items() if k not in ("step", "chunk")}
            self.history.append({"step": step, "chunk": c + 1, **extra})
        self.progress.postfix_eval(ev)
        SWEEP_HOOKS["on_evaluation"](ev)  # a sweep reports it to its trial (which may be pruned here)
        return after_evaluation(self, action, step)  # calibration.backtrack: the optimizer's side

    def signals_stop_at_once(self, where: str):
        """`process.signals_stop_at_once` with the message of this run: where, and what is saved."""
        c, out = self.trainer.chunk_index, self.prep.out
        kept = f"chunks 1..{c} are saved in {out}" if c else f"no chunk was complete yet ({out})"
        return signals_stop_at_once(
            self.stop_flag, f"interrupted {where}; {kept}. Run the same command again to resume."
        )

    def train_chunks(self) -> None:
        p, calib = self.prep, self.calib
        if calib is not None:
            calib.apply_to(self.trainer)
            self.trainer.pull_weight = float(p.cfg.calibration.pull)
            self.trainer.unit_row = calib.monitor.record_to_document_row()
            if p.start_chunk == 0 and not calib.evaluations:
                self.evaluate_now(0, 0)  # the starting point (and the first gate)
        self.stop_flag["raise"] = False  # in training: finish the step, save the last whole chunk, stop
        try:
            for c in range(p.start_chunk, len(p.plan)):
                if calib is not None and calib.stop_reason:
                    break
                if self._train_chunk(c) == "stop":
                    log.info("calibration: %s", calib.stop_reason)
                    break
                if any_process(self.stop_flag) and c + 1 < len(p.plan):
                    raise TrainingInterrupted(
                        f"interrupted after chunk {c + 1}/{len(p.plan)} (saved in {p.out}). "
                        "Run the same command again to resume."
                    )
            else:
                extend_last_chunk(self)  # calibration.extend: the last chunk once more while it helps
        finally:
            self.progress.close()
            if self.trainer.selector is not None:
                self.trainer.selector.remove()

    def _train_chunk(self, c: int) -> str | None:
        """Train chunk c, evaluate at its end (calibrated runs), checkpoint; the calibration's action."""
        from transformers import set_seed

        p, trainer = self.prep, self.trainer
        chunk_t0 = time.time()
        rows = [p.forget_rows[i] if kind == "forget" else p.retain_rows[i] for kind, i in p.plan[c]]
        trainer.train_dataset = _RowsDataset(rows)
        trainer.chunk_index = c
        set_seed(p.cfg.train.seed + c)
        trainer.optimizer, trainer.lr_scheduler = self.run_opt, self.run_sched  # None: fresh per chunk
        n_hist = len(self.history)
        self.calib_action = None
        trainer.args.num_train_epochs = chunk_epochs(p.cfg, c, len(p.plan))  # as per_chunk_steps counts
        trainer.train()
        if (
            self.stop_flag["stop"]
            and trainer.state.global_step < p.per_chunk_steps[c]
            and not self.calib_action
        ):
            del self.history[n_hist:]
            raise TrainingInterrupted(
                f"interrupted in chunk {c + 1}/{len(p.plan)}; chunks 1..{c} are saved in {p.out}. "
                "Run the same command again to resume."
            )
        self.offset += trainer.state.global_step
        if self.calib is not None and not self.calib_action:
            self.calib_action = self.evaluate_now(self.offset, c)  # the end of every chunk
        summary = chunk_summary(c, p.plan[c], self.history[n_hist:], time.time() - chunk_t0)
        self.chunk_summaries.append({**summary, **self.summary_extra})
        self._checkpoint(c)
        return self.calib_action

    def _checkpoint(self, c: int) -> None:
        p = self.prep
        if SWEEP_HOOKS["ephemeral"]:  # a sweep's trial: its directory is removed, never resumed
            return
        full_state = ckpt.sharded_state_dict(self.trainer)  # a collective under ZeRO-3 / FSDP, else None
        if is_main_process():
            ckpt.save_checkpoint(
                p.out,
                p.model,
                p.cfg,
                c + 1,
                self.history,
                self.chunk_summaries,
                self.run_opt,
                self.run_sched,
                state_dict=full_state,
                extra={"steps_done": self.offset, "objective_state": self.trainer.objective_state},
                calib=self.calib,
                data_sha=p.data_sha,
            )
            atomic_write_jsonl(p.out / "log_history.jsonl", self.history)

    # ------------------------------------------------------------------ outputs
    def write_outputs(self, t0: float) -> dict:
        """The final outputs: adapter, merged model, plots, log_history.jsonl, run.json (last: from then
        on the run is finished); the checkpoint and the reference cache are removed."""
        p = self.prep
        # a signal now stops at once (every write is atomic; the checkpoint holding all chunks stays until
        # run.json is written, so the same command finishes the job)
        self.stop_flag["raise"] = True
        if any_process(self.stop_flag):  # a collective: every process decides the same
            raise TrainingInterrupted(
                f"interrupted before the final outputs; every chunk is saved in {p.out}. "
                "Run the same command again to finish."
            )
        calibration = self.calib.finish(p.model) if self.calib is not None else None
        if calibration is not None:
            log.info("calibration: kept %s (%s)", calibration["selected"], calibration["selection_reason"])
        summary = self._summary(calibration, t0)
        if SWEEP_HOOKS["ephemeral"]:  # a sweep's trial: scored from this summary, its directory removed
            summary["effect"] = None
            summary["model"] = p.model
            return summary
        summary["effect"] = measure_run(p)  # one warning line when the run did nothing
        full_state = ckpt.sharded_state_dict(self.trainer)
        if is_main_process():
            if p.cfg.lora.enabled:
                ckpt.save_adapter(p.model, p.out / "adapter", full_state, base=p.cfg.model.name_or_path)
            self._merge(full_state)
            if p.cfg.train.plots:
                plot_run(self.history, self.chunk_summaries, calibration, p.out)
            atomic_write_jsonl(p.out / "log_history.jsonl", self.history)
            atomic_write_json(p.out / "run.json", summary)  # from here on the run is finished
            ckpt.remove_run_state(p.out)
        summary["model"] = p.model
        return summary

    def _summary(self, calibration, t0: float) -> dict:
        from llm_unlearn.data.schedule import summarize_plan
        from llm_unlearn.train.sharding import describe as describe_sharding

        p = self.prep
        param = next(p.model.parameters())
        before = p.saved.get("wall_seconds_before", 0.0) if p.saved else 0.0
        return {
            "config": p.cfg.to_dict(),
            "versions": package_versions(),
            "data_files": {str(f): sha256_file(f) for f in p.data_files},
            "data_sha256": p.data_sha,
            "n_forget": len(p.forget_rows),
            "n_forget_documents": len(p.document_rows),
            "n_retain": len(p.retain_rows),
            "chunk_count": len(p.plan),
            "plan": summarize_plan(p.plan),
            "chunks": self.chunk_summaries,
            "total_steps": sum(p.per_chunk_steps),
            "steps_done": self.offset,
            "calibration": calibration,
            "lora_modules": getattr(p.model, "targeted_module_names_short", None),
            "device": str(param.device),
            "sharding": describe_sharding(self.trainer),
            "dtype": str(param.dtype).replace("torch.", ""),
            "wall_seconds": round(time.time() - t0, 2) + before,
        }

    def _merge(self, full_state) -> None:
        from llm_unlearn.modeling import merge_and_save

        p = self.prep
        if not p.cfg.train.merge and p.cfg.lora.enabled:  # full fine-tuning: DIR/model is the only output
            return
        if full_state is not None:
            log.warning(
                "the weights are sharded (ZeRO-3 / FSDP): no merged model; run `llm-unlearn merge --model "
                "%s --adapter %s --output-dir %s` on one device",
                p.cfg.model.name_or_path,
                p.out / "adapter",
                p.out / "model",
            )
            return
        merge_and_save(p.model, p.tokenizer, p.out / "model")
