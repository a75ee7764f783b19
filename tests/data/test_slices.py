"""data/slices.py: whole units, round-robin over tasks, members with their forget records."""

from __future__ import annotations

import collections

import pytest

from llm_unlearn.data.slices import document_key, slice_data, slice_records, unit_id


def _rec(rid: str, task: str | None) -> dict:
    return {"id": rid, "task": task, "input": "q", "output": "a", "split": "forget"}


def test_unit_id_strips_only_the_trailing_kind():
    assert unit_id("12762334sc1") == "12762334"
    assert unit_id("12762334qa0") == "12762334"
    assert unit_id('"2ebb-0157"sc1') == '"2ebb-0157"'
    assert unit_id("plain-id") == "plain-id"
    assert unit_id("scqa1sc2") == "scqa1"
    assert document_key('"2ebb-0157"') == "2ebb-0157"


def test_round_robin_whole_units_and_file_order():
    recs = (
        [_rec(f"a{i}sc1", "Task1") for i in range(3)]
        + [_rec(f"b{i}{k}", "Task2") for i in range(3) for k in ("sc1", "qa1", "qa2")]
        + [_rec(f"c{i}qa1", "Task3") for i in range(3)]
    )
    out = slice_records(recs, 6)
    # sequence: a0(1) b0(3) c0(1) a1(1) -> 6 records exactly
    assert [r["id"] for r in out] == ["a0sc1", "a1sc1", "b0sc1", "b0qa1", "b0qa2", "c0qa1"]
    # a unit that does not fit is passed over, a later smaller one is taken
    out = slice_records(recs, 4)
    assert sorted(r["id"] for r in out) == sorted(["a0sc1", "b0sc1", "b0qa1", "b0qa2"])
    out = slice_records(recs, 3)  # a0, b0 does not fit, c0, a1
    assert [r["id"] for r in out] == ["a0sc1", "a1sc1", "c0qa1"]
    # never empty, never split: N smaller than every unit gives the first unit whole
    only_big = [r for r in recs if r["task"] == "Task2"]
    assert [r["id"] for r in slice_records(only_big, 2)] == ["b0sc1", "b0qa1", "b0qa2"]
    assert slice_records(recs, None) == recs and slice_records(recs, 0) == recs
    assert slice_records(recs, 1000) == recs


def test_members_follow_their_forget_units_synthetic():
    from llm_unlearn.data.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(seed=0)
    members = [dict(d) for d in ds.member_docs]
    nonmembers = [dict(d) for d in ds.nonmember_docs]
    s = slice_data(ds.forget, ds.retain, 15, members, nonmembers)  # units of 5 records
    assert len(s.forget) == 15 and len(s.retain) == 15
    _check_ties(s.forget, ds.forget, s.members, members)
    assert s.nonmembers == nonmembers[: len(s.members)]
    tasks = {r["task"] for r in ds.forget}
    assert {r["task"] for r in s.forget} == tasks


def _check_ties(sliced, all_forget, sliced_members, all_members):
    taken_units = {unit_id(r["id"] if isinstance(r, dict) else r.id) for r in sliced}
    by_unit = collections.Counter(unit_id(r["id"] if isinstance(r, dict) else r.id) for r in all_forget)
    got = collections.Counter(unit_id(r["id"] if isinstance(r, dict) else r.id) for r in sliced)
    assert all(got[u] == by_unit[u] for u in taken_units), "a unit was split"
    member_keys = {document_key(d["id"]) for d in all_members}
    sliced_keys = {document_key(d["id"]) for d in sliced_members}
    # every member in the slice has its forget records, and every taken forget unit that has a member
    # document brings it along
    assert sliced_keys <= {document_key(u) for u in taken_units}
    assert {document_key(u) for u in taken_units} & member_keys == sliced_keys


