"""`llm-unlearn sweep`'s options: one dataclass of `opt()` fields (its flags, help and ranges)."""

from __future__ import annotations

from dataclasses import dataclass

from llm_unlearn.config.options import _pos, opt

__all__ = ["SweepOptions"]


@dataclass
class SweepOptions:
    config: str | None = opt(
        None, "the base training config (YAML, as `train --config` takes)", flag="--config", path=True
    )
    space: str | None = opt(
        None, "space.yaml overriding the default search spaces (sweep/spaces.py)", flag="--space", path=True
    )
    trials: int = opt(
        30,
        "finished trials (complete or pruned) per method, over every process",
        flag="--trials",
        range=_pos(1),
    )
    storage: str | None = opt(
        None,
        "Optuna storage: sqlite:///DIR/study.db (one machine) or an RDB URL such as "
        "postgresql://user@host/db (several machines); default sqlite:///OUTPUT_DIR/study.db",
        flag="--storage",
    )
    output_dir: str | None = opt(
        None, "where best.yaml, trials.csv, plots and the summary go", flag="--output-dir", path=True
    )
    workers: int = opt(
        1, "processes on this machine, each running trials of the same study", flag="--workers", range=_pos(1)
    )
    method: list[str] | None = opt(
        None, "methods to tune, one study each (default: the base config's method)", flag="--method"
    )
    study_name: str = opt("llm-unlearn", "study name (a method's study is NAME-METHOD)", flag="--study-name")
    sampler: str = opt("tpe", "Optuna sampler (seeded)", flag="--sampler", choices=("tpe", "random"))
    pruner: str = opt(
        "median",
        "pruner fed by the calibration's evaluations",
        flag="--pruner",
        choices=("median", "successive_halving", "none"),
    )
    confirm: int = opt(
        3,
        "after the trials: the N best complete trials and the default are trained again with "
        "--confirm-seeds other seeds, and the best is the highest mean proxy (0: the best single trial)",
        flag="--confirm",
        range=_pos(0),
    )
    confirm_seeds: int = opt(
        2, "other training seeds per confirmed trial", flag="--confirm-seeds", range=_pos(1)
    )
    seed: int = opt(0, "seed of the sampler and of the validation split", flag="--seed", range=_pos(0))
    validation_fraction: float = opt(
        0.5,
        "share of the forget and retain units the trials train and are scored on (the rest is never seen)",
        flag="--validation-fraction",
        range=_pos(0, open_low=True, high=1, open_high=True),
    )
    heartbeat: int = opt(
        30,
        "seconds between a running trial's heartbeats (a trial silent for 3x this is failed and retried)",
        flag="--heartbeat",
        range=_pos(1),
    )
    overwrite: bool = opt(
        False,
        "replace this tool's earlier outputs in --output-dir (never the study)",
        switch=("--overwrite", True),
    )
    progress: bool = opt(True, "progress lines", switch=("--no-progress", False))
