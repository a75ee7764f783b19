"""Every option of `finetune`, declared once (as `config/options.py` declares train's): the flags of
`llm-unlearn finetune` (`cli/finetune.py`, generated with `config.declare.add_flags`), the keyword
arguments of :func:`llm_unlearn.finetune.finetune` and the checks of every value come from here.

An option that means what one of train's means is that declaration (`same_as`): one default, one help
text, one flag. `finetune`'s own counts (epochs, steps, batch size, ...) keep their message
"--X must be positive"; every other value is checked by `config.declare.check_options`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from llm_unlearn.config.options import (
    DTYPES,
    DataOptions,
    LoraOptions,
    ModelOptions,
    TrainOptions,
    opt,
)
from llm_unlearn.errors import UserError

__all__ = ["BATCHINGS", "FinetuneOptions", "check", "same_as"]

# how the loop batches (finetune/loop.py): buckets = `data.batching.bucket_batches`, re-seeded every epoch;
# shuffle = one seeded torch permutation of the items per epoch, every batch padded to the longest item
# (the demo's memorization); sorted = items sorted by length cut once into batches, the batch order
# permuted every epoch (benchmarks/eval_bench.py)
BATCHINGS = ("buckets", "shuffle", "sorted")

_COUNT = (1, None, False, False)  # a count >= 1 (checked by `check`: "--X must be positive")


def same_as(cls, name: str, **changes):
    """A field declared like `cls.name` (default, help, flag, switch, choices, range, path), with
    `changes` (e.g. ``help=``) on top: the option IS that option, not a copy that may drift."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {k: f.metadata.get(k) for k in ("help", "flag", "switch", "choices", "range", "path", "own_check")}
    meta.update(changes)
    if f.default_factory is not dataclasses.MISSING:
        return opt(factory=f.default_factory, **meta)
    return opt(f.default, **meta)


def _own_count(default, help: str, flag: str):
    return opt(default, help, flag=flag, range=_COUNT, own_check=True)


