"""calibration.anchor_documents: documents never trained on whose loss the run may not raise.

Pushing the forget documents' loss up raises the loss of unseen documents like them as well (on the
real SemEval slice the calibration holdout's median document loss rose from 11.9 to 22-25 nats while
the members were pushed): the target of the MIA moves away as the members approach it, and the AUC
stays above 0.5. The anchor holds a sample of such documents, disjoint from the holdout and from the
evaluation's non-members, at the reference's loss:

    anchor = (1 / k) sum over the step's k anchor documents d of  huber(nll_model(d) - nll_ref(d))

    huber(x) = x^2 / 2 where |x| <= 1 nat, |x| - 1/2 beyond

``nll`` is a document's mean per-token negative log-likelihood (the whole text labelled, as the forget
documents are trained); ``nll_ref`` is measured once with the adapter off (the reference, fixed for
the run). The fixed point is the reference's own loss: a document whose loss rose is drawn back down,
one that fell below it (the model learning these documents: they would become members) is pushed back
up, and the gradient on a document is bounded (at most 1/k per nat), so a large rise cannot swamp the
forget term. A one-sided form (only rises taken back) overshot in the tiny world: it trains on the
documents, which then ended 0.76 nats below their reference. Its weight in the total is
``calibration.anchor``. The k documents of a step are drawn from a generator seeded by (seed, chunk,
step of the chunk), so a resumed run draws the same ones.
"""

from __future__ import annotations

import random

import torch

from llm_unlearn import losses
from llm_unlearn.train.head import answer_logits
from llm_unlearn.train.reference import reference_mode
from llm_unlearn.train.step import answer_positions


def anchor_term(row_nll: torch.Tensor, ref_nll: torch.Tensor) -> torch.Tensor:
    """``mean(huber(row_nll - ref_nll))`` over the rows ([k] each; huber with a 1-nat knee): the
    anchor's value, 0 with no gradient where a row is at its reference."""
    return torch.nn.functional.smooth_l1_loss(
        row_nll, ref_nll.to(row_nll.device, row_nll.dtype), reduction="mean", beta=1.0
    )


class Anchor:
    """The tokenized anchor documents of a run, their reference losses, and the term of one step."""

    def __init__(self, rows: list[dict], collate, *, per_step: int, weight: float, seed: int):
        if not rows:
            raise ValueError("no anchor documents")
        self.rows = rows
        self.collate = collate
        self.per_step = min(int(per_step), len(rows))
        self.weight = float(weight)
        self.seed = int(seed)
        self.ref_nll: torch.Tensor | None = None  # [n] the reference's loss of each document

    def indices(self, chunk: int, step: int) -> list[int]:
        """The documents of step ``step`` of chunk ``chunk`` (sorted): the same on every process and on
        a resumed run."""
        rng = random.Random(self.seed * 1_000_003 + chunk * 100_003 + step)
        return sorted(rng.sample(range(len(self.rows)), self.per_step))

    def _nll(self, model, selector, idx: list[int]) -> torch.Tensor:
        batch = self.collate([self.rows[i] for i in idx])
        device = next(p for p in model.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        pos = answer_positions(batch["labels"].to(device))
        logp = losses.token_log_probs(answer_logits(model, selector, ids, mask, pos), pos.targets)
        return losses.row_mean_nll(logp, pos.rows, len(idx))

    def document_nll(self, model, selector, *, reference: bool, batch_size: int = 8) -> torch.Tensor:
        """[n] every document's loss (no autograd), under the reference (``reference``: the adapter off)
        or under the model as it is."""
        out = []
        with reference_mode(model) if reference else torch.no_grad():
            for s in range(0, len(self.rows), batch_size):
                idx = list(range(s, min(s + batch_size, len(self.rows))))
                out.append(self._nll(model, selector, idx).detach().float().cpu())
        return torch.cat(out)

    def measure_reference(self, model, selector, frozen=None) -> None:
        """``ref_nll``: every document's loss under the reference (the adapter off; under full
        fine-tuning the frozen copy of the starting model)."""
        if frozen is not None:
            self.ref_nll = self.document_nll(frozen, None, reference=True)
        else:
            self.ref_nll = self.document_nll(model, selector, reference=True)

    def loss(self, model, selector, chunk: int, step: int) -> torch.Tensor:
        """The anchor's value at this step (with its gradient)."""
        if self.ref_nll is None:
            raise RuntimeError("Anchor.measure_reference must run before the first step")
        idx = self.indices(chunk, step)
        return anchor_term(self._nll(model, selector, idx), self.ref_nll[idx])


def read_anchor_records(path, *, exclude: list[dict] = ()) -> list:
    """The anchor documents of ``path`` as rows to tokenize (empty prompt, the whole text labelled);
    a DataError when one of them is also in ``exclude`` (the holdout, the forget documents): the
    calibration would then measure the documents the run holds, or hold what it forgets."""
    from pathlib import Path

    from llm_unlearn.data.holdout import read_forget_documents
    from llm_unlearn.data.records import Record
    from llm_unlearn.errors import DataError

    docs = read_forget_documents(path)
    seen = {d["document"].strip() for d in exclude}
    for d in docs:
        if d["document"].strip() in seen:
            raise DataError(
                Path(path),
                f"anchor document {d['id']!r} is also in the holdout or the forget documents: the anchor "
                "must be other documents never trained on",
                field="document",
            )
    return [Record(id=str(d["id"]), input="", output=d["document"], task=None, split="anchor") for d in docs]


def for_run(prep, trainer) -> Anchor | None:
    """The run's anchor (None without anchor documents), its reference losses measured now: on the
    trainer's model (after sharding, so every process takes part) with the adapter off."""
    if not prep.anchor_rows:
        return None
    import logging

    from llm_unlearn.data.tokenize import UnlearnCollator

    c = prep.cfg.calibration
    anchor = Anchor(
        prep.anchor_rows,
        UnlearnCollator(prep.tokenizer.pad_token_id),
        per_step=c.anchor_per_step,
        weight=c.anchor,
        seed=prep.cfg.train.seed,
    )
    anchor.measure_reference(trainer.model, trainer.selector, frozen=prep.frozen)
    logging.getLogger(__name__).info(
        "anchor: %d documents never trained on (reference loss median %.2f nats), %d a step, weight %g",
        len(anchor.rows),
        float(anchor.ref_nll.median()),
        anchor.per_step,
        anchor.weight,
    )
    return anchor
