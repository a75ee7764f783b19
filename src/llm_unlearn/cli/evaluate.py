"""``llm-unlearn evaluate --benchmark NAME``: any registered benchmark through the one runner.

The flags come from the declarations: the model's (:class:`~llm_unlearn.evaluation.run.ModelSource`),
the output flags, and every registered benchmark's options, each benchmark in its own argument group
(a flag shared by several benchmarks, e.g. ``--data``, appears once, in the group of the first). A flag
of another benchmark than the chosen one is refused with one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from llm_unlearn.cli.common import add_model_flags, add_output_flags, read_model, read_output
from llm_unlearn.config.declare import add_flags, flag_name, read_flags
from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.benchmark import all_benchmarks, benchmark_names, get_benchmark

__all__ = ["add_parser", "cmd_evaluate", "BenchmarkChoice", "add_benchmark_groups", "refuse_other_flags"]


def _benchmark_help() -> str:
    return "; ".join(f"{b.name}: {b.summary}" for b in all_benchmarks())


@dataclass
class BenchmarkChoice:
    benchmark: str = opt("semeval", "", flag="--benchmark", choices=benchmark_names)


def _flagged(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag") or f.metadata.get("switch")]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="SemEval-2025 Task 4 evaluation (regurgitation, knowledge, MIA, MMLU, aggregate) or another "
        "registered benchmark (--benchmark)",
        description="Evaluate a model exactly as the SemEval-2025 Task 4 organizers score it (or on another "
        "benchmark: --benchmark). SemEval writes evaluation_results.json(l), generations.jsonl, mia.jsonl, "
        "report.md and plots/ to --output-dir.",
    )
    add_model_flags(p)
    o = p.add_argument_group("evaluation")
    add_output_flags(o)
    add_flags(o, BenchmarkChoice, helps={"benchmark": _benchmark_help()})
    add_benchmark_groups(p)
    from llm_unlearn.attacks.options import AttackOptions

    add_flags(
        p.add_argument_group(
            "attacks after the benchmark (--attacks LIST: the `attack` stage, into OUT/attacks/)"
        ),
        AttackOptions,
    )
    p.set_defaults(func=cmd_evaluate)


def add_benchmark_groups(p) -> None:
    """Every registered benchmark's options, each benchmark in its own argument group."""
    seen: set[str] = set()
    for bench in all_benchmarks():
        fields = [f for f in _flagged(bench.options) if f.name not in seen]
        shared = [flag_name(f) for f in _flagged(bench.options) if f.name in seen]
        also = f" Also: {', '.join(shared)}." if shared else ""
        g = p.add_argument_group(f"--benchmark {bench.name}", f"{bench.summary}.{also}")
        grouped = {n for group in bench.exclusive for n in group}
        for group in bench.exclusive:
            names = [n for n in group if n not in seen]
            if names:
                add_flags(g.add_mutually_exclusive_group(), bench.options, only=names)
        add_flags(g, bench.options, only=[f.name for f in fields if f.name not in grouped])
        seen.update(f.name for f in fields)


def refuse_other_flags(args, chosen) -> None:
    """A flag that only other benchmarks than `chosen` declare, given: one UserError line."""
    own = {f.name for f in dataclasses.fields(chosen.options)}
    for bench in all_benchmarks():
        for f in _flagged(bench.options):
            if f.name in own or getattr(args, f.name, None) is None:
                continue
            owners = [
                b.name for b in all_benchmarks() if f.name in {x.name for x in dataclasses.fields(b.options)}
            ]
            raise UserError(f"{flag_name(f)} is for --benchmark {' / '.join(owners)} only")


def cmd_evaluate(args) -> int:
    from llm_unlearn.evaluation.run import run_evaluation

    choice = read_flags(args, BenchmarkChoice)
    bench = get_benchmark(choice.benchmark)
    refuse_other_flags(args, bench)
    source = read_model(args)
    opts = read_flags(args, bench.options)
    out = read_output(args)
    attack_opts = _attack_options(args, bench, source, opts)  # checked before the evaluation runs
    summary = run_evaluation(
        bench.name, source, opts, out.output_dir, overwrite=out.overwrite, progress=out.progress
    )
    print(bench.text(summary, Path(out.output_dir)))
    if attack_opts is not None:
        from llm_unlearn.attacks.stage import run_attacks

        attacked = run_attacks(
            bench.name,
            source,
            opts,
            attack_opts,
            out.output_dir,
            overwrite=out.overwrite,
            progress=out.progress,
            kind="evaluate",
            subdir="attacks",
        )
        for key, value in attacked["headline"].items():
            print(f"{key}: {'undefined' if value is None else f'{value:.3f}'}")
        print(f"attack results in {Path(out.output_dir) / 'attacks'}/")
    return 0


def _attack_options(args, bench, source, opts):
    """The attack stage's options when ``--attacks`` was given (every check done now), else None; an
    attack flag without ``--attacks`` is one UserError."""
    from llm_unlearn.attacks.options import AttackOptions
    from llm_unlearn.attacks.stage import check_attack_inputs

    given = [f.name for f in dataclasses.fields(AttackOptions) if getattr(args, f.name, None) is not None]
    if "attacks" not in given:
        if given:
            field = next(f for f in dataclasses.fields(AttackOptions) if f.name == given[0])
            raise UserError(f"{flag_name(field)} needs --attacks LIST")
        return None
    attack_opts = read_flags(args, AttackOptions)
    check_attack_inputs(bench.name, source, opts, attack_opts)
    return attack_opts
