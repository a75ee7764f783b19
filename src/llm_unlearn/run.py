"""An unlearning run: load -> LoRA -> one Trainer, trained chunk after chunk -> checkpoint after
each chunk -> adapter, merged model, run.json, log_history.jsonl, plots.

Resume: after every chunk DIR/checkpoint/ (adapter + state.json, and the optimizer and scheduler
when the optimizer scope is `run`) is replaced atomically. The same command on the same output
directory continues after the last complete chunk. Each chunk starts from a seed derived from
(seed, chunk index), so a resumed run computes what an uninterrupted one does.

Reference cache (train.reference_cache != off): the reference outputs of every row are computed once,
after LoRA is applied, into DIR/reference_cache/ (see reference_cache.py); a resume reuses it when its
fingerprint matches. A finished run deletes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from llm_unlearn import __version__
from llm_unlearn.calibrated import Calibrator
from llm_unlearn.config import UnlearnConfig, config_from_dict
from llm_unlearn.errors import ConfigError, TrainingInterrupted, UserError
from llm_unlearn.io_utils import atomic_dir, atomic_write_json, atomic_write_jsonl, recover_dir, sha256_file

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
STATE = "state.json"
BEST_STATE = "best_state.safetensors"  # the calibration's best weights so far (trainable parameters)
OUTPUT_NAMES = (
    "adapter",
    "model",
    "run.json",
    "log_history.jsonl",
    "plots",
    CHECKPOINT,
    "resolved_config.yaml",
)


# TrainingInterrupted lives in errors.py (the CLI catches it without importing torch); re-exported here


# ----------------------------------------------------------------------------- helpers
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _any_process(flag: dict) -> bool:
    """flag["stop"] or'ed over all processes (a signal may reach them during different steps). A
    collective when distributed: every process calls it at the same points."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        on_gpu = "nccl" in str(dist.get_backend()) and torch.cuda.is_available()
        t = torch.tensor(
            [float(flag["stop"])],
            device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu"),
        )
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        agreed = bool(t.item() > 0)
        # a signal handled while the collective ran set flag["stop"] after t was read: keep it pending
        # for the next call (never clear it), but decide by what every process agreed on
        flag["stop"] = flag["stop"] or agreed
        return agreed
    return flag["stop"]


