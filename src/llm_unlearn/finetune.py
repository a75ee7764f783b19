"""`llm-unlearn finetune`: build a target model that has memorized the data (what the SemEval organizers
and TOFU do before anyone unlearns).

Data flow:

    records (forget/retain layouts, --records files) + plain documents (--documents)
        -> one text per item: prompt + joiner + answer + EOS for a record, document + EOS for a document;
           the loss is on EVERY token (the model memorizes prompts too, as a pretraining corpus would)
        -> length buckets: items sorted by length, cut into batches of similar length (optionally capped
           in tokens per batch), batch order shuffled each epoch (seeded), see :func:`bucket_batches`
        -> full fine-tuning, or LoRA then merge (``method="lora"``)
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
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llm_unlearn.errors import DataError, UserError

log = logging.getLogger(__name__)

__all__ = ["finetune", "bucket_batches", "padding_fraction", "read_documents", "memorization_scores"]

SUMMARY_FILE = "finetune.json"
DEFAULT_EPOCH_CAP = (
    200  # epochs allowed to reach an --until-em criterion when no --epochs/--max-steps is given
)
DEFAULT_EPOCHS = 3  # without any stopping option


# ------------------------------------------------------------------------------------------ batching
def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    max_tokens: int | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Batches of items of similar length, in a seeded random order.

    Items are shuffled (seeded), then stably sorted by length (so equal-length items change partners from
    one seed to the next), and cut in that order into batches of at most ``batch_size`` items; with
    ``max_tokens`` a batch also stops growing before ``len(batch) * longest`` would exceed it (a single
    item always forms a batch). The batch order is then shuffled with the same seed. Every index appears
    in exactly one batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in batch), default=0))
        if batch and (
            len(batch) >= batch_size or (max_tokens is not None and (len(batch) + 1) * longest > max_tokens)
        ):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded token slots that are padding, when each batch is padded to its longest item."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if slots == 0 else 1.0 - real / slots


def _collate(examples: Sequence[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
        mask[row, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# ------------------------------------------------------------------------------------------ data
def read_documents(path: str | Path) -> list[dict]:
    """Plain documents from a data file (.jsonl/.json/.parquet/.csv): each row's ``document`` or ``text``
    field; ``id`` kept when present. Raises UserError / DataError naming the file and line."""
    from llm_unlearn.data.records import _check_path, _raw_rows

    path = Path(path)
    _check_path(path)
    docs = []
    for line, row in _raw_rows(path):
        if not isinstance(row, dict):
            raise DataError(path, f"expected an object, got {type(row).__name__}", line=line)
        key = "document" if "document" in row else "text" if "text" in row else None
        if key is None:
            raise DataError(
                path,
                f"a document needs a 'document' or 'text' field; found {sorted(map(str, row))}",
                line=line,
                field="document",
            )
        if not isinstance(row[key], str):
            raise DataError(path, f"expected a string, got {type(row[key]).__name__}", line=line, field=key)
        rid = row.get("id")
        docs.append({"id": None if rid is None else str(rid), "document": row[key]})
    if not docs:
        raise DataError(path, "no documents (empty file)", field="document")
    return docs


def _read_record_file(path: str | Path) -> list:
    from llm_unlearn.data.records import read_records

    try:
        return read_records(path)
    except UserError as exc:
        if "cannot tell whether" not in str(exc):
            raise
        return read_records(path, split="forget")  # the split means nothing to fine-tuning


def _gather(data, split, forget, retain, records, documents, limit):
    """(records, documents, source description) after slicing."""
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.data.slices import document_key, slice_records, unit_id

    recs: list = []
    all_units: set[str] = set()
    taken_units: set[str] = set()
    if data is not None or forget is not None:
        bundle = load_unlearning_data(data, split=split, forget=forget, retain=retain)
        for part in (bundle.forget, bundle.retain):
            all_units |= {document_key(unit_id(r.id)) for r in part}
            part = slice_records(part, limit)
            taken_units |= {document_key(unit_id(r.id)) for r in part}
            recs += part
    elif retain is not None:
        raise UserError("--retain needs --forget (or use --records FILE)")
    for path in records or []:
        part = _read_record_file(path)
        all_units |= {document_key(unit_id(r.id)) for r in part}
        part = slice_records(part, limit)
        taken_units |= {document_key(unit_id(r.id)) for r in part}
        recs += part
    docs: list[dict] = []
    for path in documents or []:
        part = read_documents(path)
        if limit:
            tied = [d for d in part if d["id"] is not None and document_key(d["id"]) in all_units]
            free = [d for d in part if not (d["id"] is not None and document_key(d["id"]) in all_units)]
            part = [d for d in tied if document_key(d["id"]) in taken_units] + free[:limit]
        docs += part
    if not recs and not docs:
        raise UserError("no data given (use --data DIR, --forget FILE, --records FILE or --documents FILE)")
    return recs, docs


# ------------------------------------------------------------------------------------------ memorization
def memorization_scores(
    model, tokenizer, records: Sequence, *, batch_size: int = 16, max_new_tokens: int | None = None
) -> dict[str, Any]:
    """Greedy generations for ``records`` and their scores: ROUGE-L recall for sc items, exact match for
    all others (qa and records without a SemEval kind). Returns ``{"em", "rougeL", "n_em", "n_rouge"}``
    (a mean is None when no item of its kind was given)."""
    from llm_unlearn.data.records import record_kind
    from llm_unlearn.evaluation.inference import greedy_generate
    from llm_unlearn.evaluation.scoring import knowledge_score, regurgitation_score

    records = list(records)
    if not records:
        return {"em": None, "rougeL": None, "n_em": 0, "n_rouge": 0}
    if max_new_tokens is None:
        longest = max(len(tokenizer(r.output, add_special_tokens=False).input_ids) for r in records)
        max_new_tokens = longest + 8
    outs = greedy_generate(
        model,
        tokenizer,
        [r.input for r in records],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=False,
    )
    em, rl = [], []
    for r, o in zip(records, outs):
        if record_kind(r.id) == "sc":
            rl.append(regurgitation_score(r.output, o))
        else:
            em.append(knowledge_score(r.output, o))
    return {
        "em": sum(em) / len(em) if em else None,
        "rougeL": sum(rl) / len(rl) if rl else None,
        "n_em": len(em),
        "n_rouge": len(rl),
    }


def _criterion_met(scores: dict, threshold: float) -> bool:
    vals = [v for v in (scores["em"], scores["rougeL"]) if v is not None]
    return bool(vals) and all(v >= threshold for v in vals)


# ------------------------------------------------------------------------------------------ output dir
def _check_output_dir(out: Path, overwrite: bool, inputs: list) -> bool:
    """The output-directory policy (io_utils.prepare_output_dir), checked before anything is loaded;
    returns whether OUT may be replaced as a whole (False: it holds other files, kept with --overwrite)."""
    from llm_unlearn.outputs import LOCK, MARKER, prepare_output_dir, read_marker

    prepare_output_dir(
        out, "finetune", inputs=inputs, overwrite=overwrite, own_names=(SUMMARY_FILE,), create=False
    )
    if not out.is_dir():
        return True
    marker = read_marker(out)
    others = [p for p in out.iterdir() if p.name not in (MARKER, LOCK)]
    return (marker is not None and marker.get("kind") == "finetune") or not others


def _validate(
    eval_every,
    method,
    epochs,
    max_steps,
    until_em,
    eval_items,
    lr,
    batch_size,
    max_length,
    max_batch_tokens,
    limit,
    lora_r,
    lora_alpha,
):
    if eval_every is not None and eval_every <= 0:
        raise UserError(f"--eval-every must be positive, got {eval_every}")
    if method not in ("full", "lora"):
        raise UserError(f"--method must be full or lora, got {method!r}")
    if until_em is not None and not (isinstance(until_em, (int, float)) and 0 < until_em <= 1):
        raise UserError(f"--until-em must be in (0, 1], got {until_em}")
    for name, value in (
        ("--epochs", epochs),
        ("--max-steps", max_steps),
        ("--eval-items", eval_items),
        ("--batch-size", batch_size),
        ("--max-length", max_length),
        ("--max-batch-tokens", max_batch_tokens),
        ("--limit", limit),
        ("--lora-r", lora_r),
        ("--lora-alpha", lora_alpha),
    ):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"--lr must be a positive number, got {lr}")


# ------------------------------------------------------------------------------------------ main entry
def finetune(
    *,
    model: str = "tiny",
    output_dir: str | Path,
    gguf_file: str | None = None,
    tokenizer: str | None = None,
    data: str | Path | None = None,
    split: str | None = None,
    forget: str | Path | None = None,
    retain: str | Path | None = None,
    records: Sequence[str | Path] = (),
    documents: Sequence[str | Path] = (),
    limit: int | None = None,
    method: str = "full",
    epochs: int | None = None,
    max_steps: int | None = None,
    until_em: float | None = None,
    eval_items: int = 16,
    eval_every: int = 1,
    lr: float | None = None,
    batch_size: int = 16,
    max_length: int = 512,
    max_batch_tokens: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    lora_r: int = 16,
    lora_alpha: int = 32,
    tiny_hidden: int = 128,
    tiny_layers: int = 4,
    vocab_size: int = 1024,
    joiner: str = " ",
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    extra_tokenizer_texts: Sequence[str] = (),
    return_model: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``model`` on the data until it has memorized it; write OUT and return the summary
    (OUT/finetune.json). With ``return_model`` the returned dict also holds ``"model_object"`` and
    ``"tokenizer_object"`` (the trained objects, not serialised). ``extra_tokenizer_texts``: texts the tiny tokenizer is also
    trained on (not trained on by the model), e.g. holdout documents that must tokenize well."""
    from tqdm.auto import tqdm

    from llm_unlearn.modeling import default_device
    from llm_unlearn.outputs import DirectoryLock, fill_output_dir

    t0 = time.time()
    _validate(
        eval_every,
        method,
        epochs,
        max_steps,
        until_em,
        eval_items,
        lr,
        batch_size,
        max_length,
        max_batch_tokens,
        limit,
        lora_r,
        lora_alpha,
    )
    if not output_dir:
        raise UserError("no output directory given (use --output-dir DIR)")
    out = Path(output_dir)
    inputs = [data, forget, retain, *records, *documents] + ([] if model == "tiny" else [model, tokenizer])
    replace_dir = _check_output_dir(out, overwrite, inputs)
    # the lock lives beside OUT (OUT itself is replaced as a whole); released however the run ends
    with DirectoryLock(out, sibling=True):
        recs, docs = _gather(data, split, forget, retain, records, documents, limit)
        if until_em is not None and not recs:
            raise UserError("--until-em needs records to test memorization on (only documents were given)")
        texts = [(r.input + joiner + r.output) if r.input else r.output for r in recs] + [
            d["document"] for d in docs
        ]

        # model and tokenizer
        dev = torch.device(device) if device else default_device()
        torch.manual_seed(seed)
        is_tiny = model == "tiny"
        if is_tiny:
            from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer

            tok = train_bpe_tokenizer(texts + list(extra_tokenizer_texts), vocab_size=vocab_size)
            net = build_tiny_olmo2(
                tok,
                hidden_size=tiny_hidden,
                num_layers=tiny_layers,
                intermediate_size=4 * tiny_hidden,
                max_position_embeddings=max(512, max_length),
                seed=seed,
            )
            net.to(dev)
        else:
            from llm_unlearn.modeling import load_model, load_tokenizer

            tok = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
            # master weights in float32; bf16 compute comes from autocast on a capable GPU
            net = load_model(
                model,
                dtype="float32" if dtype == "auto" else dtype,
                device=dev,
                trust_remote_code=trust_remote_code,
                gguf_file=gguf_file,
                allow_pickle=allow_pickle,
            )
        if tok.eos_token_id is None:
            raise UserError(f"the tokenizer of {model} has no EOS token")
        if lr is None:
            lr = 3e-3 if is_tiny else (2e-4 if method == "lora" else 2e-5)
        train_net = net
        if method == "lora":
            from llm_unlearn.modeling import apply_lora

            train_net = apply_lora(net, r=lora_r, alpha=lora_alpha)

        # examples (loss on every token) and length buckets
        eos = tok.eos_token_id
        examples, n_truncated = [], 0
        for t in texts:
            ids = list(tok(t).input_ids)
            if not ids or ids[-1] != eos:
                ids.append(eos)
            if len(ids) > max_length:
                ids, n_truncated = ids[:max_length], n_truncated + 1
            examples.append(ids)
        if n_truncated:
            log.warning(
                "%d of %d text(s) were longer than --max-length %d tokens and were cut from the right",
                n_truncated,
                len(examples),
                max_length,
            )
        lengths = [len(e) for e in examples]
        steps_per_epoch = len(bucket_batches(lengths, batch_size, max_tokens=max_batch_tokens, seed=seed))
        if max_steps is None and epochs is None:
            epoch_cap = DEFAULT_EPOCH_CAP if until_em is not None else DEFAULT_EPOCHS
        else:
            epoch_cap = epochs if epochs is not None else math.ceil(max_steps / steps_per_epoch)
        step_cap = min(max_steps or epoch_cap * steps_per_epoch, epoch_cap * steps_per_epoch)

        # memorization sample
        rng = random.Random(seed)
        sample = rng.sample(recs, min(eval_items, len(recs))) if recs else []

        params = [p for p in train_net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        warmup = min(20, max(1, step_cap // 10))
        fixed_budget = until_em is None

        def lr_factor(
            s: int,
        ) -> float:  # warm-up, then constant (criterion) or linear decay to 10% (fixed budget)
            w = min(1.0, (s + 1) / warmup)
            return w * (max(0.1, 1 - s / step_cap) if fixed_budget else 1.0)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        autocast = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos
        log.info(
            "finetune: %d records + %d documents, %d steps/epoch (batch %d%s), up to %d epochs / %d steps, "
            "lr %g, %s on %s",
            len(recs),
            len(docs),
            steps_per_epoch,
            batch_size,
            f", <= {max_batch_tokens} tokens" if max_batch_tokens else "",
            epoch_cap,
            step_cap,
            lr,
            method,
            dev,
        )
        bar = tqdm(total=step_cap, desc="finetune", unit="step", dynamic_ncols=True, disable=not progress)
        history: list[dict] = []
        step, stopped = 0, None
        pad_fracs = []
        for epoch in range(1, epoch_cap + 1):
            batches = bucket_batches(
                lengths, batch_size, max_tokens=max_batch_tokens, seed=seed * 100003 + epoch
            )
            pad_fracs.append(padding_fraction(lengths, batches))
            train_net.train()
            t_epoch = time.time()
            losses, weights = [], []
            for b in batches:
                batch = _collate([examples[i] for i in b], pad_id, dev)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    loss = train_net(**batch).loss
                if not torch.isfinite(loss):
                    raise UserError(
                        f"the fine-tuning loss became {loss.item()} at step {step + 1}: lower --lr"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                losses.append(loss.item())
                weights.append(sum(lengths[i] - 1 for i in b))
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
                if step >= step_cap:
                    break
            row = {
                "epoch": epoch,
                "step": step,
                "mean_loss": sum(x * w for x, w in zip(losses, weights)) / max(sum(weights), 1),
                "seconds": round(time.time() - t0, 1),
                "train_seconds": round(time.time() - t_epoch, 2),
            }
            last = step >= step_cap or epoch == epoch_cap
            if sample and (epoch % eval_every == 0 or last):
                t_eval = time.time()
                scores = memorization_scores(train_net, tok, sample, batch_size=max(batch_size, 16))
                row.update(
                    em=scores["em"], rougeL=scores["rougeL"], eval_seconds=round(time.time() - t_eval, 2)
                )
                row["seconds"] = round(time.time() - t0, 1)
                bar.set_postfix(
                    epoch=epoch,
                    loss=f"{row['mean_loss']:.3f}",
                    em="-" if scores["em"] is None else f"{scores['em']:.2f}",
                    rougeL="-" if scores["rougeL"] is None else f"{scores['rougeL']:.2f}",
                )
                if until_em is not None and _criterion_met(scores, until_em):
                    stopped = "criterion"
            history.append(row)
            log.debug("finetune epoch %s", row)
            if stopped:
                break
            if step >= step_cap:
                stopped = "max_steps" if max_steps is not None and step >= max_steps else "epochs"
                break
        else:
            stopped = "epochs"
        bar.close()
        if until_em is not None and stopped != "criterion":
            log.warning(
                "finetune stopped after %d epochs without reaching --until-em %g (last: EM %s, ROUGE-L %s)",
                history[-1]["epoch"],
                until_em,
                history[-1].get("em"),
                history[-1].get("rougeL"),
            )

        final = train_net.merge_and_unload() if method == "lora" else train_net
        final.eval()
        summary = {
            "model": "tiny" if is_tiny else str(model),
            "gguf_file": gguf_file,
            "method": method,
            "records": len(recs),
            "documents": len(docs),
            "limit": limit,
            "until_em": until_em,
            "eval_items": len(sample),
            "eval_ids": [r.id for r in sample],
            "stopped": stopped,
            "criterion_met": None if until_em is None else stopped == "criterion",
            "epochs": history[-1]["epoch"] if history else 0,
            "steps": step,
            "steps_per_epoch": steps_per_epoch,
            "learning_rate": lr,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "max_length": max_length,
            "truncated": n_truncated,
            "padding_fraction": round(sum(pad_fracs) / len(pad_fracs), 4) if pad_fracs else None,
            "seed": seed,
            "device": str(dev),
            "bf16_autocast": autocast,
            "history": history,
            "final": history[-1] if history else {},
            "seconds": round(time.time() - t0, 1),
        }
        if is_tiny:
            summary["tiny"] = {"hidden_size": tiny_hidden, "num_layers": tiny_layers, "vocab_size": len(tok)}

        def fill(tmp: Path) -> None:
            final.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

        fill_output_dir(out, fill, marker_kind="finetune", replace_dir=replace_dir)
        summary["output_dir"] = str(out)
        if return_model:
            return {**summary, "model_object": final, "tokenizer_object": tok}
        return summary

    # ------------------------------------------------------------------------------------------ command line


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
