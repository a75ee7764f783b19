"""The output-directory policy (outputs.py) over generated directory states.

For every state a directory can be in when a subcommand starts (absent; empty; the tool's output of
the same or another subcommand, with user files added; a user's files that carry the tool's output
names; a user's `data/`; a user's `.tmp` files; a symlink into an input) and with or without
`--overwrite`, a subcommand's writes through the policy must leave every path that is not in the
manifest byte-identical, and its outputs complete (or the run refused before anything is written).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import pytest

from llm_unlearn import io_utils
from llm_unlearn.errors import UserError
from llm_unlearn.outputs import (
    LOCK,
    MARKER,
    DirectoryLock,
    fill_output_dir,
    manifest,
    prepare_output_dir,
    read_marker,
    remove_stale_tmp,
)

# two kinds of writer: named files (evaluate, mmlu, train) and a directory filled as a whole
# (finetune, merge: names decided by save_pretrained)
NAMED = {"evaluate": ("report.md", "metrics.json", "plots")}
FILLED = {"finetune": ("config.json", "model.safetensors", "finetune.json")}


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 (or 'dir' / 'link -> target') of every path under root, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _state(name: str, out: Path, data: Path, kind: str) -> None:
    if name == "absent":
        return
    out.mkdir()
    if name == "empty":
        return
    if name == "same-kind + user files":
        _write_as(kind, out, "v1")
        (out / "notes.txt").write_text("mine")
        (out / "eval").mkdir()
        (out / "eval" / "r.json").write_text("{}")
    elif name == "other kind":
        _write_as("mmlu" if kind != "mmlu" else "evaluate", out, "v1")
    elif name == "user files with our names":
        for n in (NAMED.get(kind) or FILLED[kind])[:2]:
            (out / n).write_text("the user's own file")
    elif name == "user data/":
        (out / "data").mkdir()
        (out / "data" / "forget.jsonl").write_text('{"id": "1"}\n')
    elif name == "user .tmp files":
        (out / ".notes.tmp").write_text("mine")
        (out / ".report.md.abc.tmp").write_text("mine too")
    elif name == "symlink into input":
        (out / "report.md").symlink_to(data / "forget.jsonl")
        (out / "config.json").symlink_to(data / "forget.jsonl")


def _write_as(kind: str, out: Path, version: str, lock: bool = True) -> None:
    """What a subcommand of `kind` writes, through the policy (`lock`: take the directory's lock)."""
    if kind in FILLED:

        def fill(tmp: Path) -> None:
            for n in FILLED[kind]:
                (tmp / n).write_text(f"{kind} {version}")

        fill_output_dir(out, fill, marker_kind=kind)
        return
    names = NAMED.get(kind, ("metrics.json", "predictions.jsonl"))
    prepare_output_dir(out, kind, own_names=names, overwrite=True)
    held = DirectoryLock(out).acquire() if lock else None
    try:
        remove_stale_tmp(out)
        for n in names:
            if n == "plots":
                io_utils.atomic_dir(out / n, lambda t: (t / "a.png").write_text(version))
            else:
                io_utils.atomic_write_text(out / n, f"{kind} {version}")
    finally:
        if held is not None:
            held.release()


STATES = [
    "absent",
    "empty",
    "same-kind + user files",
    "other kind",
    "user files with our names",
    "user data/",
    "user .tmp files",
    "symlink into input",
]


@pytest.mark.parametrize(
    "state, kind, overwrite", list(itertools.product(STATES, ["evaluate", "finetune"], [False, True]))
)
def test_no_path_outside_the_manifest_changes(tmp_path, state, kind, overwrite):
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget.jsonl").write_text('{"id": "1"}\n')
    out = tmp_path / "out"
    _state(state, out, data, kind)
    before = _snapshot(tmp_path)
    names = NAMED.get(kind) or FILLED[kind]
    try:
        prepare_output_dir(out, kind, [data], overwrite=overwrite, own_names=names, create=False)
        with DirectoryLock(out):
            prepare_output_dir(out, kind, [data], overwrite=overwrite, own_names=names)
            _write_as(kind, out, "v2", lock=False)
    except UserError as exc:
        assert "\n" not in str(exc)
        assert _snapshot(tmp_path) == before, "a refused run changed something"
        refused = True
    else:
        refused = False
    after = _snapshot(tmp_path)
    ours = manifest(out) if out.is_dir() else set()
    for rel, digest in before.items():
        top = Path(rel).parts[0]
        if rel.startswith("out/"):
            inner = Path(rel).relative_to("out").parts[0]
            if inner in ours or inner in (MARKER, LOCK):
                continue
        elif top != "data":
            continue
        assert after.get(rel) == digest, f"{rel} changed ({state}, overwrite={overwrite})"
    assert after["data/forget.jsonl"] == before["data/forget.jsonl"]
    if not refused:
        for n in names:  # complete: every output of this run is there, of this run
            p = out / n
            text = (p / "a.png").read_text() if p.is_dir() else p.read_text()
            assert text.endswith("v2")
        assert set(names) <= manifest(out) and read_marker(out)["kind"] == kind
    # the expected verdicts, stated
    expect_refused = {
        "absent": False,
        "empty": False,
        "same-kind + user files": False,
        "other kind": not overwrite,
        "user files with our names": True,  # with or without --overwrite: a user's file is never replaced
        "user data/": not overwrite,
        "user .tmp files": not overwrite,
        "symlink into input": True,
    }[state]
    assert refused == expect_refused


def test_a_rerun_of_a_filled_directory_keeps_what_the_user_added(tmp_path):
    """finetune / merge rerun into their own directory: the user's notes and evaluation folder stay,
    the tool's earlier outputs are replaced, and its outputs that the rerun does not make are removed."""
    out = tmp_path / "ft"

    def v1(tmp):
        (tmp / "config.json").write_text("1")
        (tmp / "model.safetensors").write_text("1")
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "t.json").write_text("1")

    fill_output_dir(out, v1, marker_kind="finetune")
    (out / "notes.txt").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "report.md").write_text("mine")

    def v2(tmp):
        (tmp / "config.json").write_text("2")
        (tmp / "model-00001-of-00002.safetensors").write_text("2")
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "t.json").write_text("2")

    prepare_output_dir(out, "finetune", create=False)  # no --overwrite needed: it is ours
    fill_output_dir(out, v2, marker_kind="finetune")
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval" / "report.md").read_text() == "mine"
    assert (out / "config.json").read_text() == "2" and (out / "tokenizer" / "t.json").read_text() == "2"
    assert not (out / "model.safetensors").exists()  # ours, not made again: removed
    assert manifest(out) == {"config.json", "model-00001-of-00002.safetensors", "tokenizer"}
    assert not [p for p in out.iterdir() if io_utils.temp_parts(p.name)]


