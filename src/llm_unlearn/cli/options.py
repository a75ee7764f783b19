"""``llm-unlearn options [--markdown]``: every configuration option (key, flag, default, meaning),
generated from the declarations (``config/reference.py``)."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_options"]


def add_parser(sub) -> None:
    p = sub.add_parser("options", help="list every configuration option (key, flag, default, meaning)")
    p.add_argument("--markdown", action="store_true", help="the README's configuration table")
    p.set_defaults(func=cmd_options)


def cmd_options(args) -> int:
    from llm_unlearn.config.reference import markdown_table, plain_text

    print(markdown_table() if args.markdown else plain_text())
    return 0
