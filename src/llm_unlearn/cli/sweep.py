"""``llm-unlearn sweep``: hyper-parameter search with Optuna on the calibrated score; every flag generated
from :class:`llm_unlearn.sweep.options.SweepOptions`."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from llm_unlearn.cli.common import RepeatableLists
    from llm_unlearn.config.declare import add_flags
    from llm_unlearn.sweep.options import SweepOptions

    p = sub.add_parser(
        "sweep",
        help="tune a method's options with Optuna on a validation split (best.yaml for train --config)",
        description="Optuna trials of `train` on a validation split carved from the data by whole units, "
        "scored by the calibration's proxy of the official score against the holdout, pruned on its "
        "evaluations; resumable, several processes or jobs on one storage. Writes best.yaml, trials.csv, "
        "plots/ and summary.txt. See README, section `sweep`.",
    )
    add_flags(RepeatableLists(p), SweepOptions, required=("config", "output_dir"))
    p.set_defaults(func=run)


def run(args) -> int:
    from llm_unlearn.config.declare import read_flags
    from llm_unlearn.sweep.options import SweepOptions
    from llm_unlearn.sweep.run import run_sweep

    run_sweep(read_flags(args, SweepOptions))
    return 0
