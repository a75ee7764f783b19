"""Reading, validating and locating forget / retain records and MIA documents."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_unlearn.data.records import (
    DataBundle,
    Record,
    load_unlearning_data,
    read_mia_documents,
    read_records,
    record_kind,
)
from llm_unlearn.errors import DataError, UserError

ORG_FORGET = "forget_train-00000-of-00001.parquet"
ORG_RETAIN = "retain_train-00000-of-00001.parquet"


def _row(i: int, split: str = "forget", **over) -> dict:
    row = {
        "id": f"doc{i}qa0",
        "input": f"question {i}?",
        "output": f"answer {i}",
        "task": "Task2",
        "split": split,
    }
    row.update(over)
    return row


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# ------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real(semeval_dir) -> DataBundle:
    return load_unlearning_data(semeval_dir / "train")


def test_real_data_loads(real, semeval_dir):
    assert len(real.forget) == 1112 and len(real.retain) == 1136
    assert all(r.split == "forget" for r in real.forget) and all(r.split == "retain" for r in real.retain)
    assert {r.task for r in real.forget + real.retain} == {"Task1", "Task2", "Task3"}
    assert real.files == [semeval_dir / "train" / "forget.jsonl", semeval_dir / "train" / "retain.jsonl"]
    assert isinstance(real.forget[0], Record)


def test_real_jsonl_and_parquet_identical(real, semeval_dir):
    train = semeval_dir / "train"
    assert read_records(train / ORG_FORGET, split="forget") == real.forget
    assert read_records(train / ORG_RETAIN) == real.retain  # split taken from the rows


def test_split_subdirectory_layout(real, semeval_dir):
    bundle = load_unlearning_data(semeval_dir, split="train")
    assert bundle.forget == real.forget and bundle.retain == real.retain
    # data=<dir>/train with split="train" also works
    assert load_unlearning_data(semeval_dir / "train", split="train").forget == real.forget


def test_organizer_parquet_names(real, semeval_dir, tmp_path):
    for name in (ORG_FORGET, ORG_RETAIN):
        shutil.copy(semeval_dir / "train" / name, tmp_path / name)
    bundle = load_unlearning_data(tmp_path)
    assert bundle.forget == real.forget and bundle.retain == real.retain
    assert bundle.files == [tmp_path / ORG_FORGET, tmp_path / ORG_RETAIN]
    assert load_unlearning_data(tmp_path, split="train").forget == real.forget
    # a validation split picks the _validation files, and says what it looked for when they are absent
    with pytest.raises(UserError, match="forget_validation"):
        load_unlearning_data(tmp_path, split="validation")
    val = [_row(1, split="forget"), _row(2, split="forget")]
    _write_parquet(tmp_path / "forget_validation-00000-of-00001.parquet", val)
    _write_parquet(tmp_path / "retain_validation-00000-of-00001.parquet", [_row(3, split="retain")])
    bundle = load_unlearning_data(tmp_path, split="validation")
    assert [r.id for r in bundle.forget] == ["doc1qa0", "doc2qa0"] and len(bundle.retain) == 1
    assert load_unlearning_data(tmp_path).forget == real.forget  # default prefers train


def test_record_kind_on_real_ids(real):
    kinds = Counter(record_kind(r.id) for r in real.forget)
    assert kinds == {"sc": 342, "qa": 770}
    assert all(record_kind(r.id) is not None for r in real.retain)


def test_quoted_ids(real):
    quoted = [r for r in real.forget if r.id.startswith('"')]
    assert quoted
    assert quoted[0].id == '"2ebbbb06-ab81-4bdf-af75-0157c7178a82"sc1'
    assert record_kind(quoted[0].id) == "sc"
    assert record_kind('"2ebbbb06-ab81-4bdf-af75-0157c7178a82"qa0') == "qa"


@pytest.mark.parametrize(
    "rid, kind",
    [("67148749sc1", "sc"), ("67148749qa4", "qa"), ("abcsc", None), ("x", None), ("", None), ("sc10", None)],
)
def test_record_kind_rule(rid, kind):
    # the official rule drops exactly one last character
    assert record_kind(rid) == kind


def test_mia_documents(semeval_dir):
    members, nonmembers = read_mia_documents(semeval_dir / "mia")
    assert len(members) == 150 and len(nonmembers) == 150
    assert set(members[0]) == {"id", "document"}
    assert all(isinstance(d["document"], str) and d["document"] for d in members + nonmembers)


def test_mia_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_mia_documents(tmp_path / "nope")
    _write_jsonl(tmp_path / "member.jsonl", [{"id": "1", "document": "text"}])
    with pytest.raises(UserError, match="nonmember.jsonl"):
        read_mia_documents(tmp_path)
    _write_jsonl(tmp_path / "nonmember.jsonl", [{"id": "2", "doc": "text"}])
    with pytest.raises(DataError, match=r"nonmember\.jsonl, line 1, field 'document'"):
        read_mia_documents(tmp_path)
    (tmp_path / "nonmember.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no documents"):
        read_mia_documents(tmp_path)


# ---------------------------------------------------------------------------------------- malformed


def _case_malformed_json(d: Path):
    p = d / "forget.jsonl"
    p.write_text(json.dumps(_row(1)) + "\n" + '{"id": "x", "input": \n')
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 2", "malformed JSON"]


def _case_missing_field(d: Path):
    row = _row(2)
    del row["output"]
    p = _write_jsonl(d / "forget.jsonl", [_row(1), row])
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 2", "field 'output'", "missing"]


def _case_non_string(d: Path):
    p = _write_jsonl(d / "forget.jsonl", [_row(1), _row(2), _row(3, output=42)])
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 3", "field 'output'", "int"]


def _case_null(d: Path):
    p = _write_jsonl(d / "forget.jsonl", [_row(1, input=None)])
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 1", "field 'input'", "null"]


def _case_blank_line_counts(d: Path):
    p = d / "forget.jsonl"
    p.write_text(json.dumps(_row(1)) + "\n\n   \n" + json.dumps(_row(2, id=7.5)) + "\n")
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 4", "field 'id'"]


def _case_bad_split(d: Path):
    p = _write_jsonl(d / "forget.jsonl", [_row(1, split="test")])
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 1", "field 'split'"]


def _case_split_disagrees(d: Path):
    p = _write_jsonl(d / "forget.jsonl", [_row(1, split="retain")])
    return lambda: read_records(p, split="forget"), DataError, ["forget.jsonl", "line 1", "field 'split'"]


def _case_empty_file(d: Path):
    p = d / "forget.jsonl"
    p.write_text("\n \n")
    return lambda: read_records(p), DataError, ["forget.jsonl", "no records"]


def _case_non_utf8(d: Path):
    p = d / "forget.jsonl"
    p.write_bytes(json.dumps(_row(1)).encode() + b"\n" + b'{"id": "a\xff\xfe"}\n')
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 2", "UTF-8"]


def _case_id_in_both(d: Path):
    _write_jsonl(d / "forget.jsonl", [_row(1), _row(2), _row(3), _row(4), _row(5)])
    _write_jsonl(d / "retain.jsonl", [_row(i, split="retain") for i in (9, 2, 3, 4, 5)])
    return (
        lambda: load_unlearning_data(d),
        DataError,
        ["forget.jsonl", "retain.jsonl", "line 2", "field 'id'", "4 id(s)", "'doc2qa0'", "'doc4qa0'"],
    )


def _case_unknown_ext(d: Path):
    p = d / "forget.txt"
    p.write_text("hello\n")
    return lambda: read_records(p), UserError, ["forget.txt", ".jsonl", ".json", ".parquet", ".csv"]


def _case_dir_without_files(d: Path):
    (d / "notes.md").write_text("nothing here\n")
    return (
        lambda: load_unlearning_data(d),
        UserError,
        [str(d), "forget.{jsonl,json,parquet,csv}", "forget_train"],
    )


def _case_missing_path(d: Path):
    return lambda: load_unlearning_data(d / "missing"), UserError, ["missing", "not found"]


def _case_missing_file(d: Path):
    return lambda: read_records(d / "forget.jsonl"), UserError, ["forget.jsonl", "not found"]


def _case_csv_missing_cell(d: Path):
    p = d / "forget.csv"
    p.write_text("id,input,output\na1,q,a\na2,q\n")
    return lambda: read_records(p), DataError, ["forget.csv", "line 3", "field 'output'"]


def _case_json_row(d: Path):
    p = d / "forget.json"
    p.write_text(json.dumps([_row(1), _row(2, task=3)]))
    return lambda: read_records(p), DataError, ["forget.json", "line 2", "field 'task'"]


def _case_parquet_null(d: Path):
    p = _write_parquet(d / "forget.parquet", [_row(1), _row(2, output=None)])
    return lambda: read_records(p), DataError, ["forget.parquet", "line 2", "field 'output'", "null"]


def _case_ids_some_rows(d: Path):
    row = _row(2)
    del row["id"]
    p = _write_jsonl(d / "forget.jsonl", [_row(1), row])
    return lambda: read_records(p), DataError, ["forget.jsonl", "line 2", "field 'id'"]


def _case_no_split_known(d: Path):
    p = _write_jsonl(d / "data.jsonl", [{"input": "q", "output": "a"}])
    return lambda: read_records(p), UserError, ["data.jsonl", "forget or retain"]


def _case_empty_forget_set(d: Path):
    p = _write_jsonl(d / "all.jsonl", [_row(1, split="retain")])
    return lambda: load_unlearning_data(p), DataError, ["all.jsonl", "forget set is empty"]


def _case_require_retain(d: Path):
    _write_jsonl(d / "forget.jsonl", [_row(1)])
    return lambda: load_unlearning_data(d, require_retain=True), UserError, ["retain data is required"]


MALFORMED = {
    "malformed_json": _case_malformed_json,
    "missing_field": _case_missing_field,
    "non_string_field": _case_non_string,
    "null_field": _case_null,
    "blank_lines_counted": _case_blank_line_counts,
    "bad_split_value": _case_bad_split,
    "split_disagrees": _case_split_disagrees,
    "empty_file": _case_empty_file,
    "non_utf8": _case_non_utf8,
    "id_in_both_sets": _case_id_in_both,
    "unknown_extension": _case_unknown_ext,
    "dir_without_files": _case_dir_without_files,
    "missing_path": _case_missing_path,
    "missing_file": _case_missing_file,
    "csv_missing_cell": _case_csv_missing_cell,
    "json_row": _case_json_row,
    "parquet_null": _case_parquet_null,
    "ids_in_some_rows": _case_ids_some_rows,
    "split_unknown": _case_no_split_known,
    "empty_forget_set": _case_empty_forget_set,
    "require_retain": _case_require_retain,
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_raises(case, tmp_path):
    call, exc_type, fragments = MALFORMED[case](tmp_path)
    with pytest.raises(exc_type) as info:
        call()
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    if exc_type is DataError:
        assert Path(info.value.path).name in msg


def test_bom_accepted(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_row(1)) + "\n" + json.dumps(_row(2)) + "\n").encode())
    assert [r.id for r in read_records(p)] == ["doc1qa0", "doc2qa0"]
    c = tmp_path / "forget.csv"
    c.write_bytes(b"\xef\xbb\xbfid,input,output\nx1,q,a\n")
    assert read_records(c) == [Record("x1", "q", "a", None, "forget")]


# ------------------------------------------------------------------------------------ generic formats


def test_generic_prompt_completion(tmp_path):
    p = _write_jsonl(
        tmp_path / "my_forget.jsonl",
        [{"prompt": "P1", "completion": "C1"}, {"prompt": "P2", "completion": "C2"}],
    )
    recs = read_records(p)
    assert recs == [
        Record("my_forget-0", "P1", "C1", None, "forget"),
        Record("my_forget-1", "P2", "C2", None, "forget"),
    ]


def test_generic_question_answer(tmp_path):
    p = _write_jsonl(tmp_path / "keep.jsonl", [{"id": 5, "question": "Q?", "answer": "A.", "task": "Task3"}])
    assert read_records(p, split="retain") == [Record("5", "Q?", "A.", "Task3", "retain")]


def test_generic_text_only(tmp_path):
    p = _write_jsonl(tmp_path / "retain_docs.jsonl", [{"text": "Some document."}, {"text": "Another."}])
    recs = read_records(p)
    assert [(r.input, r.output, r.split) for r in recs] == [
        ("", "Some document.", "retain"),
        ("", "Another.", "retain"),
    ]
    assert [r.id for r in recs] == ["retain_docs-0", "retain_docs-1"]


def test_csv_and_json(tmp_path):
    rows = [_row(1), _row(2, input='with "quotes", commas\nand a newline')]
    c = tmp_path / "forget.csv"
    with c.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    expected = [Record(r["id"], r["input"], r["output"], r["task"], r["split"]) for r in rows]
    assert read_records(c) == expected
    (tmp_path / "forget.json").write_text(json.dumps(rows))
    assert read_records(tmp_path / "forget.json") == expected
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    assert read_records(tmp_path / "wrapped.json") == expected


def test_directory_with_other_formats(tmp_path):
    _write_parquet(tmp_path / "forget.parquet", [_row(1), _row(2)])
    (tmp_path / "retain.csv").write_text("input,output\nq,a\n")
    bundle = load_unlearning_data(tmp_path)
    assert len(bundle.forget) == 2 and bundle.retain == [Record("retain-0", "q", "a", None, "retain")]
    assert bundle.files == [tmp_path / "forget.parquet", tmp_path / "retain.csv"]


def test_explicit_files_and_optional_retain(tmp_path):
    f = _write_jsonl(tmp_path / "a.jsonl", [_row(1), _row(2)])
    bundle = load_unlearning_data(forget=f)
    assert len(bundle.forget) == 2 and bundle.retain == [] and bundle.files == [f]
    r = _write_jsonl(tmp_path / "b.jsonl", [{"question": "q", "answer": "a"}])
    bundle = load_unlearning_data(forget=f, retain=r)
    assert bundle.retain[0].split == "retain" and bundle.files == [f, r]
    with pytest.raises(UserError, match="not found"):
        load_unlearning_data(forget=tmp_path / "nope.jsonl")


def test_combined_file_split_by_rows(tmp_path):
    p = _write_jsonl(tmp_path / "all.jsonl", [_row(1), _row(2, split="retain"), _row(3)])
    bundle = load_unlearning_data(p)
    assert [r.id for r in bundle.forget] == ["doc1qa0", "doc3qa0"]
    assert [r.id for r in bundle.retain] == ["doc2qa0"]


def test_duplicate_ids_warn(tmp_path):
    p = _write_jsonl(tmp_path / "forget.jsonl", [_row(1), _row(1), _row(2), _row(2), _row(2), _row(3)])
    with pytest.warns(UserWarning, match=r"3 duplicate id\(s\) \(2 distinct"):
        recs = read_records(p)
    assert len(recs) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_records(_write_jsonl(tmp_path / "ok_forget.jsonl", [_row(1), _row(2)]))
