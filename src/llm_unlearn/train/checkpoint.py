"""Checkpoints and resume: what a run's output directory holds, whether a saved run may be resumed
(same options and data, by fingerprint), saving the adapter and the run state after each chunk
(atomically), and loading them back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from llm_unlearn.config import UnlearnConfig, config_from_dict
from llm_unlearn.errors import UserError
from llm_unlearn.io_utils import atomic_dir, recover_dir, sha256_file
from llm_unlearn.train.process import is_main_process

CHECKPOINT = "checkpoint"
STATE = "state.json"
BEST_STATE = "best_state.safetensors"  # the calibration's best weights so far (trainable parameters)
KEPT_STATE = "evaluation_{}.safetensors"  # an evaluation's weights calibration.bisect_selected still holds
OUTPUT_NAMES = (
    "adapter",
    "model",
    "run.json",
    "log_history.jsonl",
    "plots",
    CHECKPOINT,
    "resolved_config.yaml",
)
TRAIN_OWN_NAMES = (*OUTPUT_NAMES, ".trainer", "reference_cache")


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
            remove_outputs(out)
        return None
    changes = fingerprint_changes(saved, cfg, data_sha)
    if cfg.train.overwrite or changes:
        if not cfg.train.overwrite:
            what = "finished run" if not state_path.is_file() else "run"
            raise UserError(
                f"{out} holds a {what} with other inputs ({'; '.join(changes)}); rerun with the same options and "
                "data to resume, or pass --overwrite to start over (this run's outputs there are replaced)"
            )
        remove_outputs(out)
        return None
    if not state_path.is_file():  # finished run with the same config and data
        return {"finished": True, **saved}
    return saved


def remove_outputs(out: Path) -> None:
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
    chosen = (saved.get("calibration") or {}).get("npo_beta")
    if isinstance(chosen, dict) and "configured" in chosen and isinstance(old.get("objective"), dict):
        old["objective"]["npo_beta"] = chosen["configured"]  # the run lowered it (train/beta_from_gap.py)
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


def sharded_state_dict(trainer) -> dict | None:
    """The full weights when DeepSpeed ZeRO-3 or FSDP shards them over the processes (gathered on
    rank 0 through accelerate, or on every process for FSDP2 on CPU; every process must call this), None when each process holds them
    whole (one process, DDP, ZeRO-1/2): then the adapter is read from the model directly."""
    from llm_unlearn.train import sharding

    if sharding.is_sharded(trainer.model) and not getattr(trainer, "is_fsdp_enabled", False):
        return sharding.full_state_dict(trainer.model)  # FSDP2 applied on CPU processes (train/sharding.py)
    ds = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    sharded = getattr(trainer, "is_fsdp_enabled", False) or (ds is not None and ds.zero_stage == 3)
    if not sharded:
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def save_adapter(peft_model, path: Path, state_dict: dict | None = None, base: str | None = None) -> None:
    """The adapter (safetensors) and the record of its base model (`adapter.write_base_fingerprint`)."""
    from llm_unlearn.adapter import write_base_fingerprint

    def fill(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        write_base_fingerprint(tmp, peft_model, base)

    atomic_dir(path, fill)


def save_checkpoint(
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
            save_calibration_states(calib, tmp)
        (tmp / STATE).write_text(json.dumps(state))

    atomic_dir(out / CHECKPOINT, fill)


def save_calibration_states(calib, where: Path) -> None:
    """The calibration's weights into the checkpoint directory ``where``: its best state (BEST_STATE) and
    every evaluation's state it still holds (``calib.kept_states()``, KEPT_STATE with the index)."""
    from safetensors.torch import save_file

    def save(state, name):
        save_file({k: v.contiguous() for k, v in state.items()}, str(where / name))

    if calib.best_state is not None:
        save(calib.best_state, BEST_STATE)
    for i, state in calib.kept_states().items():
        save(state, KEPT_STATE.format(i))


def load_calibration_states(ckpt: Path) -> dict:
    """What ``save_calibration_states`` wrote, as ``Calibrator.restore``'s keyword arguments."""
    from safetensors.torch import load_file

    f = ckpt / BEST_STATE
    states = {}
    for g in ckpt.glob(KEPT_STATE.format("*")):
        tail = g.name[len(KEPT_STATE.split("{")[0]) : -len(".safetensors")]
        if tail.isdigit():
            states[int(tail)] = load_file(str(g))
    return {"best_state": load_file(str(f)) if f.is_file() else None, "states": states}


def load_adapter_weights(peft_model, ckpt: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = str(next(peft_model.parameters()).device)
    if not hasattr(peft_model, "peft_config"):  # full fine-tuning: the whole model was saved
        f = ckpt / "model.safetensors"
        if not f.is_file():
            raise UserError(f"checkpoint {ckpt} has no model.safetensors; use --overwrite to start over")
        peft_model.load_state_dict(
            load_file(str(f), device=device), strict=False
        )  # tied weights are saved once
        return
    f = ckpt / "adapter_model.safetensors"
    if not f.is_file():
        raise UserError(f"checkpoint {ckpt} has no adapter_model.safetensors; use --overwrite to start over")
    set_peft_model_state_dict(peft_model, load_file(str(f), device=device))


def remove_run_state(out: Path) -> None:
    """A finished run keeps no checkpoint, Trainer scratch or reference cache."""
    from llm_unlearn.train.reference_source import remove_cache_dirs

    for name in (CHECKPOINT, ".trainer"):  # renamed first: a kill while deleting leaves only a .tmp
        if (out / name).exists():
            gone = out / f".{name}.done.tmp"
            os.replace(out / name, gone)
            shutil.rmtree(gone, ignore_errors=True)
    remove_cache_dirs(out)  # only a resume needs it
