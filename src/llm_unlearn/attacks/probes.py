"""What every attack probes, from any registered benchmark's checked data: forget and retain items.

A :class:`Probe` is one prompt and the answer the model should (retain) or should not (forget) give,
the forget **unit** it belongs to (relearning trains on whole units and scores the others), its kind
(``qa`` or ``completion``) and, for completion items, a background **hint**: the sentence of the
member document that precedes the item's prompt, where one exists.

Per benchmark (the data are what ``Benchmark.check(opts)`` returned, so ``--limit`` and every input
check of the benchmark apply unchanged):

* ``semeval``: forget / retain records: prompt ``input``, answer ``" " + output`` (the joiner training puts
  between them: ``data.joiner``'s default; none when ``input`` is empty); unit = :func:`~llm_unlearn.data.slices.unit_key`
  of the record id; kind ``completion`` for ``sc`` records (the organizers' rule,
  :func:`~llm_unlearn.data.records.record_kind`), else ``qa``; hints from the MIA member documents
  (``--mia-data``) of the same unit;
* ``tofu``: forget / retain questions as ``Question: {q}\\nAnswer:`` + `` {answer}``; unit = the author
  (TOFU lists 20 questions per author, in order: index // 20);
* ``muse``: VerbMem prompts and their ground-truth continuations as they are (completion, one unit each) and KnowMem forget questions (qa) as forget,
  KnowMem retain questions as retain; a KnowMem item is its own unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_unlearn.data.benchmarks import qa_prompt
from llm_unlearn.data.records import record_kind
from llm_unlearn.data.slices import unit_key
from llm_unlearn.errors import UserError

__all__ = ["Probe", "ProbeSet", "probes_from", "preceding_sentence", "TOFU_QUESTIONS_PER_AUTHOR"]

TOFU_QUESTIONS_PER_AUTHOR = 20
JOINER = " "  # what train / finetune put between a record's input and output (data.joiner's default)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Probe:
    prompt: str
    answer: str
    unit: str
    kind: str = "qa"  # "qa" | "completion"
    hint: str | None = None
    question: str | None = None  # the bare question (qa items), for rephrasing templates


@dataclass
class ProbeSet:
    benchmark: str
    forget: list[Probe]
    retain: list[Probe]
    notes: list[str] = field(default_factory=list)

    def units(self) -> list[str]:
        """The forget units in order of first appearance."""
        seen: dict[str, None] = {}
        for p in self.forget:
            seen.setdefault(p.unit, None)
        return list(seen)


def preceding_sentence(document: str, prompt: str) -> str | None:
    """The sentence of ``document`` that ends right before ``prompt`` starts in it (the prompt found by
    its first 40 characters, stripped); None when the prompt is not in the document or starts it."""
    head = prompt.strip()[:40]
    if not head:
        return None
    at = document.find(head)
    if at <= 0:
        return None
    before = document[:at].rstrip()
    if not before:
        return None
    parts = _SENTENCE_END.split(before)
    last = parts[-1].strip()
    return last or None


def _semeval(data) -> ProbeSet:
    bundle, mia = data.bundle, data.mia
    docs: dict[str, list[str]] = {}
    for d in mia[0] if mia else []:
        docs.setdefault(unit_key(d["id"]), []).append(d["document"])

    def probe(r, with_hint: bool) -> Probe:
        kind = "completion" if record_kind(r.id) == "sc" else "qa"
        hint = None
        if with_hint and kind == "completion":
            hint = next(
                (h for d in docs.get(unit_key(r.id), []) if (h := preceding_sentence(d, r.input))), None
            )
        answer = JOINER + r.output if r.input else r.output
        return Probe(r.input, answer, unit_key(r.id), kind, hint, r.input if kind == "qa" else None)

    forget = [probe(r, True) for r in bundle.forget]
    completion = [p for p in forget if p.kind == "completion"]
    notes = [] if mia else ["no --mia-data: completion items have no background hint"]
    if mia and completion:
        n = sum(p.hint is not None for p in completion)
        notes.append(
            f"{n} of {len(completion)} completion items have a background hint (a member document with a "
            "sentence before the prompt; a prompt that starts its document has none)"
        )
    return ProbeSet("semeval", forget, [probe(r, False) for r in bundle.retain], notes)


def _tofu(data) -> ProbeSet:
    def probe(i: int, it) -> Probe:
        unit = f"author{i // TOFU_QUESTIONS_PER_AUTHOR}"
        return Probe(qa_prompt(it.question), " " + it.answer, unit, "qa", None, it.question)

    return ProbeSet(
        "tofu",
        [probe(i, it) for i, it in enumerate(data.forget)],
        [probe(i, it) for i, it in enumerate(data.retain)],
        ["TOFU has no member documents: no background hints"],
    )


def _muse(data) -> ProbeSet:
    forget = [
        Probe(p, " " + c.lstrip(), f"verbmem{i}", "completion") for i, (p, c) in enumerate(data.verbmem)
    ]
    forget += [
        Probe(qa_prompt(q), " " + a, f"knowmem{i}", "qa", None, q)
        for i, (q, a) in enumerate(data.knowmem_forget)
    ]
    retain = [
        Probe(qa_prompt(q), " " + a, f"retain{i}", "qa", None, q)
        for i, (q, a) in enumerate(data.knowmem_retain)
    ]
    return ProbeSet("muse", forget, retain, ["MUSE completion prompts are document starts: no hints"])


_BUILDERS = {"semeval": _semeval, "tofu": _tofu, "muse": _muse}


def probes_from(benchmark: str, data: Any) -> ProbeSet:
    """The probes of ``benchmark``'s checked data; a benchmark without forget/retain items (mmlu) or an
    empty forget set is one UserError."""
    if benchmark not in _BUILDERS:
        raise UserError(
            f"attacks need a benchmark with forget and retain items ({', '.join(_BUILDERS)}), not {benchmark}"
        )
    probes = _BUILDERS[benchmark](data)
    if not probes.forget:
        raise UserError(f"--benchmark {benchmark}: no forget items to attack")
    return probes


def limit_probes(probes: Sequence[Probe], n: int | None) -> list[Probe]:
    """The first ``n`` probes (all with None)."""
    return list(probes if not n else probes[:n])
