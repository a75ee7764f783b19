"""Any subcommand's options as a dataclass of `opt()` fields: its command-line flags, and one check of
every value against its declaration.

`config/options.py` declares the unlearning run's options; every other subcommand (evaluate, mmlu,
sample, finetune, merge, demo, ...) declares its own in a dataclass of `opt()` fields the same way, and
gets from here:

- ``add_flags(parser, cls)``: one argparse flag per declared ``flag`` / ``switch`` (defaults are None
  in argparse, so "not given" is known; ``list[...]`` types take ``nargs='+'``; ``int`` / ``float``
  flags parse as numbers); with ``declared_defaults=True`` the namespace holds the declared defaults
  instead (a subcommand with no configuration layer below its flags: ``args.NAME`` is the value);
- ``read_flags(args, cls, **base)``: the dataclass instance (given flags over ``base`` over the
  declared defaults), checked by ``check_options``;
- ``check_options(obj)``: every value against its declared type, choices, range and path rule (the
  same rules as ``validate()`` of a training config: numbers finite, a bool is never a number, an int
  takes no fraction); one ``ConfigError`` line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping
from typing import Any

from llm_unlearn.config.options import type_hints
from llm_unlearn.config.validate import _check_range, _type_error
from llm_unlearn.errors import ConfigError

__all__ = ["fields_of", "add_flags", "read_flags", "check_options", "flag_name", "choices_of"]


def fields_of(cls) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every declared field of the dataclass `cls`, in declaration order."""
    hints = type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def flag_name(f: dataclasses.Field) -> str:
    """How an error names the option: its flag, else its switch, else the field name."""
    m = f.metadata
    if m.get("flag"):
        return m["flag"]
    if m.get("switch"):
        return m["switch"][0]
    return f.name


def _kinds(hint) -> list:
    return [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]


def _number(kind):
    """argparse type for an int / float flag: one clear message on a non-number; the range (and
    finiteness) is checked afterwards by check_options, with the flag named."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The declared choices of a field: a tuple, or a callable returning them (resolved now: e.g. the
    names in a registry that grows at run time); None for free values (a string such as
    ``"objectives"`` is resolved by validate() and is None here)."""
    choices = f.metadata.get("choices")
    if callable(choices):
        choices = tuple(choices())
    return choices if isinstance(choices, tuple) else None


def _help(f: dataclasses.Field, text: str | None = None) -> str:
    m, default = f.metadata, _default(f)
    text = m.get("help", "") if text is None else text
    text = _escape(text)  # argparse %-formats help texts: "Min-K%" would fail
    if default is None or isinstance(default, bool) or m.get("switch"):
        return text
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default {shown})"


def _escape(text: str | None) -> str | None:
    return text if text is None or "%%" in text else text.replace("%", "%%")


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def add_flags(
    parser,
    cls,
    *,
    required: tuple[str, ...] = (),
    dest_prefix: str = "",
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    helps: Mapping[str, str] | None = None,
    declared_defaults: bool = False,
) -> None:
    """Add a flag for every field of `cls` that declares one (`flag=` or `switch=`). Fields named in
    `required` are required flags. Destinations are ``dest_prefix + field name``. `only` / `exclude`:
    just these fields / all but these (to spread one class over argument groups); `helps`: another
    help text for some fields (field name -> text, e.g. what ``--adapter`` means for one command).
    Argparse defaults are None ("not given", so ``read_flags``' ``base`` can fill them), or with
    `declared_defaults` the declared defaults (then a ``base`` given to ``read_flags`` is always
    overridden)."""
    helps = helps or {}
    for f, hint in fields_of(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        m = f.metadata
        dest = dest_prefix + f.name
        default = _default(f) if declared_defaults else None
        text = helps.get(f.name)
        if m.get("switch"):
            flag, value = m["switch"]
            shown = m.get("help") if text is None else text
            parser.add_argument(
                flag, dest=dest, action="store_const", const=value, default=default, help=_escape(shown)
            )
            continue
        if not m.get("flag"):
            continue
        kw: dict[str, Any] = {"dest": dest, "default": default, "help": _help(f, text)}
        kind = _kinds(hint)[0] if _kinds(hint) else str
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            kw["nargs"] = "+"
            if item in (int, float):
                kw["type"] = _number(item)
        elif kind in (int, float):
            kw["type"] = _number(kind)
        choices = choices_of(f)
        if choices is not None:
            kw["choices"] = list(choices)
        if f.name in required:
            kw["required"] = True
        parser.add_argument(m["flag"], **kw)


def read_flags(args, cls, *, dest_prefix: str = "", **base):
    """The `cls` instance from parsed `args`: a given flag wins over `base`, which wins over the
    declared default; every value is checked (ConfigError, one line, naming the flag)."""
    values = dict(base)
    for f, _ in fields_of(cls):
        v = getattr(args, dest_prefix + f.name, None)
        if v is not None:
            values[f.name] = v
    obj = cls(**values)
    check_options(obj)
    return obj


def check_options(obj) -> None:
    """Every field of the dataclass instance `obj` against its declaration: type, choices, range, and
    no empty string for a path. Raises ConfigError naming the flag."""
    for f, hint in fields_of(type(obj)):
        m, value = f.metadata, getattr(obj, f.name)
        if m.get("own_check"):
            continue
        name = flag_name(f)
        err = _type_error(name, value, hint)
        if err:
            raise ConfigError(err)
        if value is None:
            continue
        if m.get("path") and value == "":
            raise ConfigError(f"option {name} is an empty string; leave it out or give a path")
        choices = choices_of(f)
        if choices is not None and value not in choices:
            raise ConfigError(f"option {name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        bounds = m.get("range")
        if bounds is not None:
            for item in value if isinstance(value, list) else [value]:
                _check_range(name, item, bounds)
