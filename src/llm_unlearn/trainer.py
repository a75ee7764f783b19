"""The unlearning step: one `transformers.Trainer` subclass whose `compute_loss` splits the batch
into forget and retain rows and adds up the loss terms.

    total = npo_mult * NPO(forget rows) + rt_mult * NLL(retain rows) + renyi_mult * D(retain rows)

Only answer positions (shifted label != -100) go through the output layer: a forward pre-hook on
the model's output embedding selects those hidden states, so the forward still runs through
whatever wrapper the Trainer put around the model (DDP, FSDP, DeepSpeed) and no [B, T, V] logits
tensor is built. The reference model is the same model with the adapter disabled, run under
`torch.no_grad()` on only the rows that need it (forget rows for NPO, retain rows for the
divergence) -- or read from a precomputed cache (see `reference_cache.py`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer

from llm_unlearn import losses
from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.errors import NonFiniteLossError

TERMS = ("npo", "retain_nll", "divergence", "forget_nll", "sugd", "forget_active")


# ----------------------------------------------------------------------------- answer-only head
class AnswerHeadSelector:
    """Forward pre-hook on the output layer: when `index` is set, the hidden states [B, T, H] are
    replaced by the rows `index` of their flattened view, as [1, N, H]; the logits come out as
    [1, N, V] for the answer positions only. With `index` None the model behaves normally."""

    def __init__(self, model):
        head = _peft_model(model).get_output_embeddings()
        if head is None:
            raise ValueError("the model has no output embeddings; cannot select answer positions")
        self.index: torch.Tensor | None = None
        self.handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.index is None:
            return None
        hidden = args[0]
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index)
        return (flat.unsqueeze(0), *args[1:])

    @contextlib.contextmanager
    def select(self, index: torch.Tensor | None):
        prev, self.index = self.index, index
        try:
            yield
        finally:
            self.index = prev

    def remove(self) -> None:
        self.handle.remove()


def _peft_model(model):
    """Unwrap DDP / accelerate wrappers (`.module`) to reach the PEFT (or plain) model."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@dataclass
class AnswerPositions:
    """Where the answer tokens are: `flat` indexes the flattened [B*T] positions whose logits predict
    a labelled token, `targets` are those tokens, `rows` the batch row of each."""

    flat: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor


def answer_positions(labels: torch.Tensor) -> AnswerPositions:
    """labels [B, T] (unshifted, -100 = ignore) -> positions t whose logits predict labels[:, t+1]."""
    B, T = labels.shape
    nxt = torch.full_like(labels, -100)
    nxt[:, :-1] = labels[:, 1:]
    valid = nxt.ne(-100)
    flat = valid.reshape(-1).nonzero(as_tuple=True)[0]
    rows = torch.div(flat, T, rounding_mode="floor")
    return AnswerPositions(flat=flat, targets=nxt.reshape(-1)[flat], rows=rows)


def answer_logits(
    model, selector: AnswerHeadSelector | None, input_ids, attention_mask, pos: AnswerPositions
):
    """Logits [N, V] at the answer positions. Without a selector, a full forward and a gather."""
    if selector is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, pos.flat)
    with selector.select(pos.flat):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.logits[0]


token_log_probs = losses.token_log_probs


# ----------------------------------------------------------------------------- the objective
@dataclass
class ReferenceOutputs:
    """What the reference contributes for the rows of one batch."""

    forget_logp: torch.Tensor | None = None  # [N_f] log p_ref(target) at forget answer tokens
    retain_logits: torch.Tensor | None = None  # [N_r, V] reference logits at retain answer tokens
    retain_logp: torch.Tensor | None = None  # [N_r] log p_ref(target) at retain answer tokens
    # top-k reference (cache mode topk): (log-probs [N_r, k], indices [N_r, k], tail log-prob [N_r])
    retain_topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def needs_reference(obj: ObjectiveOptions) -> tuple[bool, bool]:
    """(forget rows need reference, retain rows need reference)."""
    if obj.method != "npo_rt_div":
        return False, False
    forget = obj.npo_mult > 0
    retain = obj.retain_divergence != "none" and obj.renyi_mult > 0
    return forget, retain


