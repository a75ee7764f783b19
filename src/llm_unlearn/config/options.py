"""Every option of an unlearning run, declared once: type (the annotation), default, help text,
command-line flag, allowed values or range, whether it is a path. The CLI's flags
(``cli/train.py``), ``validate()`` and the README's configuration table (checked by a test) all come from
these declarations.

This module is over 400 lines on purpose: one declaration per option, all in one place, is the point.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from llm_unlearn.config.presets import METHOD_NAMES

SEED_TARGET_MODULES = ["q_proj", "v_proj", "up_proj", "down_proj"]

RETAIN_DIVERGENCES = ("renyi", "kl", "token_renyi_legacy", "none")
NPO_LEVELS = ("token", "sequence")
OPTIMIZER_SCOPES = ("chunk", "run")
REFERENCE_CACHE_MODES = ("auto", "off", "full", "topk")
REFERENCE_CACHE_DTYPES = ("float16", "bfloat16", "float32")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
CALIBRATION_MODES = ("gate", "stop", "off")
SELECTIONS = ("best", "last")


def opt(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    switch: tuple[str, Any] | None = None,
    choices: tuple | str | None = None,
    range: tuple | None = None,
    path: bool = False,
    own_check: bool = False,
    factory=None,
):
    """A dataclass field carrying the option's declaration in its metadata.

    flag: the command-line flag (``--lr``); switch: ``(flag, value)`` for a flag without argument that
    sets the value; choices: the allowed values (or ``"objectives"``: the method names,
    ``presets.METHOD_NAMES``); range: ``(low, high, low_open, high_open)``, None = no bound; path: a
    file or directory (an empty string is refused); own_check: validated by its own rule in validate().
    """
    meta = {
        "help": help,
        "flag": flag,
        "switch": switch,
        "choices": choices,
        "range": range,
        "path": path,
        "own_check": own_check,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _pos(low=0, open_low=False, high=None, open_high=False):
    return (low, high, open_low, open_high)


@dataclass
class ModelOptions:
    name_or_path: str | None = opt(
        None, "model directory or hub id (hub ids need network)", flag="--model", path=True
    )
    tokenizer: str | None = opt(None, "tokenizer (default: the model's)", flag="--tokenizer", path=True)
    gguf_file: str | None = opt(
        None,
        "load a GGUF checkpoint from name_or_path (dequantized; trainable)",
        flag="--gguf-file",
        path=True,
    )
    dtype: str = opt(
        "auto",
        "auto (bf16 on GPUs that support it, else fp32) | float32 | bfloat16 | float16",
        flag="--dtype",
        choices=DTYPES,
    )
    trust_remote_code: bool = opt(
        False, "allow the model repository's own code", switch=("--trust-remote-code", True)
    )
    allow_pickle: bool = opt(
        False,
        "load a model or adapter stored only as pickle (.bin/.pt); otherwise refused",
        switch=("--allow-pickle", True),
    )


@dataclass
class DataOptions:
    data: str | None = opt(
        None,
        "data directory (forget.jsonl + retain.jsonl, <split>/..., or parquet)",
        flag="--data",
        path=True,
    )
    split: str | None = opt(
        None, "<data>/<split>/forget.jsonl, or the _<split> parquet files", flag="--split", path=True
    )
    forget: str | None = opt(None, "forget file (.jsonl/.json/.parquet/.csv)", flag="--forget", path=True)
    retain: str | None = opt(None, "retain file", flag="--retain", path=True)
    joiner: str = opt(" ", "text between input and output", flag="--joiner")
    add_eos: bool = opt(False, "append EOS after each answer (labelled)", switch=("--add-eos", True))
    max_length: int | None = opt(
        512,
        "truncate longer rows (a warning counts them, and rows left without answer tokens); null: no truncation",
        flag="--max-length",
        range=_pos(1),
    )
    limit: int | None = opt(
        None,
        "at most N forget and N retain rows, whole SemEval units (see Slices); null: all",
        flag="--limit",
        range=_pos(1),
    )


@dataclass
class LoraOptions:
    enabled: bool = opt(
        True,
        "train a LoRA adapter (reference = adapter off); false: full fine-tuning",
        switch=("--full-finetune", False),
    )
    r: int = opt(16, "LoRA rank", flag="--lora-r", range=_pos(1, high=65536))
    alpha: int = opt(64, "LoRA alpha (scale alpha / r)", flag="--lora-alpha", range=_pos(1))
    dropout: float = opt(0.0, "LoRA dropout", flag="--lora-dropout", range=_pos(0, high=1, open_high=True))
    target_modules: list[str] | None = opt(
        help="modules absent from a model are skipped; none present: PEFT's default for the architecture (or all linear layers); comma-separated on the command line",
        flag="--lora-targets",
        factory=lambda: list(SEED_TARGET_MODULES),
    )

    layers: list[int] | None = opt(
        None,
        "decoder layers that get adapters (comma-separated; null: all, or the method's own: rmu trains its layer and the two below)",
        flag="--lora-layers",
    )


@dataclass
class ObjectiveOptions:
    method: str = opt(
        "npo_rt_div", "the unlearning objective (README: methods)", flag="--method", choices="objectives"
    )
    forget_weight: float = opt(
        1.0,
        "weight of the forget term (NPO, or the ascended forget NLL)",
        flag="--forget-weight",
        range=_pos(0),
    )
    retain_weight: float = opt(1.0, "weight of the retain NLL", flag="--retain-weight", range=_pos(0))
    divergence_weight: float = opt(
        1.0, "weight of the retain divergence (whatever its kind)", flag="--divergence-weight", range=_pos(0)
    )
    npo_beta: float = opt(
        0.5,
        "NPO beta: -(2/beta) mean log sigmoid(beta (log p_ref - log p))",
        flag="--npo-beta",
        range=_pos(0, open_low=True),
    )
    renyi_alpha: float = opt(0.5, "Rényi alpha (1 = KL)", flag="--renyi-alpha", range=_pos(0, open_low=True))
    npo_level: str = opt(
        "token",
        "token: per answer token (the seed, Atyaephyra) | sequence: per-sequence sums (the NPO paper, open-unlearning)",
        flag="--npo-level",
        choices=NPO_LEVELS,
    )
    retain_divergence: str = opt(
        "renyi",
        "renyi | kl | token_renyi_legacy (the seed's term, not a divergence) | none",
        flag="--retain-divergence",
        choices=RETAIN_DIVERGENCES,
    )
    sugd_forget_factor: float = opt(-1.0, "AILS-NTUA SUGD: factor of forget rows")
    sugd_retain_factor: float = opt(0.5, "AILS-NTUA SUGD: factor of retain rows")
    simnpo_beta: float = opt(4.5, "SimNPO beta", range=_pos(0, open_low=True), flag="--simnpo-beta")
    simnpo_delta: float = opt(0.0, "SimNPO margin delta", flag="--simnpo-delta")
    dpo_beta: float = opt(0.1, "DPO / IdkDPO / AltPO beta", range=_pos(0, open_low=True), flag="--dpo-beta")
    alternatives: str | None = opt(
        None,
        "alternative answers for idk_dpo / altpo: .txt (one per line) or .jsonl (text/answer[, id]); "
        "idk_dpo default: the packaged refusals",
        flag="--alternatives",
        path=True,
    )
    rmu_layer: int | None = opt(
        None,
        "RMU: decoder layer whose output is steered (null: 7, or the middle layer of a shallower model)",
        range=_pos(0),
        flag="--rmu-layer",
    )
    rmu_steering: float = opt(
        20.0,
        "RMU: steering coefficient c (norm of the control vector)",
        range=_pos(0, open_low=True),
        flag="--rmu-steering",
    )
    undial_strength: float = opt(
        10.0,
        "UNDIAL: how far the true token's reference logit is lowered",
        range=_pos(0),
        flag="--undial-strength",
    )
    wga_beta: float = opt(1.0, "WGA: weight p^beta", range=_pos(0), flag="--wga-beta")
    satimp_beta1: float = opt(5.0, "SatImp: weight p^beta1 (1-p)^beta2", range=_pos(0), flag="--satimp-beta1")
    satimp_beta2: float = opt(1.0, "SatImp: weight p^beta1 (1-p)^beta2", range=_pos(0), flag="--satimp-beta2")
    pdu_dual_step: float = opt(
        1.0, "PDU: step size of the dual (multiplier) update", range=_pos(0), flag="--pdu-dual-step"
    )
    pdu_retain_eps: float | None = opt(
        None,
        "PDU: bound on the retain NLL (null: the retain NLL of the first step)",
        range=_pos(0),
        flag="--pdu-retain-eps",
    )
    pdu_dual_warmup_epochs: float = opt(
        5.0,
        "PDU: the multiplier stays at its initial value for the first N epochs (passes over the chunk "
        "being trained), then updates every step (open-unlearning dual_warmup_epochs 5); 0: from the first step",
        range=_pos(0),
        flag="--pdu-dual-warmup",
    )


@dataclass
class ScheduleOptions:
    chunk_size: int = opt(
        32,
        "forget rows per chunk (the remainder forms a last smaller chunk)",
        flag="--chunk-size",
        range=_pos(1),
    )
    retain_per_forget: float = opt(
        7,
        "retain rows per forget row in a chunk; 0 = forget rows only",
        flag="--retain-per-forget",
        range=_pos(0, high=1e6),
    )
    split_retain: bool = opt(
        True,
        "retain rows taken cyclically from a cursor carried across chunks; false: every chunk takes all retain rows in a seeded permutation",
        switch=("--no-split-retain", False),
    )
    sequential: bool = opt(
        True,
        "false: one pass over all forget rows with the same interleaving",
        switch=("--no-sequential", False),
    )
    epochs: float = opt(
        5,
        "passes over each chunk (batches in plan order, no shuffling); a calibrated run that does not set it takes calibration.max_epochs",
        flag="--epochs",
        range=_pos(0, open_low=True, high=1e6),
    )
    optimizer_scope: str = opt(
        "chunk",
        "chunk: fresh optimizer + LR decay per chunk (seed) | run: one for all (a gated calibrated run that leaves it unset: run, except under FSDP)",
        flag="--optimizer-scope",
        choices=OPTIMIZER_SCOPES,
    )


@dataclass
class TrainOptions:
    output_dir: str | None = opt(None, "where the run writes everything", flag="--output-dir", path=True)
    learning_rate: float = opt(1e-4, "learning rate", flag="--lr", range=_pos(0, open_low=True))
    batch_size: int = opt(8, "global batch (split across processes)", flag="--batch-size", range=_pos(1))
    gradient_accumulation_steps: int = opt(
        1, "gradient accumulation steps", flag="--grad-accum", range=_pos(1)
    )
    seed: int = opt(
        9550,
        "one seed for everything; chunk c is seeded with seed + c",
        flag="--seed",
        range=_pos(0, high=2**32 - 1),
    )
    optimizer: str = opt(
        "adamw", "adamw | adam (AdamW with weight decay 0)", flag="--optimizer", choices=("adamw", "adam")
    )
    weight_decay: float = opt(0.0, "weight decay", range=_pos(0))
    lr_scheduler: str = opt(
        "linear", "any transformers scheduler name; per chunk when the scope is chunk", flag="--lr-scheduler"
    )
    warmup_ratio: float = opt(0.0, "warm-up share of the steps", range=_pos(0, high=1, open_high=True))
    max_grad_norm: float = opt(1.0, "gradient clipping (0: none)", range=_pos(0))
    sam_rho: float = opt(
        0.0,
        "sharpness-aware minimization radius rho (any method): the gradient is taken at theta + rho g/||g|| "
        "over the trained weights, applied at theta; ~2x the step's cost; 0: off",
        flag="--sam-rho",
        range=_pos(0),
    )
    logging_steps: int = opt(1, "log every N steps", range=_pos(1))
    merge: bool = opt(True, "also write DIR/model (merged weights + tokenizer)", switch=("--no-merge", False))
    overwrite: bool = opt(False, "replace a different run in --output-dir", switch=("--overwrite", True))
    reference_cache: str = opt(
        "auto",
        "auto (full cache where the exact distributions fit the budget, else none) | off | full | topk (approximate): see Performance",
        flag="--reference-cache",
        choices=REFERENCE_CACHE_MODES,
    )
    reference_cache_budget_gib: float = opt(
        8.0, "memory budget of the full reference cache", range=_pos(0, open_low=True)
    )
    reference_cache_topk: int = opt(256, "k of the top-k reference cache", range=_pos(1, high=2**31 - 1))
    reference_cache_dtype: str = opt(
        "float16", "storage dtype of cached distributions", choices=REFERENCE_CACHE_DTYPES
    )
    plots: bool = opt(True, "draw plots", switch=("--no-plots", False))
    progress: bool = opt(True, "progress bar", switch=("--no-progress", False))


@dataclass
class CalibrationOptions:
    """Evaluation during training, the calibration gate, stopping and checkpoint selection
    (train/calibration.py). Without a holdout there is nothing to calibrate against: `auto` then
    evaluates nothing and the run is uncalibrated (one warning says so)."""

    mode: str = opt(
        "gate",
        "gate (stop pushing forget units that look unseen) | stop (stop/select only) | off",
        flag="--calibration",
        choices=CALIBRATION_MODES,
    )
    eval_every: str = opt(
        "auto",
        "evaluate during training: auto (with a holdout: 4 per chunk, 8 in the last) | off | chunk | N steps",
        flag="--eval-every",
        own_check=True,
    )
    holdout: str | None = opt(
        None, "never-trained documents/records the forget data should resemble", flag="--holdout", path=True
    )
    forget_documents: str | None = opt(
        None, "documents of the forget records (e.g. mia/member.jsonl)", flag="--forget-documents", path=True
    )
    unlearn_documents: bool = opt(
        True,
        "the forget documents are forget data too: one forget row per document whose id is a forget unit's (whole text labelled, after the records in the plan); false in the upstream presets",
    )
    tolerance: float = opt(
        0.05,
        "stop (last chunk) when |MIA AUC - 0.5| <= this, or once the AUC is below 0.5 - this",
        flag="--calibration-tolerance",
        range=_pos(0, high=0.5),
    )
    gate_quantile: float = opt(
        0.5, "gate threshold: this quantile of the holdout losses", range=_pos(0, high=1)
    )
    gate_spread: bool = opt(
        True,
        "each forget unit gets its own target quantile of the holdout losses, (rank + 1/2)/n around gate_quantile by its loss at the first evaluation, so the forgotten units end spread like the holdout instead of bunched at one quantile (false: every unit at gate_quantile, as before)",
    )
    gate_refresh: int = opt(
        0,
        "refresh the gate this many times between two evaluations, from the forget units' and the holdout's losses only (no generation), so that a unit that went past its target or fell back below it is seen within a few steps; 0: only at evaluations (4 made the demo's worst case no better: README 'Calibrated unlearning')",
        range=_pos(0),
    )
    dense_near: float = opt(
        0.0,
        "with eval_every auto: once the last evaluation's MIA AUC is within this of 0.5, evaluate 4 times as often, so that the crossing of 0.5 falls between two close evaluations instead of between two far ones (0: off; a gated calibrated run that leaves it unset: 0.15)",
        range=_pos(0, high=0.5),
    )
    push_answered: bool = opt(
        False,
        "with the gate: a sampled forget record whose greedy answer still matched exactly at the last evaluation stays pushed whatever its document's gate says, so that the knowledge is forgotten and not only the document's loss raised (a gated calibrated run that leaves it unset: true)",
    )
    retain_floor: float = opt(
        0.0,
        "quality floor of the selection and the calibrated stop: a candidate whose sampled retain EM or ROUGE-L is below this x its value at the first evaluation comes after every one that is not (0: off; a gated calibrated run that leaves it unset: 0.9)",
        range=_pos(0, high=1),
    )
    retain_guard: bool = opt(
        False,
        "with the retain floor: the floor held during the training too; each evaluation multiplies the retain-side terms' weight by 2 ** ((floor - ratio) / (1 - floor)), ratio = the worse of sampled retain EM and ROUGE-L against the start, kept within [1, 16] (train/retain_guard.py; a gated calibrated run that leaves it unset: true)",
    )
    forget_em_max: float = opt(
        1.0,
        "quality floor of the selection and the calibrated stop: a candidate whose sampled forget EM is above this comes after every one that is not (1: off; a gated calibrated run that leaves it unset: 0.2)",
        range=_pos(0, high=1),
    )
    pull: float = opt(
        0.0,
        "with the gate and --unlearn-documents: the weight of a descent term on the forget document rows whose loss in the batch is above the holdout quantile pull_band above their own target, so that a document pushed past unseen is drawn back (the forget term's fixed point becomes the holdout's loss distribution instead of a floor); 0: off (a gated calibrated run that leaves it unset: 1)",
        range=_pos(0),
    )
    pull_band: float = opt(
        0.1,
        "the hysteresis of calibration.pull, in quantiles of the holdout losses: a document is pushed while below its target quantile q, pulled back while above q + pull_band, left alone between (a gated calibrated run that leaves it unset: 0.25)",
        range=_pos(0, high=1),
    )
    npo_beta_from_gap: bool = opt(
        False,
        "NPO's beta from the loss gap g measured at the first evaluation (the holdout's median loss minus the forget units' median, per token): beta = min(objective.npo_beta, ln(3) / g), so that token-level NPO still weighs a forget token 2 sigma(-beta g) = 1/2 where its unit reaches the holdout's loss instead of ~0 (token-level NPO methods only; objective.npo_beta set turns it off; a gated calibrated run that leaves it unset: true)",
    )
    max_epochs: float | None = opt(
        10,
        "passes over each chunk of a calibrated run (a holdout, mode gate or stop, evaluations on) that does not set schedule.epochs: the gate and the calibrated stop end chunks and the run early, so the budget is a ceiling; null: schedule.epochs' default (5) as in an uncalibrated run",
        flag="--max-epochs",
        range=_pos(0, open_low=True, high=1e6),
    )
    last_chunk_factor: float = opt(
        1.0,
        "the last chunk's passes as a multiple of schedule.epochs: it is where a calibrated run stops and is selected, and its rows see the smallest learning rate of a decaying run-long schedule; the calibrated stop ends it early, so a larger budget costs time only where the run has not reached its target (a gated calibrated run that leaves it unset: 2)",
        flag="--last-chunk-factor",
        range=_pos(0, open_low=True, high=100),
    )
    backtrack: int = opt(
        0,
        "after an evaluation whose MIA AUC is below 0.5 - tolerance (an overshoot), go back to the latest evaluation that was not one and met the quality floors (its adapter weights and optimizer state) and train on with the learning rate x backtrack_factor, at most this many times a run; then an overshoot stops the run as before (0: off)",
        flag="--backtrack",
        range=_pos(0, high=100),
    )
    backtrack_factor: float = opt(
        0.5,
        "with calibration.backtrack: the learning rate's factor after each backtrack (compounding)",
        range=_pos(0, open_low=True, high=1, open_high=True),
    )
    extend: int = opt(
        0,
        "when the last chunk's steps are spent and the MIA AUC is still above 0.5 + tolerance and still falling (at its lowest of that pass, or the loss gap below its lowest of the pass) or the gate ended that pass before its steps were spent (every row gated off: it did not train), train the last chunk once more with the same learning rates (under the gate with every chunk's rows, forget and retain: calibration.extend_revisit), at most this many times (0: off; the seed's epochs are then the budget; a gated calibrated run that leaves it unset: 2)",
        flag="--extend",
        range=_pos(0, high=20),
    )
    extend_revisit: bool = opt(
        True,
        "with the gate: an extension pass (calibration.extend) trains every chunk's rows, forget and retain, in the schedule's order, the gate deciding which forget rows are pushed, in the last chunk's number of steps; the AUC is measured over every forget document, so units of earlier chunks that relapsed are pushed back too (false: the last chunk's own rows only)",
    )
    bisect: int = opt(
        0,
        "when an evaluation finds the MIA AUC jumped from above 0.5 + tolerance to below 0.5 - tolerance, evaluate up to this many states on the straight line between the two adapter weights (bisection towards the crossing of 0.5); they become candidates for the kept state, the training goes on from where it was (0: off; a gated calibrated run that leaves it unset: 3)",
        flag="--bisect",
        range=_pos(0, high=20),
    )
    bisect_selected: int = opt(
        0,
        "at the run's end, when the state the selection would keep misses the retain floor, search the straight lines from its nearest evaluations that met it (the latest before, the first after) towards it; when its MIA AUC is outside 0.5 +- tolerance, the lines between it and its nearest evaluations on the other side of the band's edge; by bisection, at most this many states a line and twice as many in all, until one within the band meets the floors; they become candidates for the kept state (0: off; a gated calibrated run that leaves it unset: 3)",
        flag="--bisect-selected",
        range=_pos(0, high=20),
    )
    anchor_documents: str | None = opt(
        None,
        "documents never trained on, other than the holdout's and the evaluation's non-members: each step adds calibration.anchor x the mean, over anchor_per_step of them, of a Huber distance (1-nat knee) between their loss and the reference's, so that pushing the forget documents up does not raise the loss of unseen documents like them and move the MIA's target away (train/anchor.py)",
        flag="--anchor-documents",
        path=True,
    )
    anchor: float = opt(
        1.0,
        "with anchor_documents: the anchor term's weight (0: off)",
        flag="--anchor",
        range=_pos(0),
    )
    anchor_per_step: int = opt(
        2, "with anchor_documents: anchor documents in each step's term", range=_pos(1, high=1024)
    )
    revisit: bool = opt(
        False,
        "with the gate: the last chunk also holds every earlier chunk's forget rows, the gate deciding which are pushed, so that units that relapsed while later chunks trained are pushed back before the run stops (the last chunk grows by the earlier forget rows)",
    )
    select: str = opt(
        "best",
        "which checkpoint to keep: best (highest proxy score) | last",
        flag="--select",
        choices=SELECTIONS,
    )
    eval_items: int = opt(
        32, "sampled forget and retain records per evaluation", flag="--eval-items", range=_pos(1)
    )
    eval_max_new_tokens: int = opt(64, "generation length of the evaluation", range=_pos(1))
    eval_batch_size: int = opt(16, "evaluation batch size", range=_pos(1))
    mmlu: str | None = opt(
        None, "MMLU data: each evaluation scores a few questions a subject", flag="--eval-mmlu", path=True
    )
    mmlu_items: int = opt(
        5, "MMLU questions a subject per evaluation", flag="--eval-mmlu-items", range=_pos(1)
    )


SECTIONS = {
    "model": ModelOptions,
    "data": DataOptions,
    "lora": LoraOptions,
    "objective": ObjectiveOptions,
    "schedule": ScheduleOptions,
    "train": TrainOptions,
    "calibration": CalibrationOptions,
}

# old names still read (with a deprecation warning): dotted old key -> new field name
ALIASES = {
    "objective.npo_mult": "forget_weight",
    "objective.rt_mult": "retain_weight",
    "objective.renyi_mult": "divergence_weight",
    "schedule.positive_ratio": "retain_per_forget",
}
# old flags still accepted (hidden from --help): old flag -> new flag
FLAG_ALIASES = {
    "--npo-mult": "--forget-weight",
    "--rt-mult": "--retain-weight",
    "--renyi-mult": "--divergence-weight",
    "--positive-ratio": "--retain-per-forget",
}


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI, validate() and the README table see it."""

    key: str  # dotted: section.name
    type: Any
    default: Any
    help: str
    flag: str | None
    switch: tuple[str, Any] | None
    choices: tuple | None
    range: tuple | None
    path: bool
    own_check: bool


@functools.cache
def type_hints(cls) -> dict[str, Any]:
    """typing.get_type_hints of a declared dataclass, resolved once per class (every parser built, and
    every command, asks again: resolving them was most of building the parser). Read, never change."""
    return typing.get_type_hints(cls)


def option_specs(resolve_choices: bool = True) -> list[OptionSpec]:
    """Every option, in declaration order. With `resolve_choices`, the choices of objective.method are
    the method names (``presets.METHOD_NAMES``); without, that option has no fixed choices (the CLI's
    case: argparse takes any name and validate() refuses an unknown one in its own words)."""
    out = []
    for section, cls in SECTIONS.items():
        hints = type_hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            choices = m.get("choices")
            if choices == "objectives" and not resolve_choices:
                choices = None
            elif choices == "objectives":
                choices = METHOD_NAMES
            out.append(
                OptionSpec(
                    key=f"{section}.{f.name}",
                    type=hints[f.name],
                    default=default,
                    help=m.get("help", ""),
                    flag=m.get("flag"),
                    switch=m.get("switch"),
                    choices=choices,
                    range=m.get("range"),
                    path=bool(m.get("path")),
                    own_check=bool(m.get("own_check")),
                )
            )
    return out
