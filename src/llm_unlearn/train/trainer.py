"""The `transformers.Trainer` subclass of an unlearning run: batches in the chunk plan's order, the
loss of ``train/loss.py``, the calibration gate applied per row, each term logged, and exact term
weighting under data parallelism."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer

from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.errors import NonFiniteLossError
from llm_unlearn.train import methods
from llm_unlearn.train import terms as T
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import pushed_rows, unlearning_loss
from llm_unlearn.train.reference import LiveReference, as_reference


def global_term_scale(batch, push: torch.Tensor | None = None) -> dict[str, float] | None:
    """Per-unit weights that make data-parallel training compute the loss of the global batch.

    Each process averages a term over its own tokens (or rows), and DDP / FSDP / DeepSpeed then
    average the gradients over the processes: a mean of means, which over-weights the tokens of a
    process that holds few of them (a process with no forget row would even halve the NPO term).
    Scaling a term by `local count * world size / global count` of its unit (terms.UNITS) turns that
    average back into the mean over all the tokens of the global batch, as one process holding the
    whole batch computes it. One small all-reduce per step; None on a single process.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    labels, is_forget = batch["labels"], batch["is_forget"].bool()
    push = pushed_rows(batch, is_forget) if push is None else push  # the forget term counts only pushed rows
    answer = labels[:, 1:].ne(IGNORE_INDEX)  # positions that predict a labelled token
    counts = torch.stack(
        [
            answer[push].sum(),
            answer[~is_forget].sum(),
            push.sum(),
            torch.tensor(labels.shape[0], device=labels.device),
            (~is_forget).sum(),
        ]
    ).to(torch.float64)
    total = counts.clone()
    dist.all_reduce(total)
    world = dist.get_world_size()
    scales = (float(c * world / t) if t > 0 else 0.0 for c, t in zip(counts, total))
    return dict(zip((T.FORGET_TOKENS, T.RETAIN_TOKENS, T.FORGET_ROWS, T.ROWS, T.RETAIN_ROWS), scales))


