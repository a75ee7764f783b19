"""`llm-unlearn finetune`: build a target model that has memorized the data (what the SemEval organizers
and TOFU do before anyone unlearns).

Data flow:

    records (forget/retain layouts, --records files) + plain documents (--documents)
        -> one text per item: prompt + joiner + answer + EOS for a record, document + EOS for a document;
           the loss is on EVERY token (the model memorizes prompts too, as a pretraining corpus would)
        -> length buckets: items sorted by length, cut into batches of similar length (optionally capped
           in tokens per batch), batch order shuffled each epoch (seeded), see :func:`llm_unlearn.data.batching.bucket_batches`
           (``batching``: the other orders of the trainer, ``finetune/loop.epoch_batches``)
        -> full fine-tuning, or LoRA then merge (``method="lora"``): the one trainer, ``trainer.train_model``
           (AdamW, warm-up, constant or linear decay: ``loop.make_optimizer``)
        -> after every epoch: mean loss, and with ``until_em`` the memorization of a seeded sample of K
           records (greedy generation: exact match for qa items, ROUGE-L recall for sc items); training
           stops when both reach ``until_em``, or after ``epochs`` / ``max_steps``
        -> OUT/ (safetensors + tokenizer, loadable by ``train`` and ``evaluate``) + OUT/finetune.json.

``model="tiny"`` trains a byte-level BPE tokenizer on the texts and builds a fresh tiny OLMo-2 (no
download); any other value is loaded like ``train``'s ``--model`` (GGUF included, see
:func:`llm_unlearn.modeling.clear_gguf_quantization`).

``limit`` slices with :func:`llm_unlearn.data.slices.slice_records` (whole SemEval units, round-robin over
tasks), applied to forget, retain and the ``records`` files each; a document whose id is the unit id of a
record in the data is kept only when that unit was taken (a member document goes with its forget records),
and of the other documents the first ``limit`` are kept.

Options: :class:`llm_unlearn.finetune.options.FinetuneOptions` (declared once; the CLI's flags come from it).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from llm_unlearn.errors import UserError
from llm_unlearn.finetune.data import gather, texts_of, tokenize_texts
from llm_unlearn.finetune.loop import LoopResult, LoopSettings
from llm_unlearn.finetune.memorization import memorization_sample
from llm_unlearn.finetune.options import FinetuneOptions, check
from llm_unlearn.finetune.trainer import options_of, train_model

log = logging.getLogger(__name__)

__all__ = ["SUMMARY_FILE", "finetune"]

SUMMARY_FILE = "finetune.json"


# ------------------------------------------------------------------------------------------ output dir
def _check_output_dir(out: Path, overwrite: bool, inputs: list) -> None:
    """The output-directory policy (outputs.prepare_output_dir), checked before anything is loaded:
    the names a saved model and finetune.json take are claimed up front (a user's file of one of those
    names is refused); the directory itself is then written by outputs.fill_output_dir."""
    from llm_unlearn.modeling import MODEL_OUTPUT_NAMES
    from llm_unlearn.outputs import prepare_output_dir

    prepare_output_dir(
        out,
        "finetune",
        inputs=inputs,
        overwrite=overwrite,
        own_names=(*MODEL_OUTPUT_NAMES, SUMMARY_FILE),
        create=False,
    )


# ------------------------------------------------------------------------------------------ steps
def _build_model(o: FinetuneOptions, texts: list[str], dev: torch.device):
    """(tokenizer, model on ``dev``): a fresh tiny OLMo-2 with a BPE tokenizer trained on ``texts``, or the
    model ``o.model`` loaded with float32 master weights (bf16 compute comes from autocast on a GPU)."""
    if o.model == "tiny":
        from llm_unlearn.finetune.trainer import tiny_model
        from llm_unlearn.tiny import train_bpe_tokenizer

        tok = train_bpe_tokenizer(texts + list(o.extra_tokenizer_texts), vocab_size=o.vocab_size)
        net = tiny_model(tok, o)
        net.to(dev)
    else:
        from llm_unlearn.modeling import check_tokenizer_fits, load_model, load_tokenizer

        tok = load_tokenizer(
            o.tokenizer or o.model, trust_remote_code=o.trust_remote_code, gguf_file=o.gguf_file
        )
        net = load_model(
            o.model,
            dtype="float32" if o.dtype == "auto" else o.dtype,
            device=dev,
            trust_remote_code=o.trust_remote_code,
            gguf_file=o.gguf_file,
            allow_pickle=o.allow_pickle,
        )
        check_tokenizer_fits(net, tok, o.tokenizer)
    if tok.eos_token_id is None:
        raise UserError(f"the tokenizer of {o.model} has no EOS token")
    return tok, net


def _log_plan(o: FinetuneOptions, recs, docs, s: LoopSettings, lr: float) -> None:
    log.info(
        "finetune: %d records + %d documents, %d steps/epoch (batch %d%s), up to %d epochs / %d steps, "
        "lr %g, %s on %s",
        len(recs),
        len(docs),
        s.steps_per_epoch,
        o.batch_size,
        f", <= {o.max_batch_tokens} tokens" if o.max_batch_tokens else "",
        s.epoch_cap,
        s.step_cap,
        lr,
        o.method,
        s.device,
    )


def _summary(o, recs, docs, sample, s: LoopSettings, res: LoopResult, lr, n_truncated, tok, t0) -> dict:
    """The content of OUT/finetune.json."""
    history = res.history
    summary = {
        "model": "tiny" if o.model == "tiny" else str(o.model),
        "gguf_file": o.gguf_file,
        "method": o.method,
        "records": len(recs),
        "documents": len(docs),
        "limit": o.limit,
        "until_em": o.until_em,
        "eval_items": len(sample),
        "eval_ids": [r.id for r in sample],
        "stopped": res.stopped,
        "criterion_met": None if o.until_em is None else res.stopped == "criterion",
        "epochs": history[-1]["epoch"] if history else 0,
        "steps": res.step,
        "steps_per_epoch": s.steps_per_epoch,
        "learning_rate": lr,
        "batch_size": o.batch_size,
        "max_batch_tokens": o.max_batch_tokens,
        "max_length": o.max_length,
        "truncated": n_truncated,
        "padding_fraction": round(sum(res.pad_fracs) / len(res.pad_fracs), 4) if res.pad_fracs else None,
        "seed": o.seed,
        "device": str(s.device),
        "bf16_autocast": s.autocast,
        "history": history,
        "final": history[-1] if history else {},
        "seconds": round(time.time() - t0, 1),
    }
    if o.model == "tiny":
        summary["tiny"] = {"hidden_size": o.tiny_hidden, "num_layers": o.tiny_layers, "vocab_size": len(tok)}
    return summary


def _write_output(out: Path, final, tok, summary: dict) -> None:
    from llm_unlearn.outputs import fill_output_dir

    def fill(tmp: Path) -> None:
        final.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    fill_output_dir(out, fill, marker_kind="finetune")


def _train(o: FinetuneOptions, out: Path, t0: float) -> dict[str, Any]:
    """Everything after the output-directory check, run while OUT is locked."""
    from llm_unlearn.modeling import default_device

    recs, docs = gather(o.data, o.split, o.forget, o.retain, o.records, o.documents, o.limit)
    if o.until_em is not None and not recs:
        raise UserError("--until-em needs records to test memorization on (only documents were given)")
    texts = texts_of(recs, docs, o.joiner)
    dev = torch.device(o.device) if o.device else default_device()
    torch.manual_seed(o.seed)
    tok, net = _build_model(o, texts, dev)
    train_net = net
    if o.method == "lora":
        from llm_unlearn.modeling import apply_lora

        train_net = apply_lora(net, r=o.lora_r, alpha=o.lora_alpha)
    examples, n_truncated = tokenize_texts(tok, texts, o.max_length)
    sample = memorization_sample(recs, o.eval_items, o.seed)
    s, res, lr = train_model(
        train_net,
        tok,
        examples,
        o,
        dev,
        sample=sample,
        t0=t0,
        on_plan=lambda s, lr: _log_plan(o, recs, docs, s, lr),
    )
    final = train_net.merge_and_unload() if o.method == "lora" else train_net
    final.eval()
    summary = _summary(o, recs, docs, sample, s, res, lr, n_truncated, tok, t0)
    _write_output(out, final, tok, summary)
    summary["output_dir"] = str(out)
    if o.return_model:
        return {**summary, "model_object": final, "tokenizer_object": tok}
    return summary


# ------------------------------------------------------------------------------------------ main entry
def finetune(opts: FinetuneOptions | None = None, /, **overrides) -> dict[str, Any]:
    """Fine-tune ``model`` on the data until it has memorized it; write OUT and return the summary
    (OUT/finetune.json).

    ``opts``: a :class:`FinetuneOptions` (every option, declared once with its flag and default), and/or
    its fields as keywords (``finetune(model="tiny", data="data/", output_dir="runs/target")``;
    keywords win). With ``return_model`` the returned dict also holds ``"model_object"`` and
    ``"tokenizer_object"`` (the trained objects, not serialised). ``extra_tokenizer_texts``: texts the
    tiny tokenizer is also trained on (not trained on by the model), e.g. holdout documents that must
    tokenize well."""
    o = options_of(opts, overrides)
    t0 = time.time()
    check(o)
    if not o.output_dir:
        raise UserError("no output directory given (use --output-dir DIR)")
    out = Path(o.output_dir)
    inputs = [o.data, o.forget, o.retain, *o.records, *o.documents]
    inputs += [] if o.model == "tiny" else [o.model, o.tokenizer]
    _check_output_dir(out, o.overwrite, inputs)
    # the lock lives beside OUT (a new OUT is written whole beside it); released however the run ends
    from llm_unlearn.outputs import DirectoryLock

    with DirectoryLock(out, sibling=True):
        return _train(o, out, t0)
