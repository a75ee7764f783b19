"""`llm-unlearn finetune`: every flag generated from :class:`llm_unlearn.finetune.FinetuneOptions`."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the `finetune` subcommand on the subparsers `sub`."""
    from llm_unlearn.cli.common import RepeatableLists
    from llm_unlearn.config.declare import add_flags
    from llm_unlearn.finetune.options import FinetuneOptions

    p = sub.add_parser(
        "finetune",
        help="build a target model that has memorized the data (full fine-tuning or LoRA + merge)",
        description="Fine-tune a causal LM (or a fresh tiny OLMo-2: --model tiny) on records and documents, "
        "loss on every token, until a memorization criterion is met (--until-em) or for fixed epochs/steps.",
    )
    add_flags(RepeatableLists(p), FinetuneOptions, required=("model", "output_dir"))
    p.set_defaults(func=run)


def run(args) -> int:
    """Read the flags (checked against their declarations), fine-tune, print one line."""
    from llm_unlearn.config.declare import read_flags
    from llm_unlearn.finetune import finetune
    from llm_unlearn.finetune.options import FinetuneOptions

    s = finetune(read_flags(args, FinetuneOptions))
    f = s["final"]
    mem = ", ".join(f"{k} {f[k]:.3f}" for k in ("em", "rougeL") if f.get(k) is not None)
    print(
        f"done in {s['seconds']:.1f}s: {s['epochs']} epochs, {s['steps']} steps, stopped by {s['stopped']}; "
        f"loss {f.get('mean_loss', float('nan')):.4f}{'; ' + mem if mem else ''} -> {s['output_dir']}"
    )
    return 0