def package_versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    return {
        "llm_unlearn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def check_output_dir(out: Path, cfg: UnlearnConfig, data_sha: dict[str, str] | None = None) -> dict | None:
    """Return the saved state to resume from, None for a fresh run. A run saved with another
    configuration or other data (fingerprint: `cfg.fingerprint()` + the data files' sha256) is refused
    with one line saying what changed, unless `overwrite` (then our outputs in it are removed, no
    other file). A finished run with the same fingerprint returns {"finished": True, ...}."""
    state_path = out / CHECKPOINT / STATE
    run_json = out / "run.json"
    recover_dir(out / CHECKPOINT, clean=is_main_process())  # a kill during a checkpoint swap
    saved = None
    try:
        if state_path.is_file():
            saved = json.loads(state_path.read_text())
        elif run_json.is_file():
            saved = json.loads(run_json.read_text())
    except (OSError, ValueError) as exc:
        if not cfg.train.overwrite:
            raise UserError(
                f"{out} holds an unreadable run state ({exc}); pass --overwrite to start over"
            ) from None
        saved = None
    if saved is None:
        if (
            out.exists()
            and any(p for p in out.iterdir() if p.name in OUTPUT_NAMES)
            and not cfg.train.overwrite
        ):
            raise UserError(f"{out} holds outputs of an unknown run; use --overwrite or another --output-dir")
        if cfg.train.overwrite:
            _remove_outputs(out)
        return None
    changes = fingerprint_changes(saved, cfg, data_sha)
    if cfg.train.overwrite or changes:
        if not cfg.train.overwrite:
            what = "finished run" if not state_path.is_file() else "run"
            raise UserError(
                f"{out} holds a {what} with other inputs ({'; '.join(changes)}); rerun with the same options and "
                "data to resume, or pass --overwrite to start over (this run's outputs there are replaced)"
            )
        _remove_outputs(out)
        return None
    if not state_path.is_file():  # finished run with the same config and data
        return {"finished": True, **saved}
    return saved


def _remove_outputs(out: Path) -> None:
    """Remove this tool's train outputs from `out` (never any other file)."""
    if not is_main_process() or not out.is_dir():
        return
    for name in OUTPUT_NAMES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def data_fingerprint(files, data_dir: str | None) -> dict[str, str]:
    """{file name (relative to the data directory when inside it): sha256} of the data files read."""
    base = Path(data_dir).resolve() if data_dir else None
    out = {}
    for f in files:
        f = Path(f).resolve()
        name = str(f.relative_to(base)) if base is not None and base in f.parents else f.name
        out[name] = sha256_file(f)
    return out


def fingerprint_changes(saved: dict, cfg: UnlearnConfig, data_sha: dict[str, str] | None) -> list[str]:
    """What differs between a saved run (checkpoint state or run.json) and this one: config options
    (`section.key: old -> new`) and data files (`data file X changed` / `added` / `removed`)."""
    changes = []
    try:
        old = config_from_dict(saved.get("config", {})).fingerprint()
    except (UserError, AttributeError, TypeError):
        return ["an unreadable saved configuration"]
    new = cfg.fingerprint()
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    changes.append(f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
        elif a != b:
            changes.append(f"{section}: {a!r} -> {b!r}")
    old_data = saved.get("data_sha256")
    if data_sha is not None and old_data is not None and old_data != data_sha:
        for name in sorted(set(old_data) | set(data_sha)):
            if name not in data_sha:
                changes.append(f"data file {name} removed")
            elif name not in old_data:
                changes.append(f"data file {name} added")
            elif old_data[name] != data_sha[name]:
                changes.append(f"data file {name} changed")
    return changes


def build_training_args(cfg: UnlearnConfig, out: Path, dtype: torch.dtype):
    from transformers import TrainingArguments

    t = cfg.train
    ws = world_size()
    if t.batch_size % ws:
        raise ConfigError(
            f"train.batch_size {t.batch_size} must be divisible by the number of processes {ws}"
        )
    extra = dict(cfg.training_args)
    on_gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(out / ".trainer"),
        per_device_train_batch_size=t.batch_size // ws,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=cfg.schedule.epochs,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the steps in transformers 5
        weight_decay=0.0 if t.optimizer == "adam" else t.weight_decay,
        optim="adamw_torch",
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=t.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and dtype == torch.bfloat16,
        dataloader_drop_last=False,
    )
    kwargs.update(extra)
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training_args: {exc}") from None


class _RowsDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


# ----------------------------------------------------------------------------- the run
TRAIN_OWN_NAMES = (*OUTPUT_NAMES, ".trainer", "reference_cache")


def run_unlearning(cfg: UnlearnConfig, *, model=None, tokenizer=None) -> dict:
    """Run (or resume) an unlearning job described by `cfg`; returns the run summary (run.json).

    The output directory follows `io_utils.prepare_output_dir` (kind "train"; inputs: model,
    tokenizer, data) and is locked for the whole run (`io_utils.DirectoryLock`); temporary files of
    killed writes are removed first. A signal (SIGTERM / Ctrl-C) at any point ends the run with
    `TrainingInterrupted` (during training: after the current step and the last chunk's checkpoint)."""
    from llm_unlearn.config import validate
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    validate(cfg)  # every option, before anything is loaded
    if not cfg.train.output_dir:
        raise UserError("no output directory given (use --output-dir DIR)")
    out = Path(cfg.train.output_dir)
    d, m = cfg.data, cfg.model
    inputs = [
        m.name_or_path,
        m.tokenizer,
        d.data,
        d.forget,
        d.retain,
        getattr(getattr(cfg, "calibration", None), "holdout", None),
        getattr(getattr(cfg, "calibration", None), "forget_documents", None),
    ]
    prepare_output_dir(
        out, "train", inputs, overwrite=cfg.train.overwrite, own_names=TRAIN_OWN_NAMES, create=False
    )
    stop_flag = {"stop": False, "raise": True}  # before and after training a signal ends the run at once
    old_handlers = _install_signal_handlers(stop_flag)
    existed = out.exists()
    lock = None
    try:
        if is_main_process():
            out.parent.mkdir(parents=True, exist_ok=True)
            lock = DirectoryLock(out).acquire()
            remove_stale_tmp(out)
        return _run_unlearning(cfg, model=model, tokenizer=tokenizer, stop_flag=stop_flag)
    finally:
        _restore_signal_handlers(old_handlers)
        if lock is not None:
            lock.release()
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # nothing was written: leave no directory behind


def _run_unlearning(cfg: UnlearnConfig, *, model=None, tokenizer=None, stop_flag: dict) -> dict:
    from transformers import PrinterCallback, TrainerCallback, set_seed

    from llm_unlearn import reference_cache
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.data.schedule import plan_chunks, summarize_plan
    from llm_unlearn.data.tokenize import UnlearnCollator, ensure_pad_token, tokenize_records
    from llm_unlearn.modeling import apply_lora, load_model, load_tokenizer, merge_and_save, resolve_dtype
    from llm_unlearn.outputs import write_marker
    from llm_unlearn.trainer import UnlearnTrainer, steps_per_chunk

    t0 = time.time()
    out = Path(cfg.train.output_dir)

    # data
    d = cfg.data
    bundle = load_unlearning_data(d.data, split=d.split, forget=d.forget, retain=d.retain)
    calib_opts = getattr(cfg, "calibration", None)
    calib_files = [
        Path(p)
        for p in (getattr(calib_opts, "holdout", None), getattr(calib_opts, "forget_documents", None))
        if p and Path(p).is_file()
    ]
    data_sha = data_fingerprint([*bundle.files, *calib_files], d.data)  # what a resume must find unchanged
    saved = check_output_dir(out, cfg, data_sha)
    if saved and saved.get("finished"):
        log.info("%s already holds this finished run (same options and data); nothing to do", out)
        return saved
    forget_recs, retain_recs = bundle.forget, bundle.retain
    if d.limit:  # whole SemEval units, round-robin over tasks (data/slices.py)
        from llm_unlearn.data.slices import slice_records

        forget_recs, retain_recs = slice_records(forget_recs, d.limit), slice_records(retain_recs, d.limit)
    if not forget_recs:
        raise UserError("the forget set is empty")
    document_rows: set[int] = set()
    c = cfg.calibration
    if c.forget_documents and c.unlearn_documents:  # the documents are forget data too, next to their records
        from llm_unlearn.data.holdout import read_forget_documents, with_documents

        forget_recs, document_rows = with_documents(forget_recs, read_forget_documents(c.forget_documents))

    # training arguments as transformers checks them, on this machine's devices, before the model loads
    from llm_unlearn.modeling import default_device

    build_training_args(cfg, out, resolve_dtype(cfg.model.dtype, default_device()))

    # model
    set_seed(cfg.train.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(
            cfg.model.tokenizer or cfg.model.name_or_path,
            trust_remote_code=cfg.model.trust_remote_code,
            gguf_file=cfg.model.gguf_file,
        )
    tokenizer = ensure_pad_token(tokenizer)
    if model is None:
        model = load_model(
            cfg.model.name_or_path,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            gguf_file=cfg.model.gguf_file,
            allow_pickle=cfg.model.allow_pickle,
        )
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    if cfg.training_args.get("gradient_checkpointing"):
        model.enable_input_require_grads()  # so the LoRA weights still get gradients
    peft_model = apply_lora(
        model,
        r=cfg.lora.r,
        alpha=cfg.lora.alpha,
        dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
    )
    if saved is not None:
        _load_adapter_weights(peft_model, out / CHECKPOINT)

    # tokens and plan
    forget_rows = tokenize_records(
        tokenizer, forget_recs, joiner=d.joiner, add_eos=d.add_eos, max_length=d.max_length
    )
    retain_rows = tokenize_records(
        tokenizer, retain_recs, joiner=d.joiner, add_eos=d.add_eos, max_length=d.max_length
    )
    for key, row in enumerate(forget_rows + retain_rows):  # forget i -> i, retain j -> n_forget + j
        row["row_key"] = key
    s = cfg.schedule
    plan = plan_chunks(
        len(forget_rows),
        len(retain_rows),
        s.chunk_size,
        s.positive_ratio,
        split_retain=s.split_retain,
        seed=cfg.train.seed,
        sequential=s.sequential,
    )

    args = build_training_args(cfg, out, resolve_dtype(cfg.model.dtype, device))
    per_chunk_steps = [
        steps_per_chunk(
            len(c), args.per_device_train_batch_size, world_size(), args.gradient_accumulation_steps, s.epochs
        )
        for c in plan
    ]
    total_steps = sum(per_chunk_steps)

    start_chunk = saved["completed_chunks"] if saved else 0
    history: list[dict] = list(saved.get("log_history", [])) if saved else []
    chunk_summaries: list[dict] = list(saved.get("chunks", [])) if saved else []

    out.mkdir(parents=True, exist_ok=True)  # only now: bad data, options or model leave no directory behind
    if is_main_process():
        write_marker(out, "train")
    trainer = UnlearnTrainer(
        model=peft_model,
        args=args,
        train_dataset=_RowsDataset([]),
        data_collator=UnlearnCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        objective=cfg.objective,
    )
    # the reference's outputs, computed once per run (train.reference_cache; reused on resume)
    trainer.reference_cache = reference_cache.for_run(
        cfg,
        peft_model,
        forget_rows + retain_rows,
        out,
        selector=trainer.selector,
        pad_token_id=tokenizer.pad_token_id,
        data_files=bundle.files,
    )
    progress = _Progress(
        total_steps, sum(per_chunk_steps[:start_chunk]), enabled=cfg.train.progress and is_main_process()
    )
    # evaluation during training, the calibration gate, stopping and selection (calibrated.py)
    calib = Calibrator.build(
        cfg, tokenizer, forget_recs, retain_recs, per_chunk_steps, document_rows=document_rows
    )
    if calib is not None and saved is not None and saved.get("calibration"):
        calib.restore(saved["calibration"], _load_best_state(out / CHECKPOINT))
    calib_action: dict[str, str | None] = {"action": None}

    def evaluate_now(step: int, c: int) -> str | None:
        action = calib.evaluate(
            trainer.model, step=step, chunk=c, chunk_rows=[i for kind, i in plan[c] if kind == "forget"]
        )
        trainer.forget_active, trainer.forget_caps = calib.active, calib.caps
        trainer.last_row_nll = {}  # the evaluation measured every unit afresh
        ev = calib.evaluations[-1]
        history.append(
            {
                "step": step,
                "chunk": c + 1,
                **{f"eval_{k}": v for k, v in ev.items() if k not in ("step", "chunk")},
            }
        )
        progress.postfix_eval(ev)
        return action

    class _LogToHistory(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                row = {
                    "step": offset + state.global_step,
                    "chunk": trainer.chunk_index + 1,
                    "epoch": round(float(logs.get("epoch", state.epoch or 0.0)), 4),
                }
                for k in (
                    "loss",
                    "npo",
                    "retain_nll",
                    "divergence",
                    "forget_nll",
                    "sugd",
                    "forget_active",
                    "learning_rate",
                    "grad_norm",
                ):
                    if k in logs:
                        row["lr" if k == "learning_rate" else k] = float(logs[k])
                history.append(row)
                progress.postfix(row)

        def on_step_end(self, a, state, control, **kw):
            progress.update()
            if _any_process(stop_flag):  # every process stops after the same step
                control.should_training_stop = True
            elif calib is not None and calib.due(state.global_step, trainer.chunk_index):
                calib_action["action"] = evaluate_now(offset + state.global_step, trainer.chunk_index)
                if calib_action["action"]:
                    control.should_training_stop = True

    trainer.add_callback(_LogToHistory())
    trainer.remove_callback(PrinterCallback)  # our progress bar and log_history.jsonl replace its prints

    # optimizer scope 'run': one optimizer and one schedule over all chunks
    run_opt = run_sched = None
    if s.optimizer_scope == "run":
        from transformers import get_scheduler

        run_opt = trainer.create_optimizer()
        run_sched = get_scheduler(
            args.lr_scheduler_type,
            optimizer=run_opt,
            num_warmup_steps=args.get_warmup_steps(total_steps),
            num_training_steps=total_steps,
        )
        if saved is not None and (out / CHECKPOINT / "optimizer.pt").is_file():
            st = torch.load(out / CHECKPOINT / "optimizer.pt", map_location=device, weights_only=True)
            run_opt.load_state_dict(st["optimizer"])
            run_sched.load_state_dict(st["scheduler"])

    offset = saved.get("steps_done", sum(per_chunk_steps[:start_chunk])) if saved else 0
    if calib is not None:
        trainer.forget_active, trainer.forget_caps = calib.active, calib.caps
        trainer.unit_row = calib.monitor.record_to_document_row()
        if start_chunk == 0 and not calib.evaluations:
            evaluate_now(0, 0)  # the starting point (and the first gate)
    stop_flag["raise"] = False  # during training: finish the step, save the last complete chunk, stop
    try:
        for c in range(start_chunk, len(plan)):
            if calib is not None and calib.stop_reason:
                break
            chunk_t0 = time.time()
            rows = [forget_rows[i] if kind == "forget" else retain_rows[i] for kind, i in plan[c]]
            trainer.train_dataset = _RowsDataset(rows)
            trainer.chunk_index = c
            set_seed(cfg.train.seed + c)
            if run_opt is not None:
                trainer.optimizer, trainer.lr_scheduler = run_opt, run_sched
            else:
                trainer.optimizer, trainer.lr_scheduler = None, None
            n_hist = len(history)
            calib_action["action"] = None
            trainer.train()
            if (
                stop_flag["stop"]
                and trainer.state.global_step < per_chunk_steps[c]
                and not calib_action["action"]
            ):
                del history[n_hist:]
                raise TrainingInterrupted(
                    f"interrupted in chunk {c + 1}/{len(plan)}; chunks 1..{c} are saved in {out}. "
                    "Run the same command again to resume."
                )
            offset += trainer.state.global_step
            if calib is not None and not calib_action["action"]:
                calib_action["action"] = evaluate_now(offset, c)  # the end of every chunk
            summ = _chunk_summary(c, plan[c], history[n_hist:], time.time() - chunk_t0)
            chunk_summaries.append(summ)
            full_state = _sharded_state_dict(trainer)  # a collective under ZeRO-3 / FSDP, else None
            if is_main_process():
                _save_checkpoint(
                    out,
                    peft_model,
                    cfg,
                    c + 1,
                    history,
                    chunk_summaries,
                    run_opt,
                    run_sched,
                    state_dict=full_state,
                    extra={"steps_done": offset},
                    calib=calib,
                    data_sha=data_sha,
                )
                atomic_write_jsonl(out / "log_history.jsonl", history)
            if calib_action["action"] == "stop":
                log.info("calibration: %s", calib.stop_reason)
                break
            if _any_process(stop_flag) and c + 1 < len(plan):
                raise TrainingInterrupted(
                    f"interrupted after chunk {c + 1}/{len(plan)} (saved in {out}). Run the same command again to resume."
                )
    finally:
        progress.close()
        trainer.selector.remove() if trainer.selector is not None else None
    # the final outputs: a signal now stops at once (every write is atomic; the checkpoint holding all
    # chunks stays until run.json is written, so the same command finishes the job)
    stop_flag["raise"] = True
    if _any_process(stop_flag):  # a collective: every process decides the same
        raise TrainingInterrupted(
            f"interrupted before the final outputs; every chunk is saved in {out}. "
            "Run the same command again to finish."
        )

    calibration = calib.finish(peft_model) if calib is not None else None
    if calibration is not None:
        log.info("calibration: kept %s (%s)", calibration["selected"], calibration["selection_reason"])
    summary = {
        "config": cfg.to_dict(),
        "versions": package_versions(),
        "data_files": {str(p): sha256_file(p) for p in bundle.files},
        "data_sha256": data_sha,
        "n_forget": len(forget_rows),
        "n_forget_documents": len(document_rows),
        "n_retain": len(retain_rows),
        "chunk_count": len(plan),
        "plan": summarize_plan(plan),
        "chunks": chunk_summaries,
        "total_steps": total_steps,
        "steps_done": offset,
        "calibration": calibration,
        "lora_modules": getattr(peft_model, "targeted_module_names_short", None),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "wall_seconds": round(time.time() - t0, 2)
        + (saved.get("wall_seconds_before", 0.0) if saved else 0.0),
    }
    full_state = _sharded_state_dict(trainer)
    if is_main_process():
        _save_adapter(peft_model, out / "adapter", full_state)
        if cfg.train.merge and full_state is not None:
            log.warning(
                "the weights are sharded (ZeRO-3 / FSDP): no merged model; run `llm-unlearn merge --model "
                "%s --adapter %s --output-dir %s` on one device",
                cfg.model.name_or_path,
                out / "adapter",
                out / "model",
            )
        elif cfg.train.merge:
            merge_and_save(peft_model, tokenizer, out / "model")
        if cfg.train.plots:
            try:
                from llm_unlearn.plots import plot_losses

                plot_losses(history, out / "plots" / "losses.png")
                if calibration and calibration["evaluations"]:
                    from llm_unlearn.plots import plot_evaluations

                    idx = calibration["selected_index"]
                    plot_evaluations(
                        calibration["evaluations"],
                        chunk_summaries,
                        out / "plots" / "evaluation.png",
                        selected_step=calibration["evaluations"][idx]["step"] if idx is not None else None,
                    )
            except Exception as exc:  # a plot must never lose a finished run
                log.warning("could not draw plots/losses.png: %s", exc)
        atomic_write_jsonl(out / "log_history.jsonl", history)
        atomic_write_json(out / "run.json", summary)  # from here on the run is finished
        for name in (CHECKPOINT, ".trainer"):  # renamed first: a kill while deleting leaves only a .tmp
            if (out / name).exists():
                gone = out / f".{name}.done.tmp"
                os.replace(out / name, gone)
                shutil.rmtree(gone, ignore_errors=True)
        reference_cache.remove_cache_dirs(out)  # only a resume needs it
    summary["model"] = peft_model
    return summary


# ----------------------------------------------------------------------------- checkpoint
def _sharded_state_dict(trainer) -> dict | None:
    """The full weights when DeepSpeed ZeRO-3 or FSDP shards them over the processes (gathered on
    rank 0 through accelerate; every process must call this), None when each process holds them
    whole (one process, DDP, ZeRO-1/2): then the adapter is read from the model directly."""
    ds = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    sharded = getattr(trainer, "is_fsdp_enabled", False) or (ds is not None and ds.zero_stage == 3)
    if not sharded:
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _save_adapter(peft_model, path: Path, state_dict: dict | None = None) -> None:
    atomic_dir(
        path, lambda tmp: peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    )


def _save_checkpoint(
    out,
    peft_model,
    cfg,
    completed,
    history,
    chunks,
    run_opt,
    run_sched,
    state_dict=None,
    extra: dict | None = None,
    calib=None,
    data_sha=None,
) -> None:
    def fill(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if run_opt is not None:
            torch.save(
                {"optimizer": run_opt.state_dict(), "scheduler": run_sched.state_dict()}, tmp / "optimizer.pt"
            )
        state = {
            "config": cfg.to_dict(),
            "data_sha256": data_sha,
            "completed_chunks": completed,
            "log_history": history,
            "chunks": chunks,
            **(extra or {}),
        }
        if calib is not None:
            state["calibration"] = calib.state()
            if calib.best_state is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in calib.best_state.items()}, str(tmp / BEST_STATE))
        (tmp / STATE).write_text(json.dumps(state))

    atomic_dir(out / CHECKPOINT, fill)


def _load_best_state(ckpt: Path) -> dict | None:
    from safetensors.torch import load_file

    f = ckpt / BEST_STATE
    return load_file(str(f)) if f.is_file() else None


def _load_adapter_weights(peft_model, ckpt: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    f = ckpt / "adapter_model.safetensors"
    if not f.is_file():
        raise UserError(f"checkpoint {ckpt} has no adapter_model.safetensors; use --overwrite to start over")
    set_peft_model_state_dict(peft_model, load_file(str(f), device=str(next(peft_model.parameters()).device)))


def _chunk_summary(c: int, chunk, rows: list[dict], seconds: float) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return round(sum(vals) / len(vals), 6) if vals else None

    rows = [r for r in rows if "loss" in r]  # training rows (evaluations are logged beside them)
    last = rows[-1] if rows else {}
    return {
        "chunk": c + 1,
        "n_forget": sum(1 for k, _ in chunk if k == "forget"),
        "n_retain": sum(1 for k, _ in chunk if k == "retain"),
        "seconds": round(seconds, 2),
        "mean_loss": mean("loss"),
        "mean_npo": mean("npo"),
        "mean_retain_nll": mean("retain_nll"),
        "mean_divergence": mean("divergence"),
        "last_loss": last.get("loss"),
    }


# ----------------------------------------------------------------------------- signals, progress
def _install_signal_handlers(flag: dict):
    def handler(signum, frame):
        if flag.get("raise"):  # outside training (loading, final outputs): stop at once
            flag["stop"] = True
            raise TrainingInterrupted(
                f"interrupted by signal {signum} before the run was complete; nothing is "
                "half-written. Run the same command again to resume."
            )
        if flag["stop"]:  # second signal: stop now
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warning("signal %d: finishing the current step, then saving and exiting", signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return old


def _restore_signal_handlers(old) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


class _Progress:
    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="unlearning", unit="step", dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def postfix(self, row: dict) -> None:
        if self.bar is not None:
            fields = {"chunk": row["chunk"]}
            for k in ("loss", "npo", "retain_nll", "divergence"):
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
