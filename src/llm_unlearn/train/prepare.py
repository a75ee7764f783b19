"""Preparing a run, before any training: the data (records, slices, forget documents), whether the
output directory holds a run to resume, the training arguments, the model with LoRA, the tokenized
rows and the chunk plan."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_unlearn.config import UnlearnConfig
from llm_unlearn.errors import ConfigError, UserError
from llm_unlearn.train.checkpoint import CHECKPOINT, check_output_dir, data_fingerprint, load_adapter_weights
from llm_unlearn.train.process import world_size
from llm_unlearn.train.sharding import check_cpu_fsdp
from llm_unlearn.train.trainer import steps_per_chunk

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything the training loop needs, and what the final run.json reports about its inputs."""

    cfg: UnlearnConfig
    out: Path
    data_files: list
    data_sha: dict
    saved: dict | None
    forget_recs: list = field(default_factory=list)
    retain_recs: list = field(default_factory=list)
    document_rows: set = field(default_factory=set)
    tokenizer: Any = None
    model: Any = None  # the PEFT model
    forget_rows: list = field(default_factory=list)
    retain_rows: list = field(default_factory=list)
    plan: list = field(default_factory=list)
    args: Any = None  # transformers.TrainingArguments
    per_chunk_steps: list = field(default_factory=list)
    frozen: Any = None  # full fine-tuning: a frozen copy of the starting model (the reference)
    alternatives: dict | None = None  # forget record id -> its alternative answer (idk_dpo, altpo)
    anchor_recs: list = field(default_factory=list)  # calibration.anchor_documents (train/anchor.py)
    anchor_rows: list = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.saved and self.saved.get("finished"))

    @property
    def start_chunk(self) -> int:
        return self.saved["completed_chunks"] if self.saved else 0


def prepare(cfg: UnlearnConfig, *, model=None, tokenizer=None) -> Prepared:
    """Data -> resume check -> training arguments -> model + LoRA -> tokens -> plan. A finished run with
    the same options and data returns early (``finished``)."""
    prep = _read_data(cfg)
    if prep.finished:
        return prep
    from llm_unlearn.modeling import default_device, resolve_dtype

    # training arguments as transformers checks them, on this machine's devices, before the model loads
    check_cpu_fsdp(cfg)  # what FSDP on CPU processes does not do, refused before the model loads
    from llm_unlearn.train.methods.pdu import warmup_note

    if note := warmup_note(cfg):
        log.warning("%s", note)
    build_training_args(cfg, prep.out, resolve_dtype(cfg.model.dtype, default_device()))
    _load_model(prep, model, tokenizer)
    _tokenize_and_plan(prep)
    return prep


def _read_data(cfg: UnlearnConfig) -> Prepared:
    from llm_unlearn.data.records import load_unlearning_data

    d, c = cfg.data, cfg.calibration
    out = Path(cfg.train.output_dir)
    bundle = load_unlearning_data(d.data, split=d.split, forget=d.forget, retain=d.retain)
    calib_files = [
        Path(p) for p in (c.holdout, c.forget_documents, c.anchor_documents) if p and Path(p).is_file()
    ]
    data_sha = data_fingerprint([*bundle.files, *calib_files], d.data)  # what a resume must find unchanged
    saved = check_output_dir(out, cfg, data_sha)
    prep = Prepared(cfg=cfg, out=out, data_files=list(bundle.files), data_sha=data_sha, saved=saved)
    if prep.finished:
        log.info("%s already holds this finished run (same options and data); nothing to do", out)
        return prep
    forget_recs, retain_recs = bundle.forget, bundle.retain
    if d.limit:  # whole SemEval units, round-robin over tasks (data/slices.py)
        from llm_unlearn.data.slices import slice_records

        forget_recs, retain_recs = slice_records(forget_recs, d.limit), slice_records(retain_recs, d.limit)
    if not forget_recs:
        raise UserError("the forget set is empty")
    if c.forget_documents and c.unlearn_documents:  # the documents are forget data too, next to their records
        from llm_unlearn.data.holdout import read_forget_documents, with_documents

        forget_recs, prep.document_rows = with_documents(
            forget_recs, read_forget_documents(c.forget_documents)
        )
    prep.forget_recs, prep.retain_recs = forget_recs, retain_recs
    prep.anchor_recs = _anchor_records(c)
    prep.alternatives = _read_alternatives(prep)  # a bad file fails here, before the model loads
    return prep