def compute_reference(model, selector, batch, obj: ObjectiveOptions, pos: AnswerPositions | None = None):
    """Reference = the same model with its adapter disabled, no autograd, only the needed rows."""
    need_f, need_r = needs_reference(obj)
    is_forget = batch["is_forget"]
    rows = torch.zeros_like(is_forget)
    if need_f:
        rows |= is_forget
    if need_r:
        rows |= ~is_forget
    out = ReferenceOutputs()
    if not bool(rows.any()):
        return out
    idx = rows.nonzero(as_tuple=True)[0]
    sub_labels = batch["labels"].index_select(0, idx)
    sub_forget = is_forget.index_select(0, idx)
    sub_pos = answer_positions(sub_labels)
    peft = _peft_model(model)
    disable = peft.disable_adapter() if hasattr(peft, "disable_adapter") else contextlib.nullcontext()
    with torch.no_grad(), disable:
        logits = answer_logits(
            model,
            selector,
            batch["input_ids"].index_select(0, idx),
            batch["attention_mask"].index_select(0, idx),
            sub_pos,
        )
    tok_forget = sub_forget.index_select(0, sub_pos.rows)
    if need_f:
        out.forget_logp = token_log_probs(logits[tok_forget], sub_pos.targets[tok_forget])
    if need_r:
        out.retain_logits = logits[~tok_forget]
        out.retain_logp = token_log_probs(out.retain_logits, sub_pos.targets[~tok_forget])
    return out


