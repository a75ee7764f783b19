"""``llm-unlearn methods [--json]``: every registered unlearning method — name, one-line summary,
source (paper / code), its own defaults (``config/presets.py`` METHOD_DEFAULTS) and whether it needs
the reference model. The same rows give the method list at the end of ``train --help``.

Everything comes from :func:`method_rows`, the one place that reads the registry."""

from __future__ import annotations

import json

__all__ = ["add_parser", "cmd_methods", "method_rows", "method_listing", "format_table"]


def method_rows() -> list[dict]:
    """One dict per registered method, in registration order: ``name``, ``summary``, ``source``,
    ``terms``, ``needs_reference`` (with the method's own defaults), ``defaults`` (dotted key -> value):
    the registry's ``describe()``."""
    from llm_unlearn.train.methods import describe

    return describe()


def _defaults_text(defaults: dict) -> str:
    if not defaults:
        return "the option defaults"
    return ", ".join(f"{k.removeprefix('objective.')}={v}" for k, v in defaults.items())


def format_table(rows: list[dict]) -> str:
    """The rows as a plain-text table: method, reference model?, summary; under each, its source and
    its own defaults."""
    width = max(len("method"), *(len(r["name"]) for r in rows))
    pad = " " * (width + 7)
    out = [f"{'method'.ljust(width)}  ref  summary"]
    for r in rows:
        ref = "yes" if r["needs_reference"] else "no "
        out.append(f"{r['name'].ljust(width)}  {ref}  {r['summary']}")
        out.append(f"{pad}source:   {r['source'] or '-'}")
        out.append(f"{pad}defaults: {_defaults_text(r['defaults'])}")
    return "\n".join(out)


def method_listing() -> str:
    """The end of ``train --help``: every method with its one-line summary."""
    rows = method_rows()
    width = max(len(r["name"]) for r in rows)
    lines = [f"  {r['name'].ljust(width)}  {r['summary']}" for r in rows]
    return (
        "methods (--method NAME; `llm-unlearn methods` shows sources, defaults and reference needs):\n"
        + "\n".join(lines)
    )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "methods",
        help="list the unlearning methods (summary, source, defaults, reference model)",
        description="Every method --method accepts: its one-line summary, source, its own defaults "
        "(applied where nothing else set them) and whether it needs the reference model.",
    )
    p.add_argument("--json", action="store_true", help="one JSON list of the rows instead of the table")
    p.set_defaults(func=cmd_methods)


def cmd_methods(args) -> int:
    rows = method_rows()
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_table(rows))
    return 0
