"""What one training step works with: the answer positions of a batch, what the reference contributes
for them, the terms an objective returns, and the :class:`Step` view that an objective reads.

Token order, everywhere: row-major over the batch's answer positions (positions ``t`` whose logits
predict a labelled token ``labels[:, t + 1]``). Forget and retain tokens are selected from that order
with boolean masks, so a reference tensor for "the forget tokens" lines up with ``logp[tok_forget]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llm_unlearn.data.batching import IGNORE_INDEX

SIDE_KINDS = (None, "logp", "dist")


@dataclass
class AnswerPositions:
    """Where the answer tokens are: `flat` indexes the flattened [B*T] positions whose logits predict a
    labelled token, `targets` are those tokens, `rows` the batch row of each."""

    flat: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor


def answer_positions(labels: torch.Tensor) -> AnswerPositions:
    """labels [B, T] (unshifted, IGNORE_INDEX = ignore) -> positions t whose logits predict labels[:, t+1]."""
    _, T = labels.shape
    nxt = torch.full_like(labels, IGNORE_INDEX)
    nxt[:, :-1] = labels[:, 1:]
    valid = nxt.ne(IGNORE_INDEX)
    flat = valid.reshape(-1).nonzero(as_tuple=True)[0]
    rows = torch.div(flat, T, rounding_mode="floor")
    return AnswerPositions(flat=flat, targets=nxt.reshape(-1)[flat], rows=rows)


def answer_token_count(labels) -> int:
    """Answer tokens of one row (a list or 1-D tensor of unshifted labels), as answer_positions counts."""
    return sum(1 for x in list(labels)[1:] if int(x) != IGNORE_INDEX)


@dataclass(frozen=True)
class ReferenceNeeds:
    """What an objective needs from the reference model, per side: None (nothing), ``"logp"`` (log p_ref
    of each answer token) or ``"dist"`` (the reference's next-token distribution at each answer token,
    which includes the per-token log-probs)."""

    forget: str | None = None
    retain: str | None = None
    hidden: bool = False  # the reference's hidden states (a layer's output): always computed live

    def __post_init__(self):
        for side in (self.forget, self.retain):
            if side not in SIDE_KINDS:
                raise ValueError(f"reference need must be one of {SIDE_KINDS}, got {side!r}")

    @property
    def any(self) -> bool:
        return self.cacheable or self.hidden

    @property
    def cacheable(self) -> bool:
        """Something the reference cache can hold (log-probs or distributions)."""
        return self.forget is not None or self.retain is not None


@dataclass
class ReferenceOutputs:
    """What the reference contributes for the rows of one batch (absent parts are None).

    Per side (forget / retain), in the token order of that side's answer tokens:
    ``*_logp`` [N_side] log p_ref(target); ``*_logits`` [N_side, V] reference logits or log-probs
    (either: every consumer applies log-softmax); ``*_topk`` the top-k form of the distribution
    (log-probs [N_side, k], token ids [N_side, k], log of the remaining mass [N_side]).
    """

    forget_logp: torch.Tensor | None = None
    forget_logits: torch.Tensor | None = None
    forget_topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    retain_logp: torch.Tensor | None = None
    retain_logits: torch.Tensor | None = None
    retain_topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


@dataclass
class TermValue:
    """One loss term: its value, its weight in the total (None: logged only, never in the total) and
    the unit its mean runs over (terms.UNITS; used to weight it exactly under data parallelism)."""

    value: torch.Tensor
    weight: float | None
    unit: str


@dataclass
class Step:
    """The view of one batch that an objective reads (built by ``train/loss.py``).

    ``logits`` [N, V] model logits at the answer positions, ``logp`` [N] log p(target) (float32 or
    wider); ``is_forget`` [B] bool; ``push`` [B] the forget rows the forget term still pushes (all of
    them unless calibration gates some); ``tok_forget`` / ``tok_push`` / ``tok_retain`` [N] the same
    per answer token. ``reference()`` returns the reference outputs, computing them on first use (the
    trainer never computes a reference an objective does not ask for).
    """

    model: object
    batch: dict
    pos: AnswerPositions
    logits: torch.Tensor
    logp: torch.Tensor
    is_forget: torch.Tensor
    push: torch.Tensor
    get_reference: Callable[[], ReferenceOutputs] = field(repr=False)
    source: object = field(default=None, repr=False)  # the reference source (train/reference.py)
    selector: object = field(default=None, repr=False)  # the answer-only head of the trained model
    hidden: torch.Tensor | None = None  # [B, T, H] the captured layer's output (objectives that ask)
    state: dict = field(default_factory=dict)  # an objective's state across steps (e.g. PDU's multiplier)
    epoch: float = 0.0  # epochs of the current chunk completed before this step (the Trainer's state.epoch)
    _reference: ReferenceOutputs | None = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.is_forget.shape[0])

    @property
    def tok_forget(self) -> torch.Tensor:
        return self.is_forget.index_select(0, self.pos.rows)

    @property
    def tok_push(self) -> torch.Tensor:
        return self.push.index_select(0, self.pos.rows)

    @property
    def tok_retain(self) -> torch.Tensor:
        return ~self.tok_forget

    @property
    def has_forget(self) -> bool:
        """Some pushed forget row has answer tokens in this batch."""
        return bool(self.tok_push.any())

    @property
    def has_retain(self) -> bool:
        return bool(self.tok_retain.any())

    def reference(self) -> ReferenceOutputs:
        if self._reference is None:
            self._reference = self.get_reference()
        return self._reference

    def pushed_forget(self, per_forget_token: torch.Tensor) -> torch.Tensor:
        """Select the pushed tokens from a tensor over ALL forget tokens (the reference covers every
        forget row, gated or not); a tensor already over the pushed tokens is returned as is."""
        n_push = int(self.tok_push.sum())
        if per_forget_token.shape[0] == n_push:
            return per_forget_token
        return per_forget_token[self.tok_push[self.tok_forget]]
