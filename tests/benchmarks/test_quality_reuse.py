"""benchmarks/quality.py --reuse-target: a target is reused only for the slice it was fine-tuned on (a run of
2026-12-08 reused the SmolLM2 target, made on 8 members, with the tiny model's 24-member slice: its step-0
evaluation read forget EM 0.22 and retain EM 0.25, a state no unlearning starts from)."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load


def _slice(tmp_path, forget: str):
    d = tmp_path / "data"
    (d / "mia").mkdir(parents=True, exist_ok=True)
    (d / "forget.jsonl").write_text(forget)
    (d / "retain.jsonl").write_text('{"id": "r", "input": "q", "output": "a"}\n')
    (d / "mia" / "member.jsonl").write_text('{"id": "m", "document": "text"}\n')
    return {"dir": d}


def test_the_fingerprint_follows_the_data():
    q = load("quality")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        a = q.slice_fingerprint(_slice(Path(t), '{"id": "f1"}\n'))
        b = q.slice_fingerprint(_slice(Path(t), '{"id": "f1"}\n'))
        c = q.slice_fingerprint(_slice(Path(t), '{"id": "f2"}\n'))
    assert a == b and a != c and set(a) == {"forget.jsonl", "retain.jsonl", "mia/member.jsonl"}


@pytest.mark.parametrize("stamp", [None, "other"])
def test_a_target_of_another_slice_or_without_a_stamp_is_refused(tmp_path, stamp):
    q = load("quality")
    sl = _slice(tmp_path, '{"id": "f1"}\n')
    target = tmp_path / "work" / "m" / "target"
    target.mkdir(parents=True)
    (target / "finetune.json").write_text("{}")
    if stamp == "other":
        other = q.slice_fingerprint(_slice(tmp_path / "o", '{"id": "f2"}\n'))
        (tmp_path / "work" / "m" / "target-slice.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="fine-tuned on another slice"):
        q.run_model("m", sl, tmp_path / "work", tmp_path / "out", {}, [], True)
