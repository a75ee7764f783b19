"""``llm-unlearn demo``: the whole pipeline on embedded synthetic data (or on real SemEval-format data
with ``--data``). Its flags are generated from :class:`DemoOptions` (``config/declare.py``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError

__all__ = ["DEMO_OWN_NAMES", "DemoOptions", "add_parser", "cmd_demo"]

DEMO_OWN_NAMES = ("data", "target-model", "eval-before", "unlearned", "eval-after", "demo.json", "plots")


@dataclass
class DemoOptions:
    output_dir: str = opt("runs/demo", "output directory", flag="--output-dir", path=True)
    data: str | None = opt(
        None, "run on real SemEval-format data instead of the synthetic set", flag="--data", path=True
    )
    split: str | None = opt(None, "split sub-directory of --data, e.g. train", flag="--split", path=True)
    limit: int | None = opt(
        None,
        "at most N forget and N retain records of --data, whole units (see README)",
        flag="--limit",
        range=(1, None, False, False),
    )
    seed: int = opt(0, "random seed", flag="--seed", range=(0, None, False, False))
    no_progress: bool = opt(False, "no progress bars", switch=("--no-progress", True))


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on embedded synthetic data (no downloads)")
    from llm_unlearn.config.declare import add_flags

    add_flags(p, DemoOptions, declared_defaults=True)
    # accepted for compatibility, no effect: the demo replaces its own earlier output and nothing else
    p.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from llm_unlearn.config.declare import read_flags
    from llm_unlearn.demo import run_demo
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir

    if args.limit is not None and args.limit <= 0:  # the declared range, in the words users know
        raise UserError(f"--limit must be positive, got {args.limit}")
    o = read_flags(args, DemoOptions)
    # the demo's own earlier output is reused/replaced; any other non-empty directory is refused
    prepare_output_dir(o.output_dir, "demo", [o.data], overwrite=False, own_names=DEMO_OWN_NAMES)
    with DirectoryLock(o.output_dir):
        run_demo(
            o.output_dir,
            data=o.data,
            split=o.split,
            limit=o.limit,
            seed=o.seed,
            progress=not o.no_progress,
        )
    return 0