@dataclass
class FinetuneOptions:
    """What `llm-unlearn finetune` (and :func:`llm_unlearn.finetune.finetune`) can be told."""

    # ---- model
    model: str = opt(
        "tiny", "model directory, hub id, or 'tiny' (fresh tiny OLMo-2)", flag="--model", path=True
    )
    gguf_file: str | None = same_as(ModelOptions, "gguf_file", help="GGUF file inside --model")
    tokenizer: str | None = same_as(ModelOptions, "tokenizer")
    dtype: str = opt(
        "auto",
        "weights: auto (float32 + bf16 autocast on GPU) | float32 | bfloat16",
        flag="--dtype",
        choices=DTYPES,
    )
    trust_remote_code: bool = same_as(ModelOptions, "trust_remote_code")
    allow_pickle: bool = same_as(ModelOptions, "allow_pickle")
    device: str | None = opt(None, "cuda, cpu, ... (default: the first GPU, else the CPU)")
    # ---- data
    data: str | None = same_as(DataOptions, "data", help="data directory (same layouts as train)")
    split: str | None = same_as(DataOptions, "split", help="split sub-directory of --data, e.g. train")
    forget: str | None = same_as(DataOptions, "forget")
    retain: str | None = same_as(DataOptions, "retain")
    records: list[str] | None = opt(
        help="any record file the data loader reads (repeatable)", flag="--records", factory=list
    )
    documents: list[str] | None = opt(
        help="plain documents: rows with a 'document' or 'text' field (repeatable)",
        flag="--documents",
        factory=list,
    )
    limit: int | None = same_as(DataOptions, "limit")
    joiner: str = same_as(DataOptions, "joiner")
    max_length: int | None = same_as(
        DataOptions, "max_length", help="cut texts to this many tokens (null: no cut)"
    )
    # ---- what is trained, and how long
    output_dir: str | None = same_as(TrainOptions, "output_dir")
    method: str = opt(
        "full", "full fine-tuning, or LoRA then merge", flag="--method", choices=("full", "lora")
    )
    epochs: int | None = _own_count(None, "fixed number of epochs (cap with --until-em)", "--epochs")
    max_steps: int | None = _own_count(
        None, "fixed number of optimizer steps (cap with --until-em)", "--max-steps"
    )
    until_em: float | None = opt(
        None,
        "stop once EM (qa) and ROUGE-L recall (sc) on the sample both reach X (checked each epoch)",
        flag="--until-em",
        range=(0, 1, True, False),
    )
    eval_items: int = _own_count(16, "records in the memorization sample", "--eval-items")
    eval_every: int = _own_count(
        1, "with --until-em: check memorization every N epochs (without it: once, at the end)", "--eval-every"
    )
    lr: float | None = opt(
        None, "default: 3e-3 tiny, 2e-5 full, 2e-4 lora", flag="--lr", range=(0, None, True, False)
    )
    batch_size: int = _own_count(16, "texts per optimizer step", "--batch-size")
    max_batch_tokens: int | None = _own_count(None, "cap on batch size x longest text", "--max-batch-tokens")
    batching: str = opt(
        "buckets",
        "buckets (length buckets, re-seeded each epoch) | shuffle (the demo's: a seeded permutation, "
        "padded to the longest text) | sorted (batches cut once by length, their order shuffled)",
        choices=BATCHINGS,
    )
    warmup_steps: int | None = opt(
        None, "linear warm-up steps (null: min(20, max(1, steps // 10)))", range=(1, None, False, False)
    )
    lr_floor: float = opt(
        0.1, "a fixed budget decays the LR linearly to this fraction of --lr", range=(0, 1, False, False)
    )
    seed: int = opt(0, "one seed for everything", flag="--seed", range=(0, 2**32 - 1, False, False))
    # ---- LoRA (method lora)
    lora_r: int = same_as(LoraOptions, "r")
    lora_alpha: int = same_as(LoraOptions, "alpha")
    # ---- the tiny model (model tiny)
    tiny_hidden: int = _own_count(128, "hidden size of the tiny model", "--tiny-hidden")
    tiny_layers: int = _own_count(4, "layers of the tiny model", "--tiny-layers")
    tiny_intermediate: int | None = opt(
        None, "MLP size of the tiny model (null: 4 x hidden)", range=(1, None, False, False)
    )
    vocab_size: int = _own_count(1024, "tiny tokenizer vocabulary", "--vocab-size")
    extra_tokenizer_texts: list[str] | None = opt(
        help="texts the tiny tokenizer is also trained on (not the model), e.g. holdout documents",
        factory=list,
    )
    # ---- output
    overwrite: bool = same_as(TrainOptions, "overwrite", help="replace a non-empty --output-dir")
    progress: bool = same_as(TrainOptions, "progress")
    return_model: bool = opt(
        False, "the returned summary also holds model_object and tokenizer_object (library only)"
    )

    def __post_init__(self) -> None:
        # the library is called with pathlib paths and tuples: stored as the declared str / list
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (list, tuple)):
                v = [_plain(x) for x in v]
            elif v is None and f.name in _LISTS:
                v = []
            setattr(self, f.name, _plain(v))


_LISTS = ("records", "documents", "extra_tokenizer_texts")  # None given: an empty list


def _plain(x):
    return os.fspath(x) if isinstance(x, os.PathLike) else x


def check(o: FinetuneOptions) -> None:
    """Every value of `o` against its declaration: finetune's own counts with "--X must be positive"
    (UserError), everything else by `config.declare.check_options` (ConfigError naming the flag)."""
    from llm_unlearn.config.declare import check_options, fields_of, flag_name
    from llm_unlearn.config.validate import _type_error

    for f, hint in fields_of(type(o)):
        if not f.metadata.get("own_check"):
            continue
        value, name = getattr(o, f.name), flag_name(f)
        err = _type_error(name, value, hint)
        if err:
            raise UserError(err)
        if value is not None and value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    check_options(o)
