"""Every id convention of the organizers' files names the same unit (data/slices.unit_key), and the
slicer, the calibration's forget documents and the gate's unit matching all use that one rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn.data.holdout import with_documents
from llm_unlearn.data.records import Record
from llm_unlearn.data.slices import slice_data, unit_key
from llm_unlearn.errors import UserError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "semeval25"


@pytest.mark.parametrize(
    "identifier, unit",
    [
        ("69383905", "69383905"),
        ("12762334sc1", "12762334"),
        ("12762334qa0", "12762334"),
        ("12762334sc12", "12762334"),
        ('"2ebb1c"sc1', "2ebb1c"),
        ('"12762334sc1"', "12762334"),
        ('"69383905"', "69383905"),
        (" 69383905 ", "69383905"),
        (69383905, "69383905"),
        (69383905.0, "69383905"),
        ("abc-def", "abc-def"),
    ],
)
def test_unit_key_reads_every_convention(identifier, unit):
    assert unit_key(identifier) == unit


def _records(units, split="forget"):
    out = []
    for u in units:
        for suffix in ("sc1", "qa0"):
            out.append(Record(id=f"{u}{suffix}", input="q", output="a", task="Task3", split=split))
    return out


@pytest.mark.parametrize("convention", ["unit id", "record id", "quoted record id", "integer"])
def test_the_slice_keeps_its_members_under_every_convention(convention):
    forget = _records(["101", "202", "303"])
    retain = _records(["901", "902"], "retain")
    name = {
        "unit id": lambda u: u,
        "record id": lambda u: f"{u}sc1",
        "quoted record id": lambda u: f'"{u}qa0"',
        "integer": lambda u: int(u),
    }[convention]
    members = [{"id": name(u), "document": f"doc {u}"} for u in ("101", "202", "303")]
    nonmembers = [{"id": f"n{i}", "document": "x"} for i in range(5)]
    part = slice_data(forget, retain, 4, members, nonmembers)
    assert [d["document"] for d in part.members] == ["doc 101", "doc 202"]
    assert len(part.nonmembers) == 2


def test_a_slice_whose_members_match_nothing_is_refused_in_one_line():
    forget = _records(["101", "202"])
    members = [{"id": "777sc1", "document": "d"}]
    with pytest.raises(UserError) as e:
        slice_data(forget, [], 2, members, [{"id": "n", "document": "x"}])
    assert "\n" not in str(e.value) and "'777sc1' is read as unit '777'" in str(e.value)


def test_forget_documents_named_by_record_ids_follow_their_units():
    """The calibration's forget documents (record-id convention, several per unit) are placed right
    after the last record of their unit."""
    forget = _records(["101", "202"])
    docs = [
        {"id": "202sc1", "document": "two"},
        {"id": '"101qa0"', "document": "one"},
        {"id": "101sc1", "document": "one again"},
    ]
    rows, doc_rows = with_documents(forget, docs)
    assert [r.output for r in rows] == ["a", "a", "one", "one again", "a", "a", "two"]
    assert doc_rows == {2, 3, 6}


@pytest.mark.skipif(not (SHARED / "mia" / "member.jsonl").is_file(), reason="shared SemEval data absent")
@pytest.mark.parametrize("convention", ["unit id (as released)", "record id (validation-split style)"])
def test_real_train_split_slice_finds_its_members_in_both_conventions(convention):
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents

    bundle = load_unlearning_data(str(SHARED), split="train")
    members, nonmembers = read_mia_documents(str(SHARED / "mia"))
    if convention.startswith("record"):  # rename every member by one of its unit's record ids
        by_unit = {}
        for r in bundle.forget:
            by_unit.setdefault(unit_key(r.id), r.id)
        members = [{**d, "id": by_unit.get(unit_key(d["id"]), d["id"])} for d in members]
        assert sum(unit_key(d["id"]) != d["id"] for d in members) > 100  # the renaming took
    part = slice_data(bundle.forget, bundle.retain, 40, members, nonmembers)
    units = {unit_key(r.id) for r in part.forget}
    assert part.members and all(unit_key(d["id"]) in units for d in part.members)
    assert len(part.nonmembers) == len(part.members)
    json.dumps(part.members)  # plain rows, writable as the slice's mia/member.jsonl