def _load_model(prep: Prepared, model, tokenizer) -> None:
    from transformers import set_seed

    from llm_unlearn.data.tokenize import ensure_pad_token
    from llm_unlearn.modeling import apply_lora, model_of, tokenizer_of

    cfg, m = prep.cfg, prep.cfg.model
    set_seed(cfg.train.seed)
    if tokenizer is None:
        tokenizer = tokenizer_of(m)
    prep.tokenizer = ensure_pad_token(tokenizer)
    if model is None:
        model = model_of(m)
    from llm_unlearn.modeling import check_tokenizer_fits

    check_tokenizer_fits(model, prep.tokenizer, m.tokenizer)
    lora = cfg.lora
    layers = _trained_layers(cfg, model)
    if not lora.enabled:  # full fine-tuning: the reference is a frozen copy of the starting model
        import copy

        prep.frozen = copy.deepcopy(model).eval().requires_grad_(False)
        prep.model = model.train().requires_grad_(layers is None)
        if layers is not None:  # only the method's layers (and modules, when named) train
            _unfreeze(prep.model, layers, lora.target_modules)
    else:
        if cfg.training_args.get("gradient_checkpointing"):
            model.enable_input_require_grads()  # so the LoRA weights still get gradients
        prep.model = apply_lora(
            model,
            r=lora.r,
            alpha=lora.alpha,
            dropout=lora.dropout,
            target_modules=lora.target_modules,
            layers=layers,
        )
    if prep.saved is not None:
        load_adapter_weights(prep.model, prep.out / CHECKPOINT)


def _trained_layers(cfg: UnlearnConfig, model) -> list[int] | None:
    """The decoder layers that train: lora.layers, else the method's own (e.g. RMU's), else all (None)."""
    from llm_unlearn.train.head import decoder_layers
    from llm_unlearn.train.methods import get

    objective = get(cfg.objective.method)
    if cfg.lora.layers is not None:
        layers = list(cfg.lora.layers)
    elif objective.train_layers is not None:
        layers = objective.train_layers(cfg.objective, model)
    else:
        return None
    n = len(decoder_layers(model))
    bad = [i for i in layers if not 0 <= i < n]
    if bad or not layers:
        raise UserError(f"layers {bad or layers} do not exist: the model has {n} decoder layers (0..{n - 1})")
    return layers


def _unfreeze(model, layers: list[int], modules: list[str] | None) -> None:
    """Full fine-tuning of some layers: the parameters of decoder layers `layers` (only the named
    modules in them, when given) train; every other parameter stays frozen."""
    from llm_unlearn.train.head import decoder_layers

    blocks = decoder_layers(model)
    for i in layers:
        for name, p in blocks[i].named_parameters():
            if not modules or any(f".{m}." in f".{name}" for m in modules):
                p.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"no parameter of layers {layers} matches lora.target_modules {modules}")


def _tokenize_and_plan(prep: Prepared) -> None:
    from llm_unlearn.data.schedule import plan_chunks
    from llm_unlearn.modeling import resolve_dtype

    cfg, d, s = prep.cfg, prep.cfg.data, prep.cfg.schedule
    kw = dict(joiner=d.joiner, add_eos=d.add_eos, max_length=d.max_length)
    prep.forget_rows = _tokens(prep.tokenizer, prep.forget_recs, kw)
    prep.retain_rows = _tokens(prep.tokenizer, prep.retain_recs, kw)
    for key, row in enumerate(prep.forget_rows + prep.retain_rows):  # forget i -> i, retain j -> n_forget + j
        row["row_key"] = key
    _add_alternatives(prep, kw)
    prep.anchor_rows = _tokens(prep.tokenizer, prep.anchor_recs, kw) if prep.anchor_recs else []
    prep.plan = plan_chunks(
        len(prep.forget_rows),
        len(prep.retain_rows),
        s.chunk_size,
        s.retain_per_forget,
        split_retain=s.split_retain,
        seed=cfg.train.seed,
        sequential=s.sequential,
    )
    c = cfg.calibration
    from llm_unlearn.config import eval_interval

    # only with a working gate (a holdout, evaluations on): it decides which revisited rows are pushed
    if c.revisit and c.mode == "gate" and c.holdout and eval_interval(c.eval_every) != "off":
        from llm_unlearn.data.schedule import revisit_last

        prep.plan = revisit_last(prep.plan)
    device = next(prep.model.parameters()).device
    prep.args = args = build_training_args(cfg, prep.out, resolve_dtype(cfg.model.dtype, device))
    batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    n = len(prep.plan)
    prep.per_chunk_steps = [
        steps_per_chunk(len(rows), batch, world_size(), accum, chunk_epochs(cfg, c, n))
        for c, rows in enumerate(prep.plan)
    ]


def chunk_epochs(cfg, chunk: int, n_chunks: int) -> float:
    """Passes over chunk ``chunk`` of ``n_chunks``: schedule.epochs, times calibration.last_chunk_factor
    for the last one."""
    last = chunk == n_chunks - 1
    return cfg.schedule.epochs * (float(cfg.calibration.last_chunk_factor) if last else 1.0)


