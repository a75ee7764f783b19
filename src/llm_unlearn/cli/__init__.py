"""`llm-unlearn` command line: train, demo, merge, finetune, evaluate, mmlu, sample.

Errors a user can cause end in one line `error: ...` and exit code 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import yaml

from llm_unlearn import __version__
from llm_unlearn.errors import NonFiniteLossError, TrainingInterrupted, UserError


def train_flags() -> list[tuple[str, str, dict[str, Any]]]:
    """(flag, dotted config key, argparse keywords) of every option that has a flag: generated from the
    option declarations (config/options.py), plus the old flags as hidden aliases."""
    import typing

    from llm_unlearn.config.options import FLAG_ALIASES, option_specs

    out = []
    for spec in option_specs(resolve_choices=False):
        if spec.flag is None:
            continue
        kw: dict[str, Any] = {"help": _flag_help(spec)}
        kinds = [t for t in typing.get_args(spec.type) or (spec.type,) if t is not type(None)]
        if kinds and kinds[0] in (int, float) and spec.key != "calibration.eval_every":
            kw["type"] = kinds[0]
        if spec.choices is not None:
            kw["choices"] = list(spec.choices)
        out.append((spec.flag, spec.key, kw))
    by_flag = {flag: (key, kw) for flag, key, kw in out}
    for old, new in FLAG_ALIASES.items():
        key, kw = by_flag[new]
        out.append((old, key, {**kw, "help": argparse.SUPPRESS}))
    return out


def train_switches() -> list[tuple[str, str, Any, str]]:
    """(flag, dotted key, value it sets, help) of every boolean option with a switch flag."""
    from llm_unlearn.config.options import option_specs

    return [
        (s.switch[0], s.key, s.switch[1], s.help) for s in option_specs(resolve_choices=False) if s.switch
    ]


def _flag_help(spec) -> str:
    default = spec.default if not isinstance(spec.default, list) else ",".join(spec.default)
    return (
        f"{spec.help} (default {default!r}; {spec.key})"
        if default is not None
        else f"{spec.help} ({spec.key})"
    )


def _parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="unlearn a forget set (LoRA + NPO + retain NLL + divergence, chunked)",
        description="Unlearn the forget set. Options: defaults < --preset < --config YAML < flags.",
    )
    p.add_argument(
        "--config", help="YAML file with sections model/data/lora/objective/schedule/train/training_args"
    )
    p.add_argument("--preset", help="default | clausen2025 | atyaephyra | ails-ntua")
    for flag, key, kw in train_flags():
        p.add_argument(flag, dest=_dest(flag, key), default=None, **kw)
    for flag, key, value, helptext in train_switches():
        p.add_argument(flag, dest=key, action="store_const", const=value, default=None, help=helptext)
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="any config option (repeatable)"
    )
    p.add_argument(
        "--training-arg",
        action="append",
        metavar="KEY=VALUE",
        help="any transformers.TrainingArguments field, e.g. bf16=true (repeatable)",
    )
    p.set_defaults(func=cmd_train)


def train_overrides(args) -> dict[str, Any]:
    from llm_unlearn.config.options import FLAG_ALIASES

    over: dict[str, Any] = {}
    for flag, key, _ in train_flags():
        v = getattr(args, _dest(flag, key), None)
        if v is None:
            continue
        if flag in FLAG_ALIASES:  # an old flag: still read, with a warning
            logging.getLogger(__name__).warning("%s is deprecated; use %s", flag, FLAG_ALIASES[flag])
            if over.get(key) is not None:
                continue  # the new flag, given too, wins
        over[key] = v
    for _, key, _, _ in train_switches():
        v = getattr(args, key, None)
        if v is not None:
            over[key] = v
    over.update(_parse_kv(args.set, "--set"))
    ta = _parse_kv(args.training_arg, "--training-arg")
    if ta:
        over["training_args"] = ta
    return over


def _dest(flag: str, key: str) -> str:
    """The argparse destination of a flag: its config key; an old (aliased) flag gets its own, so that
    train_overrides knows it was used."""
    from llm_unlearn.config.options import FLAG_ALIASES

    return f"{key}|{flag}" if flag in FLAG_ALIASES else key


def cmd_train(args) -> int:
    from llm_unlearn.config import build_config
    from llm_unlearn.io_utils import atomic_write_text
    from llm_unlearn.train.loop import run_unlearning
    from llm_unlearn.train.process import is_main_process

    cfg = build_config(args.config, train_overrides(args), preset=args.preset)
    if not cfg.model.name_or_path:
        raise UserError("no model given (use --model PATH or model.name_or_path in --config)")
    if not (cfg.data.data or cfg.data.forget):
        raise UserError("no data given (use --data DIR or --forget FILE [--retain FILE])")
    if not cfg.train.output_dir:
        raise UserError("no output directory given (use --output-dir DIR)")
    summary = run_unlearning(cfg)  # TrainingInterrupted -> "stopped: ...", exit 3 (main)
    if is_main_process():
        from pathlib import Path

        atomic_write_text(
            Path(cfg.train.output_dir) / "resolved_config.yaml",
            yaml.safe_dump(cfg.to_dict(), sort_keys=False),
        )
        print(
            f"done in {summary.get('wall_seconds', 0):.1f}s: {summary.get('chunk_count')} chunks, "
            f"{summary.get('total_steps')} steps -> {cfg.train.output_dir}"
        )
    _end_process_group()
    return 0


def _end_process_group() -> None:
    """Under accelerate / torchrun: every process waits for the others (rank 0 writes the outputs last),
    then the process group is torn down in order. A rank that exits while the group's communication
    threads still run can abort at exit ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on embedded synthetic data (no downloads)")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--data", help="run on real SemEval-format data instead of the synthetic set")
    p.add_argument("--split", default=None, help="split sub-directory of --data, e.g. train")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most N forget and N retain records of --data, whole units (see README)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)