def unlearning_loss(
    model,
    batch,
    obj: ObjectiveOptions,
    selector: AnswerHeadSelector | None = None,
    reference: ReferenceOutputs | None = None,
    term_scale: dict[str, float] | None = None,
    row_nll_out: dict | None = None,
):
    """The loss of one batch and its terms (detached floats for logging).

    `term_scale` multiplies each term where it enters the total (not the logged values): see
    `global_term_scale` (data parallelism). It may be a function of the pushed forget rows [B] (the
    gate and the caps below decide them here), returning that dict.

    Calibration (calibration.py): `forget_active` [B] bool drops forget rows from the forget term;
    `forget_nll_cap` [B] float drops a forget row whose mean answer NLL in this very forward pass is
    already >= its cap (inf: no cap), so a row stops being pushed at the step it reaches the holdout's
    typical loss, not only at the next evaluation.

    batch: input_ids [B, T], attention_mask [B, T], labels [B, T] (-100 on prompt and padding),
    is_forget [B] bool. `reference` may come from a cache; otherwise it is computed here.
    A term whose rows are absent from the batch is exactly 0.
    """
    labels, is_forget = batch["labels"], batch["is_forget"].bool()
    batch = {**batch, "is_forget": is_forget}
    pos = answer_positions(labels)
    logits = answer_logits(model, selector, batch["input_ids"], batch["attention_mask"], pos)
    logp = token_log_probs(logits, pos.targets)
    tok_forget = is_forget.index_select(0, pos.rows)
    tok_retain = ~tok_forget
    # the calibration gate (calibration.py): forget rows marked inactive stay in the batch but leave
    # the forget term; `push` = the forget rows (and their tokens) that the forget term still pushes
    push = _pushed_rows(batch, is_forget)
    caps = batch.get("forget_nll_cap")
    if caps is not None:
        row_nll = row_mean_nll(logp.detach(), pos.rows, labels.shape[0])
        push = push & (row_nll < caps.to(logp.device, logp.dtype))
        if row_nll_out is not None:  # the caller follows the units' losses between evaluations
            row_nll_out["row_nll"] = row_nll
    tok_push = push.index_select(0, pos.rows)
    zero = logits.sum() * 0.0  # keeps the graph connected when a term is absent
    if callable(term_scale):
        term_scale = term_scale(push)
    sc = (lambda name: term_scale.get(name, 1.0)) if term_scale else (lambda name: 1.0)
    terms: dict[str, torch.Tensor] = {}
    has_f, has_r = bool(tok_push.any()), bool(tok_retain.any())
    if ("forget_active" in batch or caps is not None) and bool(is_forget.any()):
        terms["forget_active"] = (push.sum() / is_forget.sum()).detach().to(logp.dtype)

    if obj.method == "npo_rt_div":
        if reference is None and any(needs_reference(obj)):
            reference = compute_reference(model, selector, batch, obj, pos)
        total = zero
        if obj.npo_mult > 0 and has_f:
            f_logp, f_ref = logp[tok_push], reference.forget_logp  # the reference covers every forget token
            if f_ref.shape[0] != f_logp.shape[0]:
                f_ref = f_ref[tok_push[tok_forget]]
            if obj.npo_level == "sequence":
                B = labels.shape[0]
                f_rows = pos.rows[tok_push]
                f_logp = torch.zeros(B, device=logp.device, dtype=logp.dtype).index_add(0, f_rows, f_logp)
                f_ref = torch.zeros(B, device=logp.device, dtype=f_ref.dtype).index_add(
                    0, f_rows, f_ref.float()
                )
                f_logp, f_ref = f_logp[push], f_ref[push]
            terms["npo"] = losses.npo_loss(f_logp, f_ref.to(f_logp.dtype), obj.npo_beta)
            total = total + obj.npo_mult * sc("npo") * terms["npo"]
        if has_r:
            terms["retain_nll"] = losses.nll_loss(logp[tok_retain])
            total = total + obj.rt_mult * sc("retain_nll") * terms["retain_nll"]
            if obj.retain_divergence != "none" and obj.renyi_mult > 0:
                terms["divergence"] = _retain_divergence(obj, logits[tok_retain], logp[tok_retain], reference)
                total = total + obj.renyi_mult * sc("divergence") * terms["divergence"]
    elif obj.method == "gradient_ascent":
        total = zero
        if has_f:
            terms["forget_nll"] = losses.nll_loss(logp[tok_push])
            total = total - obj.npo_mult * sc("forget_nll") * terms["forget_nll"]
    elif obj.method == "gradient_difference":
        total = zero
        if has_f:
            terms["forget_nll"] = losses.nll_loss(logp[tok_push])
            total = total - obj.npo_mult * sc("forget_nll") * terms["forget_nll"]
        if has_r:
            terms["retain_nll"] = losses.nll_loss(logp[tok_retain])
            total = total + obj.rt_mult * sc("retain_nll") * terms["retain_nll"]
    elif obj.method == "sugd":
        B = labels.shape[0]
        sums = torch.zeros(B, device=logp.device, dtype=logp.dtype).index_add(0, pos.rows, -logp)
        counts = torch.zeros(B, device=logp.device, dtype=logp.dtype).index_add(
            0, pos.rows, torch.ones_like(logp)
        )
        per_sample = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
        factors = torch.where(
            is_forget,
            torch.full_like(per_sample, obj.sugd_forget_factor),
            torch.full_like(per_sample, obj.sugd_retain_factor),
        )
        factors = torch.where(is_forget & ~push, torch.zeros_like(factors), factors)  # gated-off rows
        terms["sugd"] = losses.sugd_loss(per_sample, factors)
        total = zero + sc("sugd") * terms["sugd"]
        if bool(tok_forget.any()):
            terms["forget_nll"] = losses.nll_loss(logp[tok_forget]).detach()
        if has_r:
            terms["retain_nll"] = losses.nll_loss(logp[tok_retain]).detach()
    else:  # pragma: no cover - validated in config
        raise ValueError(f"unknown objective {obj.method}")

    for name, value in terms.items():
        losses.check_finite(name, value)
    losses.check_finite("loss", total)
    return total, {k: float(v.detach()) for k, v in terms.items()}


