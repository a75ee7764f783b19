"""Slices of a SemEval-style data set that keep together what the benchmark ties together (pure, torch-free).

SemEval-2025 Task 4 ties records and documents together by id:

* a record's id is its **unit id** followed by ``sc<k>`` or ``qa<k>`` (e.g. ``12762334sc1``,
  ``12762334qa0``); all records with the same unit id (one story, one biography) form a **unit**;
* the MIA member documents are the Task3 forget documents: a member's id is the unit id of its
  forget records (``12762334``).

Some ids carry literal double quotes (``"2ebb..."sc1``); they are part of the unit id as far as grouping
records goes, and are stripped when a unit id is compared with a document id.

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
5. **MIA documents.** Members are the member documents whose id (quotes stripped) is the unit id
   (quotes stripped) of a taken forget unit, in their file order; non-members are the first as many
   non-member documents as there are members. Without a limit both lists are returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["unit_id", "document_key", "slice_records", "slice_data", "Slice"]

_SUFFIX = re.compile(r"(sc|qa)\d+$")


def _get(item: Any, name: str):
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def unit_id(record_id: str) -> str:
    """The id without its trailing ``sc<k>`` / ``qa<k>`` (the whole id when it has neither)."""
    return _SUFFIX.sub("", str(record_id))


def document_key(identifier: str) -> str:
    """What unit ids and document ids are compared by: the id with surrounding double quotes removed."""
    return str(identifier).strip().strip('"')


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
    keys = {document_key(unit_id(_get(rec, "id"))) for rec in f}
    m = [d for d in members if document_key(d["id"]) in keys]
    return Slice(f, r, m, nonmembers[: len(m)])
