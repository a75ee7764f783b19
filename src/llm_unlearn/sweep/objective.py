"""One trial of a sweep: the sampled options on the base config, trained on the validation side of the
data (``sweep/split.py``), scored by the calibration's proxy of the official score (task aggregate,
MIA score, MMLU when given: ``train/calibration.proxy_score``) against the holdout.

Every calibration evaluation is an intermediate value of the trial (its step is the evaluation's index,
its value the best proxy so far: the run keeps the best state, so that is what the trial would return if
it ended there); the pruner may end the trial after any of them. The trial's value is the proxy of the
state the run kept (``calibration.selected_index``; the last evaluation when it keeps the last state).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.errors import NonFiniteLossError, UserError
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl
from llm_unlearn.sweep import spaces
from llm_unlearn.sweep.split import carve, check_holdout

log = logging.getLogger(__name__)

__all__ = ["Validation", "prepare_validation", "TrialObjective", "flat"]

VALIDATION_DIRNAME, EVALUATION_DIRNAME, TRIALS_DIRNAME = "validation", "evaluation", "trials"


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{section: {name: v}} -> {"section.name": v}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "training_args":
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class Validation:
    overrides: dict[str, Any]  # the data options of every trial
    summary: dict[str, Any]  # split.json


def _mia_dir(data: str | None) -> Path | None:
    if not data:
        return None
    for cand in (Path(data) / "mia", Path(data).parent / "mia"):
        if (cand / "member.jsonl").is_file() and (cand / "nonmember.jsonl").is_file():
            return cand
    return None


def _write_rows(path: Path, rows: list[dict]) -> None:
    """Write `rows` as JSONL unless the file already holds exactly them (a rerun, another process of the
    sweep: unchanged files keep their mtime, and every fingerprint built on them stays valid)."""
    import json

    if path.is_file():
        try:
            old = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            old = None
        if old == json.loads(json.dumps(rows)):
            return
    atomic_write_jsonl(path, rows)


def prepare_validation(base, out: Path, fraction: float, seed: int) -> Validation:
    """Carve the validation split from the base config's data and write it: ``out/validation/``
    (forget.jsonl, retain.jsonl, forget_documents.jsonl: what trials train on), ``out/evaluation/`` (the
    rest, with the MIA members of its units and the non-members: what the final evaluation grades) and
    ``out/split.json``. Deterministic: every process writes the same files."""
    from llm_unlearn.data.holdout import read_forget_documents, read_holdout
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents
    from llm_unlearn.data.slices import slice_records

    d, c = base.data, base.calibration
    if not c.holdout:
        raise UserError(
            "a sweep needs a holdout (calibration.holdout: never-seen documents or records, not the "
            "evaluation's non-members): the trials are scored by the calibration's MIA against it"
        )
    bundle = load_unlearning_data(d.data, split=d.split, forget=d.forget, retain=d.retain)
    forget, retain = bundle.forget, bundle.retain
    if d.limit:
        forget, retain = slice_records(forget, d.limit), slice_records(retain, d.limit)
    docs = read_forget_documents(c.forget_documents) if c.forget_documents else []
    mia = _mia_dir(d.data)
    members, nonmembers = read_mia_documents(mia) if mia else ([], [])
    check_holdout(read_holdout(c.holdout), nonmembers, c.holdout)
    part = carve(forget, retain, fraction, seed, documents=docs, members=members)
    if docs and not part.forget_documents:
        raise UserError(
            f"none of the forget documents of {c.forget_documents} belongs to a validation unit; check their "
            "ids (a document's id is its unit's, as in data/slices.unit_key)"
        )
    v, e = out / VALIDATION_DIRNAME, out / EVALUATION_DIRNAME
    _write_rows(v / "forget.jsonl", [r.__dict__ for r in part.forget])
    _write_rows(v / "retain.jsonl", [r.__dict__ for r in part.retain])
    _write_rows(e / "forget.jsonl", [r.__dict__ for r in part.eval_forget])
    _write_rows(e / "retain.jsonl", [r.__dict__ for r in part.eval_retain])
    if part.forget_documents:
        _write_rows(v / "forget_documents.jsonl", part.forget_documents)
    if members:
        _write_rows(e / "mia" / "member.jsonl", part.eval_members)
        _write_rows(e / "mia" / "nonmember.jsonl", nonmembers)
    summary = {
        "fraction": fraction,
        "seed": seed,
        "validation": {
            "forget": len(part.forget),
            "retain": len(part.retain),
            "forget_documents": len(part.forget_documents),
        },
        "evaluation": {
            "forget": len(part.eval_forget),
            "retain": len(part.eval_retain),
            "mia_members": len(part.eval_members),
            "mia_nonmembers": len(nonmembers),
        },
        "holdout": str(c.holdout),
        "units": part.units,
    }
    atomic_write_json(out / "split.json", summary)
    overrides = {
        "data.data": None,
        "data.split": None,
        "data.limit": None,
        "data.forget": str((v / "forget.jsonl").resolve()),
        "data.retain": str((v / "retain.jsonl").resolve()) if part.retain else None,
        "calibration.holdout": str(Path(c.holdout).resolve()),
        "calibration.forget_documents": str((v / "forget_documents.jsonl").resolve())
        if part.forget_documents
        else None,
    }
    if c.eval_every == "off":
        overrides["calibration.eval_every"] = "auto"  # the trials are scored by these evaluations
    return Validation(overrides, summary)


class TrialObjective:
    """``objective(trial) -> float`` for one method's study (module docstring)."""

    def __init__(
        self, base_path, method: str, space: dict, validation: Validation, out: Path, shared, extra=None
    ):
        from llm_unlearn.config import build_config

        self.base_path, self.method, self.space = base_path, method, space
        self.validation, self.out, self.shared = validation, Path(out), shared
        self.extra = dict(extra or {})  # fixed overrides of every trial (e.g. the leaderboard's)
        self.base = flat(build_config(base_path, {"objective.method": method, **self.extra}).to_dict())

    def overrides(self, trial) -> dict[str, Any]:
        """The sampled point of this trial (dotted keys), with the method."""
        model, _ = self.shared.base(self._config({}, "probe"))
        point = spaces.suggest(trial, self.space, self.base, spaces.last_layer_of(model))
        return {"objective.method": self.method, **self.extra, **point}

    def _config(self, point: dict, name: str):
        from llm_unlearn.config import build_config

        run = {
            "train.output_dir": str(self.out / TRIALS_DIRNAME / name),
            "train.overwrite": True,
            "train.merge": False,
            "train.plots": False,
            "train.progress": False,
        }
        over = {"objective.method": self.method, **self.extra, **point, **self.validation.overrides, **run}
        return build_config(self.base_path, over)

    def __call__(self, trial) -> float:
        import optuna

        t0 = time.time()
        point = self.overrides(trial)
        trial.set_user_attr("options", point)
        best: list[float] = []

        def report(ev: dict) -> None:
            proxy = ev.get("proxy")
            if proxy is None:
                return
            best.append(max([proxy, *best]))
            trial.report(best[-1], len(best) - 1)
            if len(best) > 1 and trial.should_prune():  # never on the starting point alone
                raise optuna.TrialPruned(f"pruned after evaluation {len(best)} (best proxy {best[-1]:.4f})")

        try:
            summary = self._run(point, f"{self.method}-{trial.number}", report)
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.time() - t0, 2))
            raise
        except NonFiniteLossError as exc:  # these options diverge: the worst score, and the sweep goes on
            trial.set_user_attr("seconds", round(time.time() - t0, 2))
            trial.set_user_attr("error", str(exc).splitlines()[0])
            log.warning("sweep: trial %d diverged (%s): scored 0", trial.number, str(exc).splitlines()[0])
            return 0.0
        value = self._value(summary.get("calibration") or {})
        trial.set_user_attr("seconds", round(time.time() - t0, 2))
        trial.set_user_attr("steps", summary.get("steps_done"))
        return value

    def rescore(self, options: dict[str, Any], seed_index: int, number: int) -> float:
        """A finished trial's options trained again, unpruned, with the training seed offset by
        `seed_index` (``sweep/confirm.py``); the kept state's proxy (0 when the run diverges)."""
        seed = int(self.base.get("train.seed") or 0) + seed_index
        point = {**options, "train.seed": seed}
        try:
            summary = self._run(point, f"{self.method}-{number}-seed{seed}", None)
        except NonFiniteLossError as exc:
            log.warning("sweep: trial %d with seed %d diverged (%s): scored 0", number, seed, exc)
            return 0.0
        return self._value(summary.get("calibration") or {})

    def _run(self, point: dict[str, Any], name: str, on_evaluation) -> dict:
        """One training run of `point` on the validation data, with the shared start, tokens and
        reference cache; its directory (DIR/trials/NAME: ours only) removed after."""
        from llm_unlearn.train.loop import run_unlearning
        from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS

        cfg = self._config(point, name)
        model, tokenizer = self.shared.model(cfg)
        saved = dict(SWEEP_HOOKS)
        SWEEP_HOOKS.update(
            reference_dir=self.shared.reference_dir(cfg),
            on_evaluation=on_evaluation or (lambda ev: None),
            start_measurement=self.shared.start_measurement(cfg),
            tokens=self.shared.tokens,
            ephemeral=True,  # the directory goes below: no checkpoints, no final files
        )
        try:
            return run_unlearning(cfg, model=model, tokenizer=tokenizer)
        finally:
            SWEEP_HOOKS.update(saved)
            shutil.rmtree(Path(cfg.train.output_dir), ignore_errors=True)

    @staticmethod
    def _value(calibration: dict) -> float:
        evals = [e for e in calibration.get("evaluations") or [] if e.get("proxy") is not None]
        if not evals:
            raise RuntimeError("the trial made no calibration evaluation with a proxy: nothing to score")
        idx = calibration.get("selected_index")
        chosen = calibration["evaluations"][idx] if idx is not None else calibration["evaluations"][-1]
        return float(chosen["proxy"] if chosen.get("proxy") is not None else evals[-1]["proxy"])