def test_real_semeval_slice_keeps_members_and_forget_records_together(semeval_dir):
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents

    bundle = load_unlearning_data(semeval_dir / "train")
    members, nonmembers = read_mia_documents(semeval_dir / "mia")
    for n in (10, 40, 200):
        s = slice_data(bundle.forget, bundle.retain, n, members, nonmembers)
        assert len(s.forget) == n and len(s.retain) == n  # units of 2 and 6 records: N even fills exactly
        _check_ties(s.forget, bundle.forget, s.members, members)
        assert {r.task for r in s.forget} == {"Task1", "Task2", "Task3"}
        assert {r.task for r in s.retain} == {"Task1", "Task2", "Task3"}
        assert len(s.members) > 0 and len(s.nonmembers) == len(s.members)
        task3_units = {document_key(unit_id(r.id)) for r in s.forget if r.task == "Task3"}
        assert {document_key(d["id"]) for d in s.members} == task3_units
    full = slice_data(bundle.forget, bundle.retain, None, members, nonmembers)
    assert len(full.forget) == len(bundle.forget) and full.members == members


def test_negative_limit_is_refused():
    with pytest.raises(ValueError):
        slice_records([_rec("a1sc1", None)], -1)


def test_member_slice_takes_whole_member_units_then_the_others():
    from llm_unlearn.data.slices import slice_members

    recs = (
        [_rec(f"a{i}sc1", "Task1") for i in range(4)]
        + [_rec(f"c{i}{k}", "Task3") for i in range(5) for k in ("sc1", "qa1")]
        + [_rec(f"b{i}{k}", "Task2") for i in range(2) for k in ("sc1", "qa1", "qa2")]
    )
    retain = [dict(r, split="retain", id="r" + r["id"]) for r in recs]
    members = [{"id": f"c{i}", "document": f"doc {i}"} for i in (4, 1, 2, 0)]  # c3 has no document
    nonmembers = [{"id": f"n{i}", "document": f"other {i}"} for i in range(10)]
    s = slice_members(recs, retain, 3, 4, members, nonmembers)
    # member units in file order (c0, c1, c2: whole), then 4 records of the others by the slice rule
    ids = [r["id"] for r in s.forget]
    documented = ("c0", "c1", "c2", "c4")
    assert [i for i in ids if i[:2] in documented] == ["c0sc1", "c0qa1", "c1sc1", "c1qa1", "c2sc1", "c2qa1"]
    undocumented = [r for r in recs if r["id"][:2] not in documented]  # a*, b*, and c3 (no document)
    assert [i for i in ids if i[:2] not in documented] == [r["id"] for r in slice_records(undocumented, 4)]
    assert ids == [r["id"] for r in recs if r["id"] in set(ids)]  # file order
    assert [d["id"] for d in s.members] == ["c1", "c2", "c0"]  # the member file's order
    assert s.nonmembers == nonmembers[:3]
    assert len(s.retain) == len(s.forget)
    _check_ties(s.forget, recs, s.members, members)
    # limit 0: member units only (all four, fewer than asked for)
    s0 = slice_members(recs, retain, 10, 0, members, nonmembers)
    assert {r["id"][:2] for r in s0.forget} == {"c0", "c1", "c2", "c4"} and len(s0.members) == 4
    # more non-members than members when asked (a finer AUC); the slice is otherwise the same
    s7 = slice_members(recs, retain, 3, 4, members, nonmembers, n_nonmembers=7)
    assert s7.nonmembers == nonmembers[:7] and s7.members == s.members and s7.forget == s.forget


def test_member_slice_refuses_when_no_document_matches():
    from llm_unlearn.data.slices import slice_members
    from llm_unlearn.errors import UserError

    recs = [_rec("c0sc1", "Task3")]
    with pytest.raises(UserError, match="member"):
        slice_members(recs, recs, 2, 0, [{"id": "zz", "document": "x"}], [])


def test_real_semeval_member_slice(semeval_dir):
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents
    from llm_unlearn.data.slices import slice_members, unit_key

    bundle = load_unlearning_data(semeval_dir / "train")
    members, nonmembers = read_mia_documents(semeval_dir / "mia")
    s = slice_members(bundle.forget, bundle.retain, 24, 24, members, nonmembers)
    assert len(s.members) == 24 and len(s.nonmembers) == 24
    _check_ties(s.forget, bundle.forget, s.members, members)
    member_units = {unit_key(d["id"]) for d in s.members}
    assert sum(unit_key(r.id) in member_units for r in s.forget) == 48  # two records a Task3 unit
    assert len(s.forget) == 48 + 24 and len(s.retain) == len(s.forget)
    assert {r.task for r in s.forget} == {"Task1", "Task2", "Task3"}
