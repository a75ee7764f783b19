"""`llm-unlearn` command line: train, evaluate, attack, mmlu, sample, finetune, merge, demo, options, methods.

Errors a user can cause end in one line `error: ...` and exit code 2; `--debug` shows tracebacks;
Ctrl-C / SIGTERM end any subcommand with one `stopped: ...` line and exit code 3 (`cli/errors.py`).

Each subcommand is a module ``llm_unlearn.cli.<name>`` whose ``add_parser(sub)`` registers it with
``set_defaults(func=...)``; adding one is a module and a name in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from llm_unlearn import __version__

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS = (
    "train",
    "evaluate",
    "attack",
    "mmlu",
    "sample",
    "finetune",
    "merge",
    "demo",
    "options",
    "methods",
    "sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-unlearn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"llm-unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:  # also transformers' own bars ("Loading weights")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    import signal

    from llm_unlearn.cli.errors import install_sigterm, interrupted, run_guarded

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the libraries load
        return interrupted(None, "Ctrl-C (SIGINT)")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = args.debug or getattr(args, "debug_sub", False)
    _configure_logging(debug, args.quiet)
    old_term = install_sigterm()  # SIGTERM anywhere: exit 3 (train installs its own, finer handler)
    try:
        return run_guarded(args.func, args, debug=debug)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