def row_mean_nll(logp: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[n_rows] mean of -logp over each row's answer tokens (`rows` [N] gives each token's row); inf for
    a row without answer tokens (never below a cap)."""
    sums = torch.zeros(n_rows, device=logp.device, dtype=logp.dtype).index_add(0, rows, -logp)
    counts = torch.zeros(n_rows, device=logp.device, dtype=logp.dtype).index_add(
        0, rows, torch.ones_like(logp)
    )
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("inf")))


def _pushed_rows(batch, is_forget: torch.Tensor) -> torch.Tensor:
    """[B] bool: the forget rows that the forget term pushes (all forget rows without a gate)."""
    active = batch.get("forget_active")
    return is_forget if active is None else is_forget & active.bool().to(is_forget.device)


def _retain_divergence(obj: ObjectiveOptions, logits_r, logp_r, reference: ReferenceOutputs):
    kind = obj.retain_divergence
    if kind == "token_renyi_legacy":
        return losses.legacy_token_renyi(logp_r, reference.retain_logp.to(logp_r.dtype), obj.renyi_alpha)
    mask = torch.ones(logits_r.shape[0], dtype=torch.bool, device=logits_r.device)
    ref = reference.retain_logits
    alpha = 1.0 if kind == "kl" else obj.renyi_alpha
    if reference.retain_topk is not None:  # top-k reference cache (KL is the alpha = 1 case)
        topk_logp, topk_idx, tail = reference.retain_topk
        return losses.renyi_divergence_topk(
            logits_r, topk_logp, topk_idx, mask, alpha, ref_tail_logprobs=tail
        )
    if kind == "kl":
        return losses.kl_divergence(logits_r, ref, mask)
    return losses.renyi_divergence(logits_r, ref, mask, alpha)


def global_term_scale(
    batch, obj: ObjectiveOptions, push: torch.Tensor | None = None
) -> dict[str, float] | None:
    """Per-term weights that make data-parallel training compute the loss of the global batch.

    Each process averages a term over its own tokens (or rows), and DDP / FSDP / DeepSpeed then
    average the gradients over the processes: a mean of means, which over-weights the tokens of a
    process that holds few of them (a process with no forget row would even halve the NPO term).
    Scaling a term by `local count * world size / global count` turns that average back into the
    mean over all the tokens of the global batch, as one process holding the whole batch computes
    it. One small all-reduce per step; None on a single process.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    labels, is_forget = batch["labels"], batch["is_forget"].bool()
    push = _pushed_rows(batch, is_forget) if push is None else push  # the forget term counts only pushed rows
    answer = labels[:, 1:].ne(-100)  # positions that predict a labelled token
    counts = torch.stack(
        [
            answer[push].sum(),
            answer[~is_forget].sum(),
            push.sum(),
            torch.tensor(labels.shape[0], device=labels.device),
        ]
    ).to(torch.float64)
    total = counts.clone()
    dist.all_reduce(total)
    world = dist.get_world_size()
    f_tok, r_tok, f_rows, rows = (float(c * world / t) if t > 0 else 0.0 for c, t in zip(counts, total))
    return {
        "npo": f_rows if obj.npo_level == "sequence" else f_tok,
        "forget_nll": f_tok,
        "retain_nll": r_tok,
        "divergence": r_tok,
        "sugd": rows,
    }


