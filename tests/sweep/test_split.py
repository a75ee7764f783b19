"""The validation split: whole units, disjoint from the evaluation's items, a holdout apart from the
evaluation's non-members."""

from __future__ import annotations

import pytest

from llm_unlearn.data.fields import Record
from llm_unlearn.data.holdout import Holdout
from llm_unlearn.data.slices import unit_key
from llm_unlearn.errors import UserError
from llm_unlearn.sweep.split import carve, check_holdout


def _records(split: str, units: int, per_unit: int = 3) -> list[Record]:
    out = []
    for u in range(units):
        for k in range(per_unit):
            kind = "sc" if k % 2 else "qa"
            out.append(
                Record(f"{split}{u:04d}{kind}{k}", f"q{u}.{k}", f"a{u}.{k}", f"Task{u % 3 + 1}", split)
            )
    return out


@pytest.mark.parametrize("fraction, seed", [(0.5, 0), (0.3, 1), (0.9, 2)])
def test_validation_and_evaluation_are_disjoint_whole_units(fraction, seed):
    forget, retain = _records("f", 10), _records("r", 7)
    members = [{"id": f"f{u:04d}", "document": f"doc {u}"} for u in range(10)]
    part = carve(forget, retain, fraction, seed, documents=members, members=members)
    for val, ev, allr in ((part.forget, part.eval_forget, forget), (part.retain, part.eval_retain, retain)):
        vu, eu = {unit_key(r.id) for r in val}, {unit_key(r.id) for r in ev}
        assert vu and eu and not vu & eu  # both sides non-empty, no unit on both
        assert sorted(r.id for r in val + ev) == sorted(r.id for r in allr)  # every record, once
        assert not {r.id for r in val} & {r.id for r in ev}
    assert len({unit_key(r.id) for r in part.forget}) == max(1, min(9, round(fraction * 10)))
    # the documents follow their units: the trials' forget documents are never the evaluation's members
    assert {unit_key(d["id"]) for d in part.forget_documents} == {unit_key(r.id) for r in part.forget}
    assert {unit_key(d["id"]) for d in part.eval_members} == {unit_key(r.id) for r in part.eval_forget}
    # deterministic
    again = carve(forget, retain, fraction, seed, documents=members, members=members)
    assert [r.id for r in again.forget] == [r.id for r in part.forget]


def test_one_unit_cannot_be_split():
    with pytest.raises(UserError, match="single unit"):
        carve(_records("f", 1), [], 0.5, 0)


def test_holdout_sharing_a_nonmember_document_is_refused():
    nonmembers = [{"id": "n1", "document": "never seen text"}]
    check_holdout(Holdout(documents=[{"id": "n1", "document": "another text"}]), nonmembers, "h.jsonl")
    with pytest.raises(UserError, match="tune to the grader"):
        check_holdout(Holdout(documents=[{"id": "x", "document": "never seen text"}]), nonmembers, "h.jsonl")