def global_terms(
    terms: dict[str, float], scale: dict[str, float], units: dict[str, str], device
) -> dict[str, float]:
    """The logged terms of the global batch: each process's value weighted by its unit's scale, averaged
    over the processes (one all-reduce)."""
    import torch.distributed as dist

    names = methods.all_terms()
    world = dist.get_world_size()
    vec = torch.tensor(
        [terms.get(k, 0.0) * scale.get(units.get(k, ""), 1.0) for k in names]
        + [float(k in terms) for k in names],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(vec)
    n = len(names)
    return {k: float(vec[i]) / world for i, k in enumerate(names) if vec[n + i] > 0}


ALT_KEYS = ("alt_input_ids", "alt_labels", "alt_attention_mask")  # alternative answers (idk_dpo, altpo)


class UnlearnTrainer(Trainer):
    """A `transformers.Trainer` whose loss is the unlearning objective. Batches are taken in the
    order of the chunk plan (no shuffling); each loss term is logged.

    `reference`: where the reference outputs come from (train/reference.py: live or cached); default
    live. The calibration driver sets `forget_active` / `forget_caps` (row_key -> gate / cap) and
    `unit_row` (a record's row_key -> its document's row_key)."""

    def __init__(
        self, *args, objective, answer_only: bool = True, reference=None, sam_rho: float = 0.0, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.sam_rho = float(sam_rho)  # > 0: sharpness-aware steps (train/sam.py)
        self.sam_replay: tuple | None = None  # set during SAM's second pass: (push, objective state)
        self._sam_inputs: list = []  # the micro-batches of the current step (SAM only)
        self._sam_records: list = []  # what each one's first pass used
        self.objective = objective
        self.selector = AnswerHeadSelector(self.model) if answer_only else None
        self.reference = as_reference(reference) if reference is not None else LiveReference(self.selector)
        self.chunk_index = 0
        self.forget_active: dict[int, bool] | None = None  # row_key -> pushed? (calibration gate)
        self.forget_caps: dict[int, float] | None = None  # row_key -> answer-NLL cap (calibration gate)
        self.unit_row: dict[int, int] = {}  # record row_key -> the row_key of its document row
        self.last_row_nll: dict[int, float] = {}  # capped row_key -> its loss in its latest batch
        self.forget_pull_caps: dict[int, float] | None = (
            None  # document row_key -> pull-back loss (calibration.pull)
        )
        self.pull_weight = 0.0  # calibration.pull
        self.retain_scale = 1.0  # calibration.retain_guard's multiplier of the retain-side terms
        self.answered: set[int] = set()  # row_keys pushed whatever their document's gate (push_answered)
        self.objective_state: dict = {}  # an objective's state across steps (checkpointed, JSON)
        self.anchor = None  # calibration.anchor_documents (train/anchor.py): set by the loop
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        # the loss is a mean per micro-batch: let the Trainer divide it by the accumulation steps
        # (with True it expects a loss summed over `num_items_in_batch`, which this one is not)
        self.model_accepts_loss_kwargs = False
        self._flop_params: int | None = None

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's FLOP estimate for its logs (6 x input tokens x non-embedding parameters), with
        the parameter count taken once instead of at every step (counting walks every parameter: ~2 ms
        a step, 2.5 % of a sweep's time on the demo model)."""
        main = getattr(self.model, "main_input_name", "input_ids")
        if main not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._flop_params is None:
            self._flop_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main].numel() * self._flop_params

    def _active(self, key: int) -> bool:
        """The gate of a forget row. A row with a cap of its own is decided at every step by its loss in
        that very batch (`loss._gate`: pushed while below the cap, so a unit that drifted back below it
        between evaluations is pushed again at once); a record whose document is a forget row with a
        cap follows that document's latest in-batch loss; any other row follows the last evaluation."""
        if self.forget_caps is not None and key in self.forget_caps:
            return True
        if key in self.answered:  # calibration.push_answered: its answer was still reproduced
            return True
        doc = self.unit_row.get(key)
        if (
            doc is not None
            and self.forget_caps is not None
            and doc in self.forget_caps
            and doc in self.last_row_nll
        ):
            return self.last_row_nll[doc] < self.forget_caps[doc]
        return self.forget_active.get(key, True)

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        return SequentialSampler(ds)

    def _gated_batch(self, inputs) -> dict:
        keys = ("input_ids", "attention_mask", "labels", "is_forget", "row_key", *ALT_KEYS)
        batch = {k: inputs[k] for k in keys if k in inputs}
        if "row_key" in inputs and (self.forget_active is not None or self.forget_caps is not None):
            row_keys, dev = inputs["row_key"].tolist(), inputs["is_forget"].device  # the calibration gate
            if self.forget_active is not None:
                active = [self._active(k) for k in row_keys]
                batch["forget_active"] = torch.tensor(active, dtype=torch.bool, device=dev)
            if self.forget_caps is not None:
                caps = [self.forget_caps.get(k, float("inf")) for k in row_keys]
                batch["forget_nll_cap"] = torch.tensor(caps, dtype=torch.float32, device=dev)
            if self.pull_weight > 0 and self.forget_pull_caps:
                pull = [self.forget_pull_caps.get(k, float("inf")) for k in row_keys]
                batch["forget_pull_cap"] = torch.tensor(pull, dtype=torch.float32, device=dev)
        return batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step; with ``sam_rho`` > 0, at the last micro-batch of each optimizer step the
        accumulated gradient is replaced by the gradient at theta + eps (train/sam.py)."""
        if not self.sam_rho:
            return super().training_step(model, inputs, num_items_in_batch)
        from llm_unlearn.train import sam

        sam.check_supported(self)
        self._sam_inputs.append(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            batches, records = self._sam_inputs, self._sam_records
            self._sam_inputs, self._sam_records = [], []
            sam.sharpness_aware_grad(self, model, batches, records, num_items_in_batch)
        return loss

    def plain_training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's own step (SAM's second pass runs it)."""
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        replay = self.sam_replay
        if replay is not None:  # SAM's second pass: the first pass's rows and state; nothing logged or kept
            batch = {k: v for k, v in self._gated_batch(inputs).items() if k != "forget_nll_cap"}
            batch["forget_active"] = replay[0]
            loss, _ = unlearning_loss(
                model,
                batch,
                self.objective,
                self.selector,
                self.reference,
                lambda push: global_term_scale(batch, push),
                {},
                copy.deepcopy(replay[1]),
                float(self.state.epoch or 0.0),
                pull_weight=self.pull_weight,
                retain_scale=self.retain_scale,
            )
            loss, _ = self._anchored(model, loss, {})
            return (loss, None) if return_outputs else loss
        batch = self._gated_batch(inputs)
        realized: dict[str, Any] = {}
        state_before = copy.deepcopy(self.objective_state) if self.sam_rho else None

        def scale_of(push):  # None on one process; a collective under data parallelism
            realized["scale"] = global_term_scale(batch, push)
            return realized["scale"]

        try:
            loss, terms = unlearning_loss(
                model,
                batch,
                self.objective,
                self.selector,
                self.reference,
                scale_of,
                realized,
                self.objective_state,
                float(self.state.epoch or 0.0),
                pull_weight=self.pull_weight,
                retain_scale=self.retain_scale,
            )
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(
                f"{exc} (chunk {self.chunk_index + 1}, step {self.state.global_step + 1} of this chunk); "
                "the last good checkpoint is kept"
            ) from None
        loss, terms = self._anchored(model, loss, terms)
        if self.sam_rho:
            self._sam_records.append((realized["push"].detach(), state_before))
        if "row_nll" in realized and self.forget_caps is not None:  # the latest loss of each capped row
            for k, v in zip(inputs["row_key"].tolist(), realized["row_nll"].tolist()):
                if k in self.forget_caps:
                    self.last_row_nll[k] = v
        if realized.get("scale") is not None:  # log the terms of the global batch, not this process's share
            terms = global_terms(terms, realized["scale"], realized.get("units", {}), loss.device)
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._counts[k] = self._counts.get(k, 0) + 1
        return (loss, None) if return_outputs else loss

    def _anchored(self, model, loss, terms: dict):
        """The loss and terms with calibration.anchor's term added (train/anchor.py); as they are
        without anchor documents. Every process computes its own (the same documents): the gradients'
        average over processes is then the term's gradient."""
        if self.anchor is None:
            return loss, terms
        value = self.anchor.loss(model, self.selector, self.chunk_index, int(self.state.global_step))
        from llm_unlearn import losses

        losses.check_finite(T.ANCHOR, value)
        return loss + self.anchor.weight * value, {**terms, T.ANCHOR: float(value.detach())}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for k in methods.all_terms():
                if self._counts.get(k):
                    logs[k] = self._sums[k] / self._counts[k]
            logs["chunk"] = self.chunk_index + 1
            self._sums, self._counts = {}, {}
        super().log(logs, start_time)


def steps_per_chunk(
    n_rows: int, per_device_batch: int, world_size: int, grad_accum: int, epochs: float
) -> int:
    """Optimizer steps the Trainer takes on a chunk of n_rows (as transformers computes them)."""
    batches = math.ceil(n_rows / (per_device_batch * world_size))
    per_epoch = max(batches // grad_accum, 1)
    return math.ceil(epochs * per_epoch)
