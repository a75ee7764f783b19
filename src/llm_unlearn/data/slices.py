"""Slices of a SemEval-style data set that keep together what the benchmark ties together (pure, torch-free).

SemEval-2025 Task 4 ties records and documents together by id:

* a record's id is its **unit id** followed by ``sc<k>`` or ``qa<k>`` (e.g. ``12762334sc1``,
  ``12762334qa0``); all records with the same unit id (one story, one biography) form a **unit**;
* the MIA member documents are the Task3 forget documents. The organizers name a member by the unit
  id of its forget records (``69383905``, the train split) **or** by a record id with its suffix
  (``12762334sc1``, the validation split); both name the unit ``12762334``.

Some ids carry literal double quotes (``"2ebb..."sc1``, or the whole id quoted); they are part of the
unit id as far as grouping records goes. Whenever a record and a document are matched, both ids are
reduced by :func:`unit_key` (the one rule for every convention: surrounding whitespace and quotes, the
``sc<k>``/``qa<k>`` suffix, integer ids).

The rule of :func:`slice_data` with a limit ``N`` (``N`` = None or 0: everything, unchanged):

1. **Units.** Records are grouped into units by :func:`unit_id`; units are ordered by the position of their
   first record in the file, and each unit belongs to the task of its first record (``None`` is a task
   like any other).
2. **Round-robin over tasks.** Tasks are ordered by first appearance. The candidate sequence is the first
   unit of every task, then the second unit of every task, and so on (a task with no units left is
   passed over).
3. **Whole units, at most N records.** Walking that sequence, a unit is taken when the records taken so
   far plus its records are at most ``N``; a unit that does not fit is passed over and the walk goes on
   (a later, smaller unit may still fit). The walk stops when exactly ``N`` records are taken or the
   sequence ends. A unit is never split. If not even one unit fits (``N`` smaller than every unit),
   the first unit of the sequence is taken whole, so a slice is never empty.
4. The taken records are returned in their original file order. Forget and retain are sliced
   independently by the same rule with the same ``N``.
5. **MIA documents.** Members are the member documents whose :func:`unit_key` is the unit key of a
   taken forget unit, in their file order; non-members are the first as many non-member documents as
   there are members. Without a limit both lists are returned unchanged. When member documents are
   given and none of them belongs to a taken forget unit, the slice is refused (``UserError``, one line
   showing how a document id and a record id were read): a slice never loses its MIA silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["unit_id", "unit_key", "document_key", "slice_records", "slice_data", "slice_members", "Slice"]

_SUFFIX = re.compile(r"(sc|qa)\d+$")


def _get(item: Any, name: str):
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def unit_id(record_id: str) -> str:
    """The id without its trailing ``sc<k>`` / ``qa<k>`` (the whole id when it has neither)."""
    return _SUFFIX.sub("", str(record_id))


def document_key(identifier: str) -> str:
    """The id with surrounding whitespace and double quotes removed."""
    return str(identifier).strip().strip('"').strip()


def unit_key(identifier: Any) -> str:
    """The unit a record id or a document id names, under every convention of the organizers' files:
    ``69383905`` (a unit id), ``12762334sc1`` / ``12762334qa0`` (a record id), ``"2ebb..."sc1`` (quotes
    inside), ``"12762334sc1"`` (quotes around), ``69383905`` read as an integer (or as a float such as
    ``69383905.0`` from a parquet column). Records and documents are matched by it."""
    if isinstance(identifier, float) and identifier.is_integer():
        identifier = int(identifier)
    return document_key(_SUFFIX.sub("", document_key(identifier)))


def _units(records: Sequence[Any]) -> tuple[list[str], dict[str, list[int]], dict[str, Any]]:
    order: list[str] = []
    members: dict[str, list[int]] = {}
    task: dict[str, Any] = {}
    for i, rec in enumerate(records):
        u = unit_id(_get(rec, "id"))
        if u not in members:
            order.append(u)
            members[u] = []
            task[u] = _get(rec, "task")
        members[u].append(i)
    return order, members, task


def _round_robin(order: list[str], task: dict[str, Any]) -> list[str]:
    by_task: dict[Any, list[str]] = {}
    for u in order:
        by_task.setdefault(task[u], []).append(u)
    queues = list(by_task.values())
    seq: list[str] = []
    for k in range(max((len(q) for q in queues), default=0)):
        seq.extend(q[k] for q in queues if k < len(q))
    return seq


def slice_records(records: Sequence[Any], limit: int | None) -> list[Any]:
    """Whole units, round-robin over tasks, at most ``limit`` records (rule in the module docstring).
    ``records`` are :class:`~llm_unlearn.data.records.Record` objects or dicts with ``id`` and ``task``."""
    records = list(records)
    if not limit or not records:
        return records
    if limit < 0:
        raise ValueError(f"limit must be positive, got {limit}")
    order, members, task = _units(records)
    taken: list[int] = []
    for u in _round_robin(order, task):
        if len(taken) == limit:
            break
        if len(taken) + len(members[u]) <= limit:
            taken.extend(members[u])
    if not taken:
        taken = list(members[_round_robin(order, task)[0]])
    return [records[i] for i in sorted(taken)]


@dataclass
class Slice:
    forget: list[Any]
    retain: list[Any]
    members: list[dict] = field(default_factory=list)
    nonmembers: list[dict] = field(default_factory=list)


def slice_data(
    forget: Sequence[Any],
    retain: Sequence[Any],
    limit: int | None,
    members: Sequence[dict] | None = None,
    nonmembers: Sequence[dict] | None = None,
) -> Slice:
    """Forget, retain and MIA documents sliced together (rule in the module docstring)."""
    members, nonmembers = list(members or []), list(nonmembers or [])
    if not limit:
        return Slice(list(forget), list(retain), members, nonmembers)
    f = slice_records(forget, limit)
    r = slice_records(retain, limit)
    keys = {unit_key(_get(rec, "id")) for rec in f}
    m = [d for d in members if unit_key(d["id"]) in keys]
    if members and not m:
        from llm_unlearn.errors import UserError

        doc, rec = members[0]["id"], _get(f[0], "id") if f else None
        raise UserError(
            f"none of the {len(members)} MIA member documents belongs to a forget unit of the slice of "
            f"{limit} records (document {doc!r} is read as unit {unit_key(doc)!r}, record {rec!r} as "
            f"{unit_key(rec)!r}); members are the Task3 forget documents: raise --limit, or check the ids"
        )
    return Slice(f, r, m, nonmembers[: len(m)])


def slice_members(
    forget: Sequence[Any],
    retain: Sequence[Any],
    n_members: int,
    limit: int | None,
    members: Sequence[dict],
    nonmembers: Sequence[dict] | None = None,
    n_nonmembers: int | None = None,
) -> Slice:
    """A slice sized by its MIA members: the first ``n_members`` forget units (file order, whole) that
    have a member document, then at most ``limit`` records of the forget units without a member document by the slice rule
    (:func:`slice_records`; 0 or None: none), all in file order; as many retain records as forget records
    (:func:`slice_records`); the taken units' member documents in the member file's order, and the first
    ``n_nonmembers`` non-members (None: as many as members; more make the AUC's sampling error smaller,
    ``evaluation/metrics/mia_noise.py``). Fewer member units than asked for: all of them. None at all:
    ``UserError``. For benchmarks whose MIA must not be coarse (a round-robin slice of N records has about
    N/8 members)."""
    from llm_unlearn.errors import UserError

    forget, members, nonmembers = list(forget), list(members), list(nonmembers or [])
    documented = {unit_key(d["id"]) for d in members}
    order, unit_rows, _ = _units(forget)
    chosen: list[str] = [u for u in order if unit_key(u) in documented][: max(0, n_members)]
    if not chosen:
        doc, rec = (members[0]["id"] if members else None), (_get(forget[0], "id") if forget else None)
        raise UserError(
            f"none of the {len(members)} MIA member documents belongs to a forget unit (document {doc!r} "
            f"is read as unit {unit_key(doc)!r}, record {rec!r} as {unit_key(rec)!r}); check the ids"
        )
    taken = {i for u in chosen for i in unit_rows[u]}
    keys = {unit_key(u) for u in chosen}
    others = [i for i in range(len(forget)) if unit_key(unit_id(_get(forget[i], "id"))) not in documented]
    if limit:
        picked = slice_records([forget[i] for i in others], limit)
        ids = {id(r) for r in picked}
        taken |= {i for i in others if id(forget[i]) in ids}
    f = [forget[i] for i in sorted(taken)]
    m = [d for d in members if unit_key(d["id"]) in keys]
    n_non = len(m) if n_nonmembers is None else max(0, int(n_nonmembers))
    return Slice(f, slice_records(retain, len(f)), m, nonmembers[:n_non])