def test_stale_temporaries_are_ours_only(tmp_path):
    """A killed write's temporaries (named by the tool, another pid) are removed at the next start;
    a user's `.notes.tmp` and `.x.old` stay; a previous version whose path is missing is put back."""
    out = tmp_path / "o"
    out.mkdir()
    (out / ".notes.tmp").write_text("mine")
    (out / ".checkpoint.old").mkdir()
    dead = f"{io_utils.TMP_PREFIX}999999.abc123.run.json"
    (out / dead).write_text("{")
    half = out / f"{io_utils.TMP_PREFIX}999999.x_1.checkpoint"
    half.mkdir()
    (half / "state.json").write_text("{}")
    prev = out / f"{io_utils.OLD_PREFIX}999999.ffff.adapter"
    prev.mkdir()
    (prev / "w").write_text("complete")
    mine = out / f"{io_utils.TMP_PREFIX}{os.getpid()}.zz.report.md"  # this process's own, in flight
    mine.write_text("x")
    removed = remove_stale_tmp(out)
    assert sorted(p.name for p in removed) == sorted([dead, half.name])
    assert (out / ".notes.tmp").read_text() == "mine" and (out / ".checkpoint.old").is_dir()
    assert (out / "adapter" / "w").read_text() == "complete" and not prev.exists()
    assert mine.exists()


def test_temporary_names_cannot_be_a_users(tmp_path):
    p = io_utils.atomic_write_text(tmp_path / "report.md", "x")
    assert p.read_text() == "x"
    assert io_utils.temp_parts(".report.md.abc.tmp") is None and io_utils.temp_parts(".notes.tmp") is None
    assert io_utils.temp_parts(f"{io_utils.TMP_PREFIX}12.ab_c9.report.md") == ("tmp", 12, "report.md")


def test_a_legacy_marker_without_manifest_still_reruns(tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "evaluate", "llm_unlearn": "0.1.0"}))
    (out / "report.md").write_text("old")
    prepare_output_dir(out, "evaluate", own_names=("report.md",))
    assert "report.md" in manifest(out)
