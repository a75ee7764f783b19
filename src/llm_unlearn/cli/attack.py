"""``llm-unlearn attack``: is it really forgotten? Quantization, relearning, prompt attacks and the
logit lens on an unlearned model, on a registered benchmark's data (``--benchmark semeval|tofu|muse``).

Flags: the model's (:class:`~llm_unlearn.evaluation.run.ModelSource`), the output flags, the attack
options (:class:`~llm_unlearn.attacks.options.AttackOptions`) and the chosen benchmark's options (its
data, ``--limit``, ...), all from their ``opt()`` declarations. Output policy: ``outputs.py``.
"""

from __future__ import annotations

from llm_unlearn.attacks.options import AttackOptions
from llm_unlearn.cli.common import add_model_flags, add_output_flags, read_model, read_output
from llm_unlearn.cli.evaluate import BenchmarkChoice, add_benchmark_groups, refuse_other_flags
from llm_unlearn.config.declare import add_flags, read_flags
from llm_unlearn.evaluation.benchmark import get_benchmark

__all__ = ["add_parser", "cmd_attack", "add_attack_flags"]


def add_attack_flags(parser_or_group, exclude=()) -> None:
    add_flags(parser_or_group, AttackOptions, exclude=exclude)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "attack",
        help="is it really forgotten? quantization, relearning, prompt attacks, logit lens",
        description="Attack an unlearned model (--model [--adapter]) against its target (--target-model, "
        "default: --model without the adapter) on a benchmark's forget and retain items; writes "
        "attack_summary.json, attack_items.jsonl, attack_timing.json, report.md and plots/ to --output-dir.",
    )
    add_model_flags(p)
    o = p.add_argument_group("output")
    add_output_flags(o)
    add_flags(o, BenchmarkChoice, helps={"benchmark": "semeval | tofu | muse"})
    add_attack_flags(p.add_argument_group("attacks"))
    add_benchmark_groups(p)
    p.set_defaults(func=cmd_attack)


def cmd_attack(args) -> int:
    from llm_unlearn.attacks.stage import run_attacks

    bench = get_benchmark(read_flags(args, BenchmarkChoice).benchmark)
    refuse_other_flags(args, bench)
    source = read_model(args)
    opts = read_flags(args, bench.options)
    attack_opts = read_flags(args, AttackOptions)
    out = read_output(args)
    summary = run_attacks(
        bench.name, source, opts, attack_opts, out.output_dir, overwrite=out.overwrite, progress=out.progress
    )
    for key, value in summary["headline"].items():
        print(f"{key}: {'undefined' if value is None else f'{value:.3f}'}")
    print(f"results in {out.output_dir}/ (attack_summary.json, report.md, plots/attack_recovery.png)")
    return 0