DEMO_OWN_NAMES = ("data", "target-model", "eval-before", "unlearned", "eval-after", "demo.json", "plots")


def cmd_demo(args) -> int:
    from llm_unlearn.demo import run_demo
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir

    if args.limit is not None and args.limit <= 0:
        raise UserError(f"--limit must be positive, got {args.limit}")
    # the demo's own earlier output is reused/replaced; any other non-empty directory is refused
    prepare_output_dir(args.output_dir, "demo", [args.data], overwrite=False, own_names=DEMO_OWN_NAMES)
    with DirectoryLock(args.output_dir):
        run_demo(
            args.output_dir,
            data=args.data,
            split=args.split,
            limit=args.limit,
            seed=args.seed,
            progress=not args.no_progress,
        )
    return 0


def add_merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge a LoRA adapter into its base model and save it")
    p.add_argument("--model", required=True, help="base model directory or hub id")
    p.add_argument("--adapter", required=True, help="adapter directory (DIR/adapter of a train run)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle weights (.bin) if no safetensors")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a directory holding other files (they are kept; same-named files are replaced)",
    )
    p.set_defaults(func=cmd_merge)


def cmd_merge(args) -> int:
    from pathlib import Path

    from llm_unlearn.modeling import attach_adapter, load_model, load_tokenizer, merge_and_save
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, read_marker

    out = Path(args.output_dir)
    prepare_output_dir(out, "merge", [args.model, args.adapter], overwrite=args.overwrite, create=False)
    # the lock lives beside the directory: a merge replaces the directory as a whole
    with DirectoryLock(out, sibling=True):
        prepare_output_dir(out, "merge", [args.model, args.adapter], overwrite=args.overwrite, create=False)
        ours = not out.exists() or not any(out.iterdir()) or (read_marker(out) or {}).get("kind") == "merge"
        tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
        model = load_model(
            args.model,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            allow_pickle=args.allow_pickle,
        )
        merge_and_save(
            attach_adapter(model, args.adapter, allow_pickle=args.allow_pickle),
            tok,
            out,
            marker_kind="merge",
            replace_dir=ours,
        )
    print(f"merged model written to {args.output_dir}")
    return 0


