"""data/alternatives.py: the packaged refusals, user files (.txt / .jsonl) and the per-record pick."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llm_unlearn.data.alternatives import load_refusals, pick_alternative
from llm_unlearn.errors import DataError, UserError


def test_packaged_refusals_are_many_distinct_and_short():
    answers = load_refusals()
    assert 35 <= len(answers) <= 60
    assert len(set(answers)) == len(answers)
    assert all(a == a.strip() and 0 < len(a) <= 80 for a in answers)


def test_user_txt_skips_blank_lines_and_strips(tmp_path):
    p = tmp_path / "alt.txt"
    p.write_text("\ufeffFirst answer\n\n  Second answer  \n\n", encoding="utf-8")
    assert load_refusals(p) == ["First answer", "Second answer"]


def test_user_jsonl_text_or_answer_field(tmp_path):
    p = tmp_path / "alt.jsonl"
    rows = [{"text": "one"}, {"answer": "two"}, {"text": " three ", "answer": "ignored"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert load_refusals(str(p)) == ["one", "two", "three"]


@pytest.mark.parametrize(
    "name,content,line",
    [
        ("empty.txt", "", 1),
        ("blank.txt", "\n  \n", 1),
        ("empty.jsonl", "\n", 1),
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', 2),
        ("nofield.jsonl", '{"text": "ok"}\n\n{"other": "x"}\n', 3),
        ("notstr.jsonl", '{"answer": 5}\n', 1),
        ("blankstr.jsonl", '{"text": "ok"}\n{"text": "  "}\n', 2),
        ("list.jsonl", '["a"]\n', 1),
    ],
)
def test_bad_user_files_name_file_and_line(tmp_path, name, content, line):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_refusals(p)
    assert exc.value.line == line
    assert name in str(exc.value) and f"line {line}" in str(exc.value)


def test_unreadable_undecodable_and_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="missing.txt"):
        load_refusals(tmp_path / "missing.txt")
    p = tmp_path / "latin.txt"
    p.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(DataError, match="line 2"):
        load_refusals(p)
    q = tmp_path / "alt.csv"
    q.write_text("a\n", encoding="utf-8")
    with pytest.raises(UserError, match="alt.csv"):
        load_refusals(q)


def test_pick_alternative_deterministic_seeded_and_spread():
    answers = load_refusals()
    ids = [f"rec-{i}" for i in range(400)]
    first = [pick_alternative(i, answers, seed=0) for i in ids]
    assert first == [pick_alternative(i, answers, seed=0) for i in reversed(ids)][::-1]
    assert all(a in answers for a in first)
    other = [pick_alternative(i, answers, seed=1) for i in ids]
    assert first != other
    counts = Counter(first)
    assert len(counts) >= 0.8 * len(answers)  # 400 draws over 40 answers: every few should appear
    assert pick_alternative(7, ["only"], seed=3) == "only"
    assert pick_alternative(7, answers) == pick_alternative("7", answers)
    with pytest.raises(ValueError):
        pick_alternative("x", [])