# ----------------------------------------------------------------------------- the Trainer
class UnlearnTrainer(Trainer):
    """A `transformers.Trainer` whose loss is the unlearning objective. Batches are taken in the
    order of the chunk plan (no shuffling); each loss term is logged."""

    def __init__(
        self, *args, objective: ObjectiveOptions, answer_only: bool = True, reference_cache=None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.selector = AnswerHeadSelector(self.model) if answer_only else None
        self.reference_cache = reference_cache
        self.chunk_index = 0
        self.forget_active: dict[int, bool] | None = None  # row_key -> pushed? (calibration gate)
        self.forget_caps: dict[int, float] | None = None  # row_key -> answer-NLL cap (calibration gate)
        self.unit_row: dict[int, int] = {}  # record row_key -> the row_key of its document row
        self.last_row_nll: dict[int, float] = {}  # capped row_key -> its loss in its latest batch
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        # the loss is a mean per micro-batch: let the Trainer divide it by the accumulation steps
        # (with True it expects a loss summed over `num_items_in_batch`, which this one is not)
        self.model_accepts_loss_kwargs = False

    def _active(self, key: int) -> bool:
        """The gate of a forget row: as the last evaluation decided, and, for a record whose document is
        a forget row too, off as soon as that document's latest in-batch loss has reached its cap."""
        if not self.forget_active.get(key, True):
            return False
        doc = self.unit_row.get(key)
        if (
            doc is None
            or self.forget_caps is None
            or doc not in self.forget_caps
            or doc not in self.last_row_nll
        ):
            return True
        return self.last_row_nll[doc] < self.forget_caps[doc]

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        return SequentialSampler(ds)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        reference = None
        if self.reference_cache is not None and "row_key" in inputs:
            reference = self.reference_cache.lookup(inputs, self.objective)
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "labels", "is_forget")}
        if "row_key" in inputs and (self.forget_active is not None or self.forget_caps is not None):
            keys, dev = inputs["row_key"].tolist(), inputs["is_forget"].device  # the calibration gate
            if self.forget_active is not None:
                batch["forget_active"] = torch.tensor(
                    [self._active(k) for k in keys], dtype=torch.bool, device=dev
                )
            if self.forget_caps is not None:
                batch["forget_nll_cap"] = torch.tensor(
                    [self.forget_caps.get(k, float("inf")) for k in keys], dtype=torch.float32, device=dev
                )
        realized: dict[str, Any] = {}

        def scale_of(push):  # None on one process; a collective under data parallelism
            realized["scale"] = global_term_scale(batch, self.objective, push)
            return realized["scale"]

        try:
            loss, terms = unlearning_loss(
                model, batch, self.objective, self.selector, reference, scale_of, realized
            )
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(
                f"{exc} (chunk {self.chunk_index + 1}, step {self.state.global_step + 1} of this chunk); "
                "the last good checkpoint is kept"
            ) from None
        if "row_nll" in realized and self.forget_caps is not None:  # the latest loss of each capped row
            for k, v in zip(inputs["row_key"].tolist(), realized["row_nll"].tolist()):
                if k in self.forget_caps:
                    self.last_row_nll[k] = v
        scale = realized.get("scale")
        if scale is not None:  # log the terms of the global batch, not this process's share
            terms = _global_terms(terms, scale, loss.device)
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for k in TERMS:
                if self._counts.get(k):
                    logs[k] = self._sums[k] / self._counts[k]
            logs["chunk"] = self.chunk_index + 1
            self._sums, self._counts = {}, {}
        super().log(logs, start_time)


def _global_terms(terms: dict[str, float], scale: dict[str, float], device) -> dict[str, float]:
    import torch.distributed as dist

    world = dist.get_world_size()
    vec = torch.tensor(
        [terms.get(k, 0.0) * scale.get(k, 1.0) for k in TERMS] + [float(k in terms) for k in TERMS],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(vec)
    n = len(TERMS)
    return {k: float(vec[i]) / world for i, k in enumerate(TERMS) if vec[n + i] > 0}


def steps_per_chunk(
    n_rows: int, per_device_batch: int, world_size: int, grad_accum: int, epochs: float
) -> int:
    """Optimizer steps the Trainer takes on a chunk of n_rows (as transformers computes them)."""
    batches = math.ceil(n_rows / (per_device_batch * world_size))
    per_epoch = max(batches // grad_accum, 1)
    return math.ceil(epochs * per_epoch)
