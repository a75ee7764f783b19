"""Evaluation during training: a small, budgeted SemEval-style evaluation run every N steps.

Each evaluation measures, on the current model (adapter on), batched and greedy:
- knowledge (exact match) and regurgitation (ROUGE-L recall) on K sampled forget and K sampled retain
  records (sampled once, seeded, spread over tasks and sc/qa kinds), and from them the official task
  aggregate (harmonic mean of the 12 terms, `evaluation/metrics/semeval.py`);
- the mean answer NLL of the sampled forget and retain records;
- the loss-based MIA AUC between the forget side and the holdout: forget documents against holdout
  documents when both exist, else forget answers against holdout record answers;
- for the gate (`calibration.py`): each forget unit's loss and the holdout thresholds;
- the loss gap: the holdout's median loss minus the forget side's (`train/beta_from_gap.py`).

The rules that use these numbers (gate, stop, selection) are in `llm_unlearn.train.calibration`; their driver is `train/calibrated.py`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any

from llm_unlearn.data.holdout import Holdout, base_id
from llm_unlearn.data.records import record_kind
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.beta_from_gap import loss_gap


def sample_items(records: Sequence[Any], k: int, seed: int) -> list[int]:
    """Indices of up to ``k`` records, seeded, taken round-robin over (task, kind) groups so that every
    group is represented before any group gets a second item; returned in ascending order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((str(r.task), str(record_kind(r.id))), []).append(i)
    rng = random.Random(seed)
    order = sorted(groups)
    for key in order:
        rng.shuffle(groups[key])
    picked: list[int] = []
    while len(picked) < min(k, len(records)):
        for key in order:
            if groups[key] and len(picked) < k:
                picked.append(groups[key].pop())
    return sorted(picked)


