import json
from collections import Counter

import pytest

from llm_unlearn.data.synthetic import TASKS, make_synthetic_dataset, write_synthetic_dataset
from llm_unlearn.errors import ConfigError


@pytest.fixture(scope="module")
def ds():
    return make_synthetic_dataset()


def _kind(record_id: str) -> str:
    stem = record_id[:-1]
    assert stem.endswith(("sc", "qa")), record_id
    return stem[-2:]


def test_deterministic():
    a = make_synthetic_dataset(seed=0)
    b = make_synthetic_dataset(seed=0)
    c = make_synthetic_dataset(seed=1)
    assert a == b
    assert a.forget != c.forget
    assert a.documents != c.documents


def test_default_sizes_and_balance(ds):
    assert len(ds.forget) == 60
    assert len(ds.retain) == 60
    assert 100 <= len(ds.forget) + len(ds.retain) <= 150
    assert len(ds.member_docs) == 12
    assert len(ds.nonmember_docs) == 12
    assert len(ds.documents) == 24
    for split, rows in (("forget", ds.forget), ("retain", ds.retain)):
        assert all(r["split"] == split for r in rows)
        assert all(set(r) == {"id", "input", "output", "task", "split"} for r in rows)
        counts = Counter((r["task"], _kind(r["id"])) for r in rows)
        for task in TASKS:
            assert counts[(task, "sc")] == 8
            assert counts[(task, "qa")] == 12


def test_odd_entity_count():
    small = make_synthetic_dataset(n_entities_per_task=3, seed=5)
    assert len(small.forget) == 3 * 2 * 5
    assert len(small.retain) == 3 * 1 * 5
    assert len(small.member_docs) == len(small.nonmember_docs) == 6
    for rows in (small.forget, small.retain):
        assert {r["task"] for r in rows} == set(TASKS)
        assert {_kind(r["id"]) for r in rows} == {"sc", "qa"}


def test_large_entity_count_is_consistent():
    big = make_synthetic_dataset(n_entities_per_task=60, seed=3)
    names = [e["name"] for e in big.entities]
    assert len(names) == len(set(names)) == 3 * 90
    ids = [r["id"] for r in big.forget + big.retain]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("n", [0, 1, 61, 2.5, True])
def test_bad_sizes(n):
    with pytest.raises(ConfigError):
        make_synthetic_dataset(n_entities_per_task=n)


def test_tasks_and_kinds_in_both_splits(ds):
    for rows in (ds.forget, ds.retain):
        assert {r["task"] for r in rows} == set(TASKS)
        assert {_kind(r["id"]) for r in rows} == {"sc", "qa"}
        for task in TASKS:
            assert {_kind(r["id"]) for r in rows if r["task"] == task} == {"sc", "qa"}


def test_ids_unique_across_splits(ds):
    ids = [r["id"] for r in ds.forget + ds.retain]
    assert len(ids) == len(set(ids))
    base = [r["id"][:-3] for r in ds.forget + ds.retain]
    assert all(len(b) == 12 and all(ch in "0123456789abcdef" for ch in b) for b in base)
    mia_ids = [d["id"] for d in ds.member_docs + ds.nonmember_docs]
    assert len(mia_ids) == len(set(mia_ids))


def test_entity_names_never_shared_between_splits(ds):
    names = [e["name"] for e in ds.entities]
    assert len(names) == len(set(names))
    by_split = {
        s: [e["name"] for e in ds.entities if e["split"] == s] for s in ("forget", "retain", "nonmember")
    }
    forget_text = " ".join(r["input"] + " " + r["output"] for r in ds.forget)
    retain_text = " ".join(r["input"] + " " + r["output"] for r in ds.retain)
    for name in by_split["forget"]:
        assert name in forget_text
        assert name not in retain_text
    for name in by_split["retain"]:
        assert name in retain_text
        assert name not in forget_text
    all_text = forget_text + " " + retain_text + " " + " ".join(ds.documents)
    for name in by_split["nonmember"]:
        assert name not in all_text
    # every record names exactly one entity
    for r in ds.forget + ds.retain:
        assert sum(name in r["input"] for name in names) == 1, r


