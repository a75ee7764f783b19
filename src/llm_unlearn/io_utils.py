"""Atomic writes (temporary name in the same directory, then rename), file hashing, the stage cache.

A killed process therefore never leaves a file (or directory) that looks complete but is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Every temporary path the tool makes is named `.llm-unlearn-tmp.<pid>.<random>.<name>` (and the previous
# version of a directory being replaced `.llm-unlearn-old.<pid>.<random>.<name>`): a name no user file
# has, so that cleaning up after a killed run never touches a user's `.notes.tmp`.
TMP_PREFIX = ".llm-unlearn-tmp."
OLD_PREFIX = ".llm-unlearn-old."
_TOOL_TEMP = re.compile(r"^\.llm-unlearn-(tmp|old)\.(\d+)\.([A-Za-z0-9_]+)\.(.+)$")


def temp_parts(name: str) -> tuple[str, int, str] | None:
    """("tmp" | "old", pid, the name it stands for) of a temporary name this tool made; None for any
    other name."""
    m = _TOOL_TEMP.match(name)
    return (m.group(1), int(m.group(2)), m.group(4)) if m else None


def _mkstemp(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}.", suffix=f".{path.name}", dir=path.parent)


def make_temp_dir(path: Path) -> Path:
    return Path(
        tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}.", suffix=f".{path.name}", dir=path.parent)
    )


def old_path(path: Path) -> Path:
    """Where `atomic_dir` moves the previous version of `path` during the swap."""
    return path.with_name(f"{OLD_PREFIX}{os.getpid()}.{secrets.token_hex(4)}.{path.name}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode(0o666))  # mkstemp made it private (0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _default_mode(base: int) -> int:
    """`base` less the process umask: the mode open() / mkdir() would have given."""
    mask = os.umask(0o022)
    os.umask(mask)
    return base & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False) + "\n"
    )


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    text = "".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text)


def atomic_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create directory `path` atomically: `fill(tmpdir)` writes into a temporary sibling, which is
    then renamed over `path`. An existing `path` is replaced only after `fill` succeeded. Use it only
    for a directory that is wholly this tool's (a path named in its output manifest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path)
    old = old_path(path)
    try:
        fill(tmp)
        os.chmod(tmp, _default_mode(0o777))  # mkdtemp made it private (0700)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_dir(path)  # a failure between the two renames: put the previous version back
        raise
    remove_path(old)
    return path


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (not its target) or a directory tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _temps_of(path: Path, kind: str) -> list[Path]:
    if not path.parent.is_dir():
        return []
    out = []
    for p in path.parent.iterdir():
        parts = temp_parts(p.name)
        if parts and parts[0] == kind and parts[2] == path.name:
            out.append(p)
    return sorted(out, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)


def recover_dir(path: str | os.PathLike, clean: bool = False) -> Path:
    """Finish what an interrupted `atomic_dir` left: when `path` is missing but its previous version
    (`.llm-unlearn-old.*.<name>`) is there (killed between the two renames), rename it back. Several
    processes may call this at once. `clean` also removes the temporary directories of writes of
    `path` that were killed (only when nothing is writing `path`), and leftover previous versions."""
    path = Path(path)
    olds = [p for p in _temps_of(path, "old") if p.is_dir()]
    if not path.exists() and olds:
        try:
            os.replace(olds[-1], path)
        except FileNotFoundError:  # another process did it
            pass
    if clean:
        for tmp in _temps_of(path, "tmp") + _temps_of(path, "old"):
            remove_path(tmp)
    return path


def path_fingerprint(path: str | os.PathLike | None) -> Any:
    """What identifies the contents of a file or directory cheaply: (relative name, size, mtime) of
    every file under it, hidden files excepted; the string itself for a path that does not exist
    (e.g. a hub id); None for None. Changing, adding or removing a file changes it."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return str(path)
    files = (
        [p]
        if p.is_file()
        else sorted(
            f
            for f in p.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
    )
    return [
        [str(f.relative_to(p)) if f != p else p.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files
    ]


class StageCache:
    """Results of the finished stages of a long job, reused when their inputs are unchanged.

    `DIR/<stage>.json` holds {"key": sha256 of the inputs, "value": the stage's result}; it is
    written atomically once the stage is done. `inputs` are what every stage depends on (model, data
    hashes); `get` / `put` add what one stage depends on (its options). A stage whose key differs,
    or whose file is missing or unreadable, is computed again.
    """

    def __init__(self, directory: str | os.PathLike, inputs: Any):
        self.directory = Path(directory)
        self.inputs = inputs

    def _key(self, stage: str, stage_inputs: dict[str, Any]) -> str:
        text = json.dumps([self.inputs, stage, stage_inputs], sort_keys=True, default=_json_default)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, stage: str, **stage_inputs: Any) -> Any | None:
        path = self.directory / f"{stage}.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("key") != self._key(stage, stage_inputs):
            return None
        return saved.get("value")

    def put(self, stage: str, value: Any, **stage_inputs: Any) -> Any:
        atomic_write_json(
            self.directory / f"{stage}.json",
            {"key": self._key(stage, stage_inputs), "value": value},
            indent=None,
        )
        return value

    def cached(self, stage: str, compute: Callable[[], Any], **stage_inputs: Any) -> Any:
        """The saved value of `stage` when its inputs are unchanged, else `compute()` (then saved)."""
        value = self.get(stage, **stage_inputs)
        if value is not None:
            return value
        return self.put(stage, compute(), **stage_inputs)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, set):
        return sorted(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