class TrainingMonitor:
    """Budgeted evaluation of a model under unlearning (see the module docstring).

    forget / retain: the training records (forget row i has row key i, as in train/prepare.py);
    holdout: never-seen documents and/or records; forget_documents: the forget side's documents.
    """

    def __init__(
        self,
        tokenizer,
        forget: Sequence[Any],
        retain: Sequence[Any],
        *,
        holdout: Holdout | None,
        forget_documents: Sequence[dict] | None,
        items: int = 32,
        max_new_tokens: int = 64,
        batch_size: int = 16,
        quantile: float = 0.5,
        spread: bool = False,
        gate: bool = True,
        seed: int = 0,
        document_rows: set[int] | None = None,
        mmlu: str | None = None,
        mmlu_items: int = 5,
        pull_band: float | None = None,
        push_answered: bool = False,
    ):
        self.tokenizer = tokenizer
        self.forget, self.retain = list(forget), list(retain)
        self.holdout = holdout or Holdout()
        self.max_new_tokens, self.batch_size, self.q, self.use_gate = (
            max_new_tokens,
            batch_size,
            quantile,
            gate,
        )
        # spread targets (calibration.gate_spread): {(kind, unit): target quantile}, fixed at the first gate
        self.spread = spread
        self.unit_q: dict[tuple[str, int], float] | None = None
        # calibration.pull: {document row: the loss above which it is drawn back}, set at every gate
        self.pull_band = pull_band
        self.pull_caps: dict[int, float] | None = None
        # calibration.push_answered: the sampled forget rows whose greedy answer matched at the last evaluation
        self.push_answered = push_answered
        self.answered: set[int] | None = None
        # MMLU in the proxy when a budget is given: the data is read once, `mmlu_items` questions a subject
        self.mmlu_items = mmlu_items
        if mmlu:
            from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import load_mmlu

            self.mmlu = load_mmlu(mmlu)
        else:
            self.mmlu = None
        # items are sampled from the records, not from the document rows (--unlearn-documents)
        self.document_rows = set(document_rows or ())
        records = [i for i in range(len(self.forget)) if i not in self.document_rows]
        self.forget_sample = [
            records[j] for j in sample_items([self.forget[i] for i in records], items, seed)
        ]
        self.retain_sample = sample_items(self.retain, items, seed + 1)
        docs = list(forget_documents or [])
        by_id: dict[str, int] = {}
        for j, d in enumerate(docs):  # a unit's first document (ids read by data/slices.unit_key)
            by_id.setdefault(base_id(d["id"]), j)
        self.documents = docs
        # unit of each forget row: ("document", j) when its document is known, else ("record", i)
        self.unit_of = {
            i: ("document", by_id[base_id(r.id)]) if base_id(r.id) in by_id else ("record", i)
            for i, r in enumerate(self.forget)
        }

    @property
    def has_auc(self) -> bool:
        return bool((self.documents and self.holdout.documents) or self.holdout.records)

    def measure(self, model) -> dict[str, Any]:
        """What an evaluation measures on ``model`` (every forward pass of it): ``{"row": the sampled
        records' scores (and MMLU), "membership": the losses of _membership_losses}``. The rest of an
        evaluation is arithmetic on these, so a sweep can reuse the measurement of the untrained start
        (``train/sweep_hooks.py``)."""
        kw = {"batch_size": self.batch_size, "progress": False}
        row: dict[str, Any] = {}
        self._score_samples(model, row, kw)
        if self.mmlu is not None:
            from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import evaluate_mmlu

            res = evaluate_mmlu(
                model,
                self.tokenizer,
                self.mmlu,
                n_instances=self.mmlu_items,
                batch_size=self.batch_size,
                progress=False,
            )
            row["mmlu"] = res["average_acc"]
        return {
            "row": row,
            "membership": self._membership_losses(model, kw),
            "answered": sorted(row.pop("_answered", ())),
        }

    def evaluate(self, model, *, step: int, chunk: int, measured: dict | None = None) -> dict[str, Any]:
        """One evaluation of ``model`` at ``step`` (of ``chunk``): the row of scores described in the
        module docstring (plus ``_active`` / ``_caps`` for the gate when it is on). ``measured``: a
        :meth:`measure` of this very model made before (the sweep's shared start), instead of measuring."""
        from llm_unlearn.evaluation.metrics.mia import loss_auc

        t0 = time.time()
        m = self.measure(model) if measured is None else measured
        if self.push_answered:
            self.answered = set(m.get("answered", ()))
        row: dict[str, Any] = {"step": step, "chunk": chunk, **m["row"]}
        doc_nll, hold_doc, rec_nll, hold_rec = m["membership"]
        row["mia_auc"] = row["loss_gap"] = None
        if doc_nll is not None:
            row["mia_auc"], row["mia_on"] = _auc(loss_auc, doc_nll, hold_doc), "documents"
            row["loss_gap"] = loss_gap(doc_nll, hold_doc)
        elif rec_nll is not None:
            row["mia_auc"], row["mia_on"] = _auc(loss_auc, list(rec_nll.values()), hold_rec), "records"
            row["loss_gap"] = loss_gap(list(rec_nll.values()), hold_rec)
        row["mia_score"] = cal.mia_score(row["mia_auc"]) if row["mia_auc"] is not None else None
        row["proxy"] = cal.proxy_score(row["task_aggregate"], row["mia_auc"], row.get("mmlu"))
        if self.use_gate:
            row["_active"], row["_caps"] = self._gate(doc_nll, hold_doc, rec_nll, hold_rec, row)
            row["active_fraction"] = sum(row["_active"].values()) / max(len(row["_active"]), 1)
        row["seconds"] = round(time.time() - t0, 3)
        return row

    def refresh_gate(self, model) -> tuple[dict[int, bool], dict[int, float]] | None:
        """The gate and caps from the units' and the holdout's losses now, without the rest of an
        evaluation (no generation, no AUC row): between two evaluations, so that a unit that went past
        its target, or fell back below it, is seen within a few steps. None without a gate."""
        if not self.use_gate:
            return None
        kw = {"batch_size": self.batch_size, "progress": False}
        doc_nll, hold_doc, rec_nll, hold_rec = self._membership_losses(model, kw)
        return self._gate(doc_nll, hold_doc, rec_nll, hold_rec, {})

    def _score_samples(self, model, row: dict[str, Any], kw: dict) -> None:
        """Knowledge, regurgitation and mean answer NLL of the sampled forget and retain records, and
        the task aggregate of both, into ``row``."""
        from llm_unlearn.evaluation.benchmarks.semeval.evaluate import generation_rows
        from llm_unlearn.evaluation.metrics.semeval import aggregated_terms, harmonic_aggregate, split_scores
        from llm_unlearn.evaluation.passes.inference import answer_nll, greedy_generate

        split_objs = {}
        for split, recs, idx in (
            ("forget", self.forget, self.forget_sample),
            ("retain", self.retain, self.retain_sample),
        ):
            items = [recs[i] for i in idx]
            if not items:
                continue
            gens = greedy_generate(
                model,
                self.tokenizer,
                [r.input for r in items],
                max_new_tokens=self.max_new_tokens,
                expected=[r.output for r in items],  # still-known answers: one forward, no decoding
                **kw,
            )
            nlls = answer_nll(
                model, self.tokenizer, [r.input for r in items], [r.output for r in items], **kw
            )
            scored = generation_rows(items, gens, nlls)
            split_objs[split] = split_scores(scored)
            if split == "forget":  # still answered word for word (calibration.push_answered)
                row["_answered"] = [i for i, r in zip(idx, scored) if r.get("knowledge_score") == 1]
            row[f"{split}_em"] = split_objs[split]["overall-knowledge-score"]
            row[f"{split}_rougeL"] = split_objs[split]["overall-regurgitation-score"]
            row[f"{split}_nll"] = _mean(nlls)
        row["task_aggregate"] = harmonic_aggregate(aggregated_terms(split_objs))

    def _membership_losses(self, model, kw: dict):
        """``(forget document NLLs, holdout document NLLs, {forget row: answer NLL}, holdout answer
        NLLs)``, each None when not measured: documents when both sides have them; answers when the
        holdout has records and some forget unit is a record (or no document losses exist)."""
        from llm_unlearn.evaluation.passes.inference import answer_nll, document_statistics

        doc_nll = hold_doc = rec_nll = hold_rec = None
        if self.documents and self.holdout.documents:
            doc_nll = [
                s["nll"]
                for s in document_statistics(
                    model, self.tokenizer, [d["document"] for d in self.documents], **kw
                )
            ]
            hold_doc = [
                s["nll"]
                for s in document_statistics(
                    model, self.tokenizer, [d["document"] for d in self.holdout.documents], **kw
                )
            ]
        need_rec = [i for i, (kind, _) in self.unit_of.items() if kind == "record"]
        if self.holdout.records and (need_rec or doc_nll is None):
            hold_rec = answer_nll(
                model,
                self.tokenizer,
                [r["input"] for r in self.holdout.records],
                [r["output"] for r in self.holdout.records],
                **kw,
            )
            rec_ids = need_rec if doc_nll is not None else list(range(len(self.forget)))
            vals = answer_nll(
                model,
                self.tokenizer,
                [self.forget[i].input for i in rec_ids],
                [self.forget[i].output for i in rec_ids],
                **kw,
            )
            rec_nll = dict(zip(rec_ids, vals))
        return doc_nll, hold_doc, rec_nll, hold_rec

    def record_to_document_row(self) -> dict[int, int]:
        """{forget row of a record: forget row of its document}, for the records whose document is a
        forget row too (--unlearn-documents)."""
        doc_row = {self.unit_of[i][1]: i for i in self.document_rows if self.unit_of[i][0] == "document"}
        return {
            i: doc_row[j]
            for i, (k, j) in self.unit_of.items()
            if k == "document" and i not in self.document_rows and j in doc_row
        }

    def _gate(self, doc_nll, hold_doc, rec_nll, hold_rec, row) -> tuple[dict[int, bool], dict[int, float]]:
        """``(active, caps)``: the gate of every forget row, and the per-step caps of the rows that are
        their own unit (a document row's loss is its document's; a record unit's is its answer's).

        With ``spread`` each unit's threshold is the holdout quantile of its own target
        (`calibration.spread_quantiles`, ranked once, at the first evaluation); else every unit of a kind
        has the kind's ``q``-quantile."""
        holdout = {"document": hold_doc, "record": hold_rec}
        thresholds = {k: _quantile(v, self.q) for k, v in holdout.items()}
        row["tau_document"], row["tau_record"] = thresholds["document"], thresholds["record"]
        loss, kind, unit_loss = {}, {}, {}
        for i, (k, j) in self.unit_of.items():
            kind[i] = k
            loss[i] = doc_nll[j] if k == "document" and doc_nll is not None else (rec_nll or {}).get(i)
            unit_loss[(k, j)] = loss[i]
        if self.spread and self.unit_q is None:
            self.unit_q = {}
            for k in holdout:
                part = {u: v for u, v in unit_loss.items() if u[0] == k}
                self.unit_q.update(cal.spread_quantiles(part, center=self.q))
        own_tau = {}
        if self.spread:
            tau_of = {u: _quantile(holdout[u[0]], q) for u, q in self.unit_q.items()}
            own_tau = {i: tau_of.get(u) for i, u in self.unit_of.items()}
        caps = {}
        for i, (k, _) in self.unit_of.items():
            own = (k == "document" and i in self.document_rows) or k == "record"
            tau = own_tau.get(i) if own_tau.get(i) is not None else thresholds[k]
            if own and tau is not None:
                caps[i] = tau
        if getattr(self, "pull_band", None) is not None and hold_doc:
            self.pull_caps = self._pull_caps(hold_doc)
        return cal.gate(loss, kind, thresholds, unit_threshold=own_tau), caps

    def _pull_caps(self, hold_doc) -> dict[int, float]:
        """``{document row: the holdout-document loss at its target quantile + pull_band}``
        (`calibration.pull_quantile`): above it the row is drawn back. Only document rows: a record's
        answer is knowledge to forget, never relearned."""
        out = {}
        for i in self.document_rows:
            k, j = self.unit_of[i]
            if k != "document":
                continue
            q = self.unit_q.get((k, j), self.q) if self.unit_q else self.q
            out[i] = _quantile(hold_doc, cal.pull_quantile(q, self.pull_band))
        return out


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _quantile(values, q: float) -> float | None:
    vals = [v for v in (values or []) if v is not None and math.isfinite(v)]
    return cal.quantile(vals, q) if vals else None


def _auc(fn, member, nonmember) -> float | None:
    m = [v for v in member if v is not None and math.isfinite(v)]
    n = [v for v in nonmember if v is not None and math.isfinite(v)]
    return fn(m, n) if m and n else None
