"""The sweep's validation split: whole units carved from the user's data, apart from what grades the run.

The rule of :func:`carve` (pure, torch-free):

1. records are grouped into units by ``data/slices.unit_key`` (a story, a biography: every record of a
   unit goes to the same side, and so do the unit's MIA member documents);
2. the unit keys of one side (forget, or retain) in their file order are shuffled with
   ``random.Random(seed)`` (retain with ``seed + 1``); the first ``round(fraction * n)`` units (at least
   one, and at most ``n - 1`` when ``n >= 2``) are the **validation** units, the rest the **evaluation**
   units;
3. records keep their file order on both sides.

Trials train and are scored on the validation side only (the calibration's evaluations sample it, and
its MIA compares the validation forget documents with the holdout); the evaluation side, with the MIA
non-members, is what the final evaluation grades: the sweep never sees it. The holdout must share no
document (the same text) with the evaluation's non-members (:func:`check_holdout`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_unlearn.data.slices import unit_key
from llm_unlearn.errors import UserError

__all__ = ["Split", "carve", "split_units", "check_holdout"]


def _id(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else getattr(item, "id", None)


def split_units(records: Sequence[Any], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(validation unit keys, evaluation unit keys) of `records` (rule 2 of the module docstring)."""
    keys = list(dict.fromkeys(unit_key(_id(r)) for r in records))
    random.Random(seed).shuffle(keys)
    n = len(keys)
    k = max(1, round(fraction * n))
    if n >= 2:
        k = min(k, n - 1)
    return set(keys[:k]), set(keys[k:])


@dataclass
class Split:
    forget: list[Any]
    retain: list[Any]
    eval_forget: list[Any]
    eval_retain: list[Any]
    forget_documents: list[dict] = field(default_factory=list)  # validation side
    eval_members: list[dict] = field(default_factory=list)
    units: dict[str, list[str]] = field(default_factory=dict)  # "validation_forget", ... -> sorted keys


def carve(
    forget: Sequence[Any],
    retain: Sequence[Any],
    fraction: float,
    seed: int,
    documents: Sequence[dict] = (),
    members: Sequence[dict] = (),
) -> Split:
    """The validation and evaluation sides of forget and retain (module docstring); `documents` (the
    calibration's forget documents) and `members` (the evaluation's MIA members) follow their units."""
    if not 0 < fraction < 1:
        raise UserError(f"the validation fraction must be between 0 and 1, got {fraction}")
    if not forget:
        raise UserError("the forget set is empty: nothing to carve a validation split from")
    vf, ef = split_units(forget, fraction, seed)
    vr, er = split_units(retain, fraction, seed + 1) if retain else (set(), set())
    if len(vf) + len(ef) < 2:
        raise UserError(
            "the forget set has a single unit: a validation split needs at least two (one to tune on, one "
            "to evaluate)"
        )
    return Split(
        forget=[r for r in forget if unit_key(_id(r)) in vf],
        retain=[r for r in retain if unit_key(_id(r)) in vr],
        eval_forget=[r for r in forget if unit_key(_id(r)) in ef],
        eval_retain=[r for r in retain if unit_key(_id(r)) in er],
        forget_documents=[d for d in documents if unit_key(d["id"]) in vf],
        eval_members=[d for d in members if unit_key(d["id"]) in ef],
        units={
            "validation_forget": sorted(vf),
            "validation_retain": sorted(vr),
            "evaluation_forget": sorted(ef),
            "evaluation_retain": sorted(er),
        },
    )


def check_holdout(holdout, nonmembers: Sequence[dict], path: str) -> None:
    """Refuse a holdout that shares a document (the same text) with the evaluation's MIA non-members:
    tuning on it would tune to the grader. (Ids are not compared: two files may number different
    documents alike.)"""
    texts = {d.get("document") for d in nonmembers}
    for d in holdout.documents:
        if d.get("document") in texts:
            raise UserError(
                f"the holdout {path} holds the evaluation's non-member document {d.get('id')!r}: a sweep "
                "tuned on it would tune to the grader; give a holdout of other never-seen documents"
            )
