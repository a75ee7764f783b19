"""The `llm-unlearn finetune` subcommand: its argument parser and its handler."""

from __future__ import annotations

from llm_unlearn.finetune.core import finetune

__all__ = ["add_finetune_parser", "cmd_finetune"]


def add_finetune_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="build a target model that has memorized the data (full fine-tuning or LoRA + merge)",
        description="Fine-tune a causal LM (or a fresh tiny OLMo-2: --model tiny) on records and documents, "
        "loss on every token, until a memorization criterion is met (--until-em) or for fixed epochs/steps.",
    )
    p.add_argument("--model", required=True, help="model directory, hub id, or 'tiny' (fresh tiny OLMo-2)")
    p.add_argument("--gguf-file", default=None, help="GGUF file inside --model")
    p.add_argument("--tokenizer", default=None, help="tokenizer (default: the model's)")
    p.add_argument("--data", default=None, help="data directory (same layouts as train)")
    p.add_argument("--split", default=None, help="split sub-directory of --data, e.g. train")
    p.add_argument("--forget", default=None, help="forget file")
    p.add_argument("--retain", default=None, help="retain file")
    p.add_argument(
        "--records",
        action="append",
        default=[],
        metavar="FILE",
        help="any record file the data loader reads (repeatable)",
    )
    p.add_argument(
        "--documents",
        action="append",
        default=[],
        metavar="FILE",
        help="plain documents: rows with a 'document' or 'text' field (repeatable)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most N forget and N retain records, whole SemEval units (see README)",
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument("--method", default="full", choices=["full", "lora"])
    p.add_argument("--epochs", type=int, default=None, help="fixed number of epochs (cap with --until-em)")
    p.add_argument(
        "--max-steps", type=int, default=None, help="fixed number of optimizer steps (cap with --until-em)"
    )
    p.add_argument(
        "--until-em",
        type=float,
        default=None,
        metavar="X",
        help="stop once EM (qa) and ROUGE-L recall (sc) on the sample both reach X (checked each epoch)",
    )
    p.add_argument(
        "--eval-items", type=int, default=16, help="records in the memorization sample (default 16)"
    )
    p.add_argument("--eval-every", type=int, default=1, help="check memorization every N epochs (default 1)")
    p.add_argument("--lr", type=float, default=None, help="default: 3e-3 tiny, 2e-5 full, 2e-4 lora")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512, help="cut texts to this many tokens")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="cap on batch size x longest text")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--tiny-hidden", type=int, default=128)
    p.add_argument("--tiny-layers", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=1024, help="tiny tokenizer vocabulary")
    p.add_argument("--joiner", default=" ", help="text between input and output (default: one space)")
    p.add_argument(
        "--dtype", default="auto", help="weights: auto (float32 + bf16 autocast on GPU) | float32 | bfloat16"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    s = finetune(
        model=args.model,
        gguf_file=args.gguf_file,
        tokenizer=args.tokenizer,
        data=args.data,
        split=args.split,
        forget=args.forget,
        retain=args.retain,
        records=args.records,
        documents=args.documents,
        limit=args.limit,
        output_dir=args.output_dir,
        method=args.method,
        epochs=args.epochs,
        max_steps=args.max_steps,
        until_em=args.until_em,
        eval_items=args.eval_items,
        eval_every=args.eval_every,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_batch_tokens=args.max_batch_tokens,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        tiny_hidden=args.tiny_hidden,
        tiny_layers=args.tiny_layers,
        vocab_size=args.vocab_size,
        joiner=args.joiner,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    f = s["final"]
    mem = ", ".join(f"{k} {f[k]:.3f}" for k in ("em", "rougeL") if f.get(k) is not None)
    print(
        f"done in {s['seconds']:.1f}s: {s['epochs']} epochs, {s['steps']} steps, stopped by {s['stopped']}; "
        f"loss {f.get('mean_loss', float('nan')):.4f}{'; ' + mem if mem else ''} -> {s['output_dir']}"
    )
    return 0
