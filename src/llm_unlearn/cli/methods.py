"""``llm-unlearn methods [--json]``: every registered unlearning method — name, one-line summary,
source (paper / code), its own defaults (``config/presets.py`` METHOD_DEFAULTS) and whether it needs
the reference model. The same rows give the method list at the end of ``train --help``.

Everything comes from :func:`method_rows`, the one place that reads the registry."""

from __future__ import annotations

import json

__all__ = ["add_parser", "cmd_methods", "method_rows", "method_listing", "format_table", "SOURCES"]

# the "source" column of the README's Methods table (tests/cli/test_methods_cli.py keeps them equal)
SOURCES = {
    "npo_rt_div": "Clausen (2025), SemEval-2025 Task 4; the Rényi divergence replaces the seed's "
    "token-level term (this project)",
    "npo": "Zhang et al. 2024 (arXiv:2404.05868); OU `NPO.yaml`",
    "gradient_ascent": "baseline; OU `GradAscent`",
    "gradient_difference": "baseline; OU `GradDiff`",
    "sugd": "AILS-NTUA, SemEval-2025 Task 4 (the `ails-ntua` preset)",
    "simnpo": "Fan et al. 2024 (arXiv:2410.07163); OU `SimNPO.yaml`",
    "idk_dpo": "Rafailov et al. 2023; OU `DPO.yaml`, `tofu/idk.yaml`",
    "altpo": "Mekala et al. 2024 (arXiv:2409.13474); OU `community/methods/AltPO`",
    "rmu": "Li et al. 2024, WMDP (arXiv:2403.03218); OU `RMU.yaml`",
    "undial": "Dong et al., NAACL 2025 (arXiv:2402.10052); OU `UNDIAL.yaml`",
    "ce_u": "Yang 2025 (arXiv:2503.01224); OU `CEU.yaml`",
    "wga": "Wang et al., ICLR 2025 (arXiv:2502.19301); OU `WGA.yaml`",
    "satimp": "Yang et al., ICML 2025 (arXiv:2505.11953); OU `SatImp.yaml`",
    "pdu": "Entesari et al. 2025 (arXiv:2506.05314); OU `PDU.yaml`",
}


def method_rows() -> list[dict]:
    """One dict per registered method, in registration order: ``name``, ``summary``, ``source``,
    ``terms``, ``needs_reference`` (with the method's own defaults), ``defaults`` (dotted key -> value).

    Built on today's registry (``train/objectives.py``); the shape is the one of the coming
    ``train/registry.describe()``, which this function is meant to return."""
    import dataclasses

    from llm_unlearn.config.options import ObjectiveOptions
    from llm_unlearn.config.presets import METHOD_DEFAULTS
    from llm_unlearn.train.objectives import OBJECTIVES

    rows = []
    for name, objective in OBJECTIVES.items():
        defaults = dict(METHOD_DEFAULTS.get(name, {}))
        own = {k.split(".", 1)[1]: v for k, v in defaults.items() if k.startswith("objective.")}
        options = dataclasses.replace(ObjectiveOptions(), method=name, **own)
        rows.append(
            {
                "name": name,
                "summary": objective.summary,
                "source": SOURCES.get(name, ""),
                "terms": list(objective.terms),
                "needs_reference": bool(objective.needs(options).any),
                "defaults": defaults,
            }
        )
    return rows


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