def _anchor_records(c) -> list:
    """calibration.anchor_documents as rows (none when not given or its weight is 0); refused when one
    is a holdout or forget document."""
    if not c.anchor_documents or c.anchor <= 0:
        return []
    from llm_unlearn.data.holdout import read_holdout
    from llm_unlearn.train.anchor import read_anchor_records

    exclude = []
    for path in (c.holdout, c.forget_documents):
        if path:
            exclude += read_holdout(path).documents
    return read_anchor_records(c.anchor_documents, exclude=exclude)


def _tokens(tokenizer, records, kw: dict) -> list[dict]:
    """``tokenize_records(tokenizer, records, **kw)``; in a sweep, tokenized once per (tokenizer,
    records, options) for every trial of the process (``SWEEP_HOOKS["tokens"]``), each trial getting
    its own copy of the rows (a run adds keys to them)."""
    import copy

    from llm_unlearn.data.tokenize import tokenize_records
    from llm_unlearn.train.sweep_hooks import SWEEP_HOOKS

    memo = SWEEP_HOOKS.get("tokens")
    if memo is None:
        return tokenize_records(tokenizer, records, **kw)
    key = (
        id(tokenizer),
        hashlib.sha256(
            json.dumps(
                [vars(r) if hasattr(r, "__dict__") else dict(r) for r in records], sort_keys=True, default=str
            ).encode()
        ).hexdigest(),
        json.dumps(kw, sort_keys=True),
    )
    if key not in memo:
        memo[key] = (tokenizer, tokenize_records(tokenizer, records, **kw))  # the tokenizer: id() stays its
    return copy.deepcopy(memo[key][1])


def _add_alternatives(prep: Prepared, kw: dict) -> None:
    """For methods that prefer an alternative answer (idk_dpo, altpo): each forget row gets
    ``alt_input_ids`` / ``alt_labels`` (its prompt + the alternative); retain rows carry their own ids
    (never used) so every batch collates."""
    from llm_unlearn.data.tokenize import tokenize_records

    if prep.alternatives is None:
        return
    alt_recs = [
        {
            "id": r.id,
            "input": r.input,
            "output": prep.alternatives[str(r.id)],
            "split": "forget",
        }
        for r in prep.forget_recs
    ]
    for row, alt_row in zip(prep.forget_rows, tokenize_records(prep.tokenizer, alt_recs, **kw)):
        row["alt_input_ids"], row["alt_labels"] = alt_row["input_ids"], alt_row["labels"]
    for row in prep.retain_rows:
        row["alt_input_ids"], row["alt_labels"] = row["input_ids"], row["labels"]


def build_training_args(cfg: UnlearnConfig, out: Path, dtype: torch.dtype):
    from transformers import TrainingArguments

    t = cfg.train
    ws = world_size()
    if t.batch_size % ws:
        raise ConfigError(
            f"train.batch_size {t.batch_size} must be divisible by the number of processes {ws}"
        )
    extra = dict(cfg.training_args)
    on_gpu = torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(out / ".trainer"),
        per_device_train_batch_size=t.batch_size // ws,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=cfg.schedule.epochs,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the steps in transformers 5
        weight_decay=0.0 if t.optimizer == "adam" else t.weight_decay,
        optim="adamw_torch",
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=t.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and dtype == torch.bfloat16,
        dataloader_drop_last=False,
    )
    kwargs.update(extra)
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training_args: {exc}") from None


def _read_alternatives(prep: Prepared) -> dict[str, str] | None:
    """{forget record id: its alternative answer} for methods that prefer one (idk_dpo, altpo): from
    objective.alternatives (a file, or 'retain'), else the packaged refusals; seeded per record. None
    for other methods."""
    from llm_unlearn.data import alternatives as alt
    from llm_unlearn.train.methods import get

    o = prep.cfg.objective
    if not get(o.method).alternatives:
        return None
    if o.alternatives == "retain":
        generic, by_id = [], _retain_alternatives(prep)
    else:
        generic = alt.load_refusals(o.alternatives)
        by_id = alt.load_alternatives_by_id(o.alternatives) if o.alternatives else {}
    seed = prep.cfg.train.seed
    return {str(r.id): alt.alternative_for(r.id, generic, by_id, seed) for r in prep.forget_recs}


def _retain_alternatives(prep: Prepared) -> dict[str, list[str]]:
    """`alternatives: retain`: for each forget record, the answers of the retain records of the same task
    and kind (qa / sc): plausible, different answers, an offline stand-in for AltPO's model-generated
    alternatives. A record with no such retain answer falls back to all retain answers."""
    from llm_unlearn.data.records import record_kind

    def key(r):
        return (r.task, record_kind(r.id))

    pool: dict = {}
    for r in prep.retain_recs:
        pool.setdefault(key(r), []).append(r.output)
    everything = [r.output for r in prep.retain_recs]
    if not everything:
        raise UserError("alternatives 'retain' needs retain records")
    return {str(r.id): pool.get(key(r)) or everything for r in prep.forget_recs}