def add_options_parser(sub) -> None:
    p = sub.add_parser("options", help="list every configuration option (key, flag, default, meaning)")
    p.add_argument("--markdown", action="store_true", help="the README's configuration table")
    p.set_defaults(func=cmd_options)


def cmd_options(args) -> int:
    from llm_unlearn.config.reference import markdown_table, plain_text

    print(markdown_table() if args.markdown else plain_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-unlearn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"llm-unlearn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub)
    add_demo_parser(sub)
    add_merge_parser(sub)
    add_options_parser(sub)
    from llm_unlearn.cli import finetune as finetune_command

    finetune_command.add_parser(sub)
    try:
        from llm_unlearn.evaluation.commands import add_subcommands
    except ImportError:  # pragma: no cover - only while the package is partially installed
        add_subcommands = None
    if add_subcommands is not None:
        add_subcommands(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


_OOM_HINT = (
    "lower --batch-size (--grad-accum keeps the global batch), or --training-arg "
    "gradient_checkpointing=true, or a smaller --max-length"
)


def known_failure(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for a failure of the machine or of a file rather than of llm-unlearn:
    disk full, permission denied, corrupt or truncated safetensors, CUDA asked for but absent, out of
    memory. None for anything else (a bug: its traceback is kept)."""
    import errno

    text = _one_line(exc)
    low = text.lower()
    name = type(exc).__name__
    if (
        isinstance(exc, MemoryError)
        or name == "OutOfMemoryError"
        or "out of memory" in low
        or "can't allocate memory" in low
        or "cannot allocate memory" in low
    ):
        return f"out of memory ({text[:200]}): {_OOM_HINT}", 1
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "no space left on device" in low:
        return f"disk full: {text[:300]} (free space or use another --output-dir)", 1
    if (
        isinstance(exc, PermissionError)
        or (isinstance(exc, OSError) and exc.errno == errno.EACCES)
        or "permission denied" in low
    ):
        return f"permission denied: {text[:300]}", 1
    if (
        name == "SafetensorError"
        or "deserializing header" in low
        or "safetensors" in low
        and ("invalid" in low or "incomplete" in low or "truncat" in low or "metadata" in low)
    ):
        return (
            f"a safetensors file is corrupt or truncated: {text[:300]} (rewrite it, e.g. rerun what produced it)",
            1,
        )
    if ("cuda" in low or "nvidia" in low) and (
        "not compiled" in low or "no cuda gpus" in low or "driver" in low or "not available" in low
    ):
        return (
            f"CUDA was asked for but is not usable here: {text[:200]} (use --device cpu, or a machine with a GPU)",
            1,
        )
    if isinstance(exc, OSError):
        return f"{text} (--debug shows where)", 1
    return None


def _interrupt_handler(signum, frame):
    raise TrainingInterrupted(
        f"interrupted by signal {signum}; every output is written atomically, nothing is "
        "half-written. Run the same command again to resume."
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = args.debug or getattr(args, "debug_sub", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.quiet:  # also transformers' own bars ("Loading weights")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    import signal

    try:  # SIGTERM anywhere: exit 3 with the resume message (train installs its own, finer handler)
        old_term = signal.signal(signal.SIGTERM, _interrupt_handler)
    except ValueError:  # not the main thread
        old_term = None
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:
        print(f"stopped: {_one_line(exc)}", file=sys.stderr)
        return 3
    except (UserError, NonFiniteLossError) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the machine's side (disk full, permission denied, OOM, ...): one line too
        known = known_failure(exc)
        if debug or known is None:
            raise
        print(f"error: {known[0]}", file=sys.stderr)
        return known[1]
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