def test_members_and_nonmembers(ds):
    members = {d["document"] for d in ds.member_docs}
    nonmembers = {d["document"] for d in ds.nonmember_docs}
    assert members.isdisjoint(nonmembers)
    assert members <= set(ds.documents)
    assert nonmembers.isdisjoint(ds.documents)
    assert all(set(d) == {"id", "document"} for d in ds.member_docs + ds.nonmember_docs)
    assert {e["document"] for e in ds.entities if e["split"] == "forget"} == members


def test_answers_are_in_the_documents(ds):
    by_base = {e["id"]: e for e in ds.entities}
    for r in ds.forget + ds.retain:
        ent = by_base[r["id"][:-3]]
        assert ent["split"] == r["split"] and ent["task"] == r["task"]
        doc = ent["document"]
        if _kind(r["id"]) == "qa":
            assert r["output"] in doc
            assert ent["name"] in r["input"]
            assert 1 <= len(r["output"].split()) <= 3
        else:
            assert f"{r['input']} {r['output']}" in doc
        assert len((r["input"] + " " + r["output"]).split()) <= 30
    for d in ds.documents:
        assert len(d.split()) <= 40


def test_no_conflicting_questions(ds):
    answers: dict[str, set[str]] = {}
    for r in ds.forget + ds.retain:
        answers.setdefault(r["input"], set()).add(r["output"])
    assert all(len(v) == 1 for v in answers.values())


def test_fake_pii_looks_fake(ds):
    pii = [r for r in ds.forget + ds.retain if r["task"] == "Task2" and r["input"].startswith("What is the")]
    phones = [r["output"] for r in pii if "phone" in r["input"]]
    emails = [r["output"] for r in pii if "email" in r["input"]]
    assert phones and emails
    assert all(p.startswith("555-01") and len(p) == 8 for p in phones)
    assert len(set(phones)) == len(phones)
    assert all(e.endswith("@example.org") for e in emails)


def test_write_roundtrip(ds, tmp_path):
    paths = write_synthetic_dataset(ds, tmp_path / "demo")
    assert set(paths) == {"forget", "retain", "member", "nonmember"}
    assert paths["member"] == tmp_path / "demo" / "mia" / "member.jsonl"

    def read(p):
        with open(p, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    assert read(paths["forget"]) == ds.forget
    assert read(paths["retain"]) == ds.retain
    assert read(paths["member"]) == ds.member_docs
    assert read(paths["nonmember"]) == ds.nonmember_docs
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "demo").rglob("*")) == [
        "forget.jsonl",
        "member.jsonl",
        "mia",
        "nonmember.jsonl",
        "retain.jsonl",
    ]


def test_extra_nonmembers_leave_the_rest_of_the_dataset_unchanged():
    from llm_unlearn.data.synthetic import make_synthetic_dataset

    base = make_synthetic_dataset(n_entities_per_task=4, seed=5)
    more = make_synthetic_dataset(n_entities_per_task=4, seed=5, extra_nonmembers_per_task=3)
    assert more.forget == base.forget and more.retain == base.retain
    assert more.member_docs == base.member_docs and more.documents == base.documents
    assert more.nonmember_docs[: len(base.nonmember_docs)] == base.nonmember_docs
    extra = more.nonmember_docs[len(base.nonmember_docs) :]
    assert len(extra) == 3 * 3  # three tasks
    ids = [d["id"] for d in more.member_docs + more.nonmember_docs]
    assert len(set(ids)) == len(ids)
    texts = {d["document"] for d in more.member_docs}
    assert not any(d["document"] in texts for d in extra)


@pytest.mark.parametrize("bad", [-1, 201, 1.5, True])
def test_extra_nonmembers_out_of_range_is_refused(bad):
    from llm_unlearn.data.synthetic import make_synthetic_dataset
    from llm_unlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="extra_nonmembers_per_task"):
        make_synthetic_dataset(seed=0, extra_nonmembers_per_task=bad)
