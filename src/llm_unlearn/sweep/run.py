"""`llm-unlearn sweep` as a function: check everything, carve the validation split, run the trials of one
study per method in K processes (or in several jobs on one storage), confirm the best trials with other
seeds (``sweep/confirm.py``), then write the outputs.

    run_sweep(SweepOptions(config="base.yaml", trials=30, output_dir="runs/sweep"))

The output directory follows ``outputs.prepare_output_dir`` (kind ``sweep``): the tool writes only the
names of :data:`OWN_NAMES` (and ``best-METHOD.yaml``); the study's database, even inside it, is the
user's: never in the manifest, never replaced or deleted (``--overwrite`` does not touch it; a new study
needs a new ``--storage`` or ``--study-name``). Rerunning the same command resumes the study.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llm_unlearn.errors import ConfigError, UserError
from llm_unlearn.sweep.options import SweepOptions

log = logging.getLogger(__name__)

__all__ = ["run_sweep", "OWN_NAMES"]

OWN_NAMES = (
    "validation",
    "evaluation",
    "split.json",
    "trials",
    "shared",
    "best.yaml",
    "trials.csv",
    "plots",
    "summary.txt",
    "sweep.json",
)


def _methods(opts: SweepOptions, base) -> list[str]:
    from llm_unlearn.config.presets import METHOD_NAMES

    names = list(dict.fromkeys(opts.method or [base.objective.method]))
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise ConfigError(f"--method: unknown {', '.join(unknown)} (known: {', '.join(METHOD_NAMES)})")
    return names


def _setup(opts: SweepOptions):
    """(base config, methods, space overrides, storage URL, output dir) after every check."""
    from llm_unlearn.config import build_config
    from llm_unlearn.config.declare import check_options
    from llm_unlearn.sweep import spaces

    check_options(opts)
    if not opts.config:
        raise UserError("no base config given (--config base.yaml)")
    if not opts.output_dir:
        raise UserError("no output directory given (--output-dir DIR)")
    base = build_config(opts.config)
    if not base.calibration.holdout:  # before anything is written (prepare_validation says it again)
        raise UserError(
            "a sweep needs a holdout (calibration.holdout: never-seen documents or records, not the "
            "evaluation's non-members): the trials are scored by the calibration's MIA against it"
        )
    methods = _methods(opts, base)
    over = spaces.load_space_file(opts.space) if opts.space else {}
    for m in methods:
        spaces.space_for(m, over)  # a bad space fails now, not in a worker
    out = Path(opts.output_dir)
    storage = opts.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    return base, methods, over, storage, out


def _worker(opts_dict: dict, index: int, model=None, tokenizer=None, extra=None, last_pass=False) -> int:
    """One process's share of the sweep: every method's study in turn, until its budget is met, then the
    confirmation runs it claims (`last_pass`: after the workers ended, every run still missing, whoever
    claimed it)."""
    from llm_unlearn.sweep import spaces
    from llm_unlearn.sweep.confirm import confirm
    from llm_unlearn.sweep.objective import TrialObjective, prepare_validation
    from llm_unlearn.sweep.shared import Shared
    from llm_unlearn.sweep.study import make_storage, open_study, run_trials

    opts = SweepOptions(**opts_dict)
    _share_cores(opts.workers)
    base, methods, over, storage_url, out = _setup(opts)
    validation = (
        prepare_validation(base, out, opts.validation_fraction, opts.seed) if index else _VALIDATION[0]
    )
    storage = make_storage(storage_url, opts.heartbeat)
    shared = Shared(out, model, tokenizer)
    ran = 0
    offset = index + int(os.environ.get("SLURM_ARRAY_TASK_ID", "0") or 0) * 1000
    for m in methods:
        study = open_study(
            storage,
            f"{opts.study_name}-{m}",
            sampler=opts.sampler,
            pruner=opts.pruner,
            seed=opts.seed + offset,
        )
        obj = TrialObjective(opts.config, m, spaces.space_for(m, over), validation, out, shared, extra)

        def progress(trial, done, total, _m=m):
            if opts.progress and trial is not None:
                value = "-" if trial.value is None else f"{trial.value:.4f}"
                print(
                    f"[sweep] {_m}: trial {trial.number} {trial.state.name.lower()} {value} ({done}/{total})",
                    flush=True,
                )

        lock = out / "shared" / f"{study.study_name}.lock"
        ran += run_trials(study, obj, opts.trials, lock, on_trial=progress)

        def confirmed(trial, s, value, _m=m):
            if opts.progress:
                print(f"[sweep] {_m}: trial {trial.number} again with seed +{s}: {value:.4f}", flush=True)

        ran += confirm(
            study,
            obj.rescore,
            opts.confirm,
            opts.confirm_seeds,
            lock,
            claims=not last_pass,
            on_run=confirmed,
        )
    return ran


_VALIDATION: list = [None]  # the main process's split, reused by its own worker


def _share_cores(workers: int) -> None:
    """K worker processes on one machine share its cores: each gets cores // K torch threads (at least
    one), unless the user chose (OMP_NUM_THREADS set); K threads pools of all the cores would wait on
    each other."""
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _spawned(opts_dict: dict, index: int, extra) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _worker(opts_dict, index, extra=extra)


def _enqueue_defaults(opts: SweepOptions, methods, over, storage_url: str, base_path, extra=None) -> None:
    """The base configuration as each study's first trial (once: skipped when already enqueued), so that
    the tuned result is never below the default on the validation data."""
    from llm_unlearn.config import build_config
    from llm_unlearn.sweep import spaces
    from llm_unlearn.sweep.objective import flat
    from llm_unlearn.sweep.study import make_storage, open_study

    storage = make_storage(storage_url, opts.heartbeat)
    for m in methods:
        values = flat(build_config(base_path, {"objective.method": m, **(extra or {})}).to_dict())
        space = spaces.space_for(m, over)
        params = {
            k: values[k] for k, spec in space.items() if isinstance(spec, dict) and values.get(k) is not None
        }
        study = open_study(
            storage, f"{opts.study_name}-{m}", sampler=opts.sampler, pruner=opts.pruner, seed=opts.seed
        )
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(params, user_attrs={"default": True}, skip_if_exists=True)


def _remove_stale_trial_dirs(out: Path, studies: dict) -> None:
    """DIR/trials/ holds the run directories of trials in progress (each removes its own when it ends);
    those of killed processes are removed once no trial of any study is running."""
    import shutil

    from optuna.trial import TrialState

    if any(t.state == TrialState.RUNNING for s in studies.values() for t in s.get_trials(deepcopy=False)):
        return
    for p in (out / "trials").glob("*"):
        shutil.rmtree(p, ignore_errors=True)


def run_sweep(
    opts: SweepOptions, *, model=None, tokenizer=None, extra_overrides: dict | None = None
) -> dict[str, Any]:
    """Run (or resume) the sweep `opts` describes; returns sweep.json's content. `model` / `tokenizer`:
    an already-loaded target (then ``--workers`` must be 1); `extra_overrides`: dotted options fixed in
    every trial and in best.yaml."""
    from llm_unlearn.config import load_yaml
    from llm_unlearn.outputs import prepare_output_dir
    from llm_unlearn.sweep import report
    from llm_unlearn.sweep.objective import prepare_validation
    from llm_unlearn.sweep.study import make_storage, open_study

    t0 = time.time()
    base, methods, over, storage_url, out = _setup(opts)
    if model is not None and opts.workers > 1:
        raise UserError("a model given in memory runs in one process: use workers=1")
    d = base.data
    inputs = [
        opts.config,
        opts.space,
        base.model.name_or_path,
        d.data,
        d.forget,
        d.retain,
        base.calibration.holdout,
    ]
    own = [*OWN_NAMES, *(f"best-{m}.yaml" for m in methods)]
    prepare_output_dir(out, "sweep", inputs, overwrite=opts.overwrite, own_names=own)
    _VALIDATION[0] = prepare_validation(base, out, opts.validation_fraction, opts.seed)
    _enqueue_defaults(opts, methods, over, storage_url, opts.config, extra_overrides)
    opts_dict = asdict(opts)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_spawned, args=(opts_dict, i, extra_overrides), daemon=False)
        for i in range(1, opts.workers)
    ]
    for p in procs:
        p.start()
    try:
        ran = _worker(opts_dict, 0, model, tokenizer, extra_overrides)
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise RuntimeError(
            f"{len(bad)} worker process(es) failed (exit codes {bad}); rerun to resume the study"
        )
    if opts.confirm:  # the confirmation runs still missing (a claim of a process that died, anywhere)
        ran += _worker(opts_dict, 0, model, tokenizer, extra_overrides, last_pass=True)
    storage = make_storage(storage_url, opts.heartbeat)
    studies = {m: open_study(storage, f"{opts.study_name}-{m}", seed=opts.seed) for m in methods}
    _remove_stale_trial_dirs(out, studies)
    base_yaml = load_yaml(opts.config)
    if extra_overrides:
        base_yaml = report.best_yaml(base_yaml, extra_overrides)
    extra = {
        "seconds": round(time.time() - t0, 1),
        "trials_run_here": ran,
        "workers": opts.workers,
        "split": _VALIDATION[0].summary,
    }
    result = report.write_outputs(studies, base_yaml, out, storage_url, extra, confirm=opts.confirm)
    if opts.progress:
        print(report.summary_text(result["methods"], storage_url, out), flush=True)
    return result
