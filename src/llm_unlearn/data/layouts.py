"""The forget / retain layouts of a data directory or file (the SemEval organizers' and generic ones):
locating the files, reading them into Records, and the checks across the two sets. TOFU's layout is
read by :mod:`llm_unlearn.data.benchmarks`; :func:`llm_unlearn.data.records.load_unlearning_data`
chooses between them."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from llm_unlearn.data.fields import DataBundle, Record, parse_rows
from llm_unlearn.data.formats import SUPPORTED_EXTENSIONS
from llm_unlearn.errors import DataError, UserError

log = logging.getLogger(__name__)


def read_forget_retain(
    data: str | os.PathLike | None,
    *,
    split: str | None = None,
    forget: str | os.PathLike | None = None,
    retain: str | os.PathLike | None = None,
    require_retain: bool = False,
) -> DataBundle:
    """The forget and retain sets of a plain or organizers' directory, a combined file, or explicit
    ``forget=`` / ``retain=`` files (the layouts of :func:`llm_unlearn.data.records.load_unlearning_data`,
    TOFU's aside)."""
    forget_paths, retain_paths, combined = _resolve_paths(data, split, forget, retain)
    forget_rows, retain_rows, files = _read_sets(forget_paths, retain_paths, combined)
    if not forget_rows:
        raise DataError(files[0], "no forget records (the forget set is empty)", field="split")
    if require_retain and not retain_rows:
        raise UserError(
            "retain data is required but none was found"
            + (f" (looked beside {forget_paths[0]})" if forget_paths else "")
            + "; pass retain=FILE"
        )
    _check_overlap(forget_rows, retain_rows)
    return DataBundle(
        forget=[r for _, _, r in forget_rows], retain=[r for _, _, r in retain_rows], files=_unique(files)
    )


def _find_plain(directory: Path, stem: str) -> list[Path]:
    """``<dir>/<stem>.<ext>`` for the first supported extension present (jsonl, json, parquet, csv)."""
    found = [
        directory / f"{stem}{ext}" for ext in SUPPORTED_EXTENSIONS if (directory / f"{stem}{ext}").is_file()
    ]
    if len(found) > 1:
        log.info("several %s files in %s; using %s", stem, directory, found[0].name)
    return found[:1]


def _find_shards(directory: Path, stem: str, split: str) -> list[Path]:
    """The organizers' parquet shards ``<stem>_<split>-00000-of-00001.parquet`` (all shards, sorted)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{stem}_{split}-*-of-*.parquet") if p.is_file())


def _locate(data: Path, split: str | None) -> tuple[list[Path], list[Path]]:
    """Forget and retain files in directory ``data`` for ``split`` (e.g. "train"); UserError if none."""
    tried: list[str] = []
    attempts: list[tuple[str, Any]] = []  # (description, finder(stem) -> list[Path])

    def plain(d: Path):
        tried.append(f"{d}/forget.{{jsonl,json,parquet,csv}}")
        return lambda stem: _find_plain(d, stem) if d.is_dir() else []

    def shards(d: Path, s: str):
        tried.append(f"{d}/forget_{s}-*-of-*.parquet")
        return lambda stem: _find_shards(d, stem, s)

    if split is None:
        attempts += [plain(data), shards(data, "train"), shards(data, "validation")]
        attempts += [plain(data / "train"), shards(data / "train", "train")]
    else:
        attempts += [plain(data / split), shards(data, split), shards(data / split, split)]
        if data.name == split:  # e.g. data=".../train", split="train"
            attempts.append(plain(data))
    for finder in attempts:
        forget = finder("forget")
        if forget:
            return forget, finder("retain")
    where = f" for split {split!r}" if split else ""
    raise UserError(f"no forget data found in {data}{where}; looked for: " + "; ".join(tried))


def _read_many(paths: list[Path], split: str) -> list[tuple[Path, int, Record]]:
    return [(p, line, rec) for p in paths for line, rec in parse_rows(p, split)]


def _resolve_paths(data, split, forget, retain) -> tuple[list[Path], list[Path], Path | None]:
    """``(forget files, retain files, combined file)``: what ``data`` gives, replaced by ``forget=`` /
    ``retain=``; the combined file (rows with a ``split`` field) is ``data`` itself when it is a file."""
    forget_paths: list[Path] = []
    retain_paths: list[Path] = []
    combined: Path | None = None
    if data is not None:
        data = Path(data)
        if not data.exists():
            raise UserError(f"data path not found: {data}")
        if data.is_dir():
            forget_paths, retain_paths = _locate(data, split)
        else:
            combined = data
    if forget is not None:
        forget_paths, combined = [Path(forget)], None
        if not forget_paths[0].exists():
            raise UserError(f"forget file not found: {forget_paths[0]}")
    if retain is not None:
        retain_paths = [Path(retain)]
        if not retain_paths[0].exists():
            raise UserError(f"retain file not found: {retain_paths[0]}")
    return forget_paths, retain_paths, combined


def _read_sets(forget_paths: list[Path], retain_paths: list[Path], combined: Path | None):
    """``(forget rows, retain rows, files read)``, each row ``(path, line, Record)``; explicit retain files
    replace the retain rows of a combined file."""
    if combined is not None:
        rows = [(combined, line, rec) for line, rec in parse_rows(combined, None)]
        forget_rows = [r for r in rows if r[2].split == "forget"]
        retain_rows = [r for r in rows if r[2].split == "retain"] if not retain_paths else []
        files = [combined]
    else:
        forget_rows = _read_many(forget_paths, "forget")
        retain_rows = []
        files = list(forget_paths)
    if retain_paths:
        retain_rows = _read_many(retain_paths, "retain")
        files += retain_paths
    return forget_rows, retain_rows, files


def _unique(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _check_overlap(
    forget_rows: list[tuple[Path, int, Record]], retain_rows: list[tuple[Path, int, Record]]
) -> None:
    retain_at: dict[str, tuple[Path, int]] = {}
    for path, line, rec in retain_rows:
        retain_at.setdefault(rec.id, (path, line))
    shared: list[tuple[Path, int, str]] = []
    seen: set[str] = set()
    for path, line, rec in forget_rows:
        if rec.id in retain_at and rec.id not in seen:
            seen.add(rec.id)
            shared.append((path, line, rec.id))
    if not shared:
        return
    fpath, fline, first = shared[0]
    rpath, rline = retain_at[first]
    examples = ", ".join(repr(i) for _, _, i in shared[:3])
    raise DataError(
        fpath,
        f"{len(shared)} id(s) are in both the forget set ({fpath}) and the retain set ({rpath}), "
        f"e.g. {examples}; {first!r} is at line {rline} of {rpath}",
        line=fline,
        field="id",
    )
