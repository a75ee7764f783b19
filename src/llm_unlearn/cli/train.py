"""``llm-unlearn train``: its flags, generated from the option declarations (``config/options.py``),
and the command. ``train --help`` lists every registered method (read from the registry only when the
help is shown, so building the parser stays cheap)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import yaml

from llm_unlearn.errors import UserError

__all__ = ["add_parser", "cmd_train", "train_flags", "train_switches", "train_overrides"]


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


class _HelpWithMethods(argparse.Action):
    """``-h/--help`` of train: the help, then every registered method with its one-line summary. The
    registry (which imports torch) is read here, only when the help is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from llm_unlearn.cli.methods import method_listing

        parser.epilog = method_listing()
        parser.print_help()
        parser.exit()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="unlearn a forget set (LoRA + NPO + retain NLL + divergence, chunked)",
        description="Unlearn the forget set. Options: defaults < --preset < --config YAML < flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_HelpWithMethods, help="show this help message and exit")
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
    if args.config:  # the config file is an input like the data: never inside the output
        from llm_unlearn.outputs import check_not_input

        check_not_input(cfg.train.output_dir, [args.config], "output directory")
    summary = run_unlearning(cfg)  # TrainingInterrupted -> "stopped: ...", exit 3 (cli.errors)
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
    threads still run can abort at exit ("terminate called without an active exception"). The sharded
    model's reference cycles hold the group: collected first, so that the teardown here is the real one."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
