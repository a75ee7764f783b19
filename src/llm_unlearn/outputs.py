"""The output-directory policy of every subcommand: the marker file, input/output checks, DirectoryLock.

Writes go through ``io_utils`` by module attribute (``io_utils.atomic_dir``), so that a test patching
``llm_unlearn.io_utils`` reaches them here as well.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from llm_unlearn import io_utils

MARKER = ".llm-unlearn.json"  # names the kind of output a directory holds (train, evaluate, merge, ...)
LOCK = ".llm-unlearn.lock"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], what: str) -> None:
    """An output path is never an input, inside one, or holding one (inputs are never written or deleted).
    Inputs that do not exist on disk (a hub id) are ignored."""
    from llm_unlearn.errors import UserError

    out = _resolved(output)
    for inp in inputs:
        if inp is None or inp == "" or not os.path.exists(os.path.expanduser(os.fspath(inp))):
            continue
        src = _resolved(inp)
        real_out, real_src = Path(os.path.realpath(out)), Path(os.path.realpath(src))
        if _inside(out, src) or _inside(real_out, real_src):
            raise UserError(
                f"{what} {output} is inside the input {inp}; choose an output path outside your inputs"
            )
        if _inside(src, out) or _inside(real_src, real_out):
            raise UserError(
                f"{what} {output} contains the input {inp}; choose an output path that holds no input"
            )


def read_marker(path: str | os.PathLike) -> dict | None:
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(path: str | os.PathLike, kind: str) -> None:
    from llm_unlearn import __version__

    io_utils.atomic_write_json(Path(path) / MARKER, {"kind": kind, "llm_unlearn": __version__}, indent=None)


def prepare_output_dir(
    path: str | os.PathLike,
    kind: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    own_names: Iterable[str] = (),
    create: bool = True,
) -> Path:
    """The one output-directory policy of every subcommand.

    - `path` may not be an input, lie inside one, or contain one (`inputs`: files or directories);
    - an existing `path` must be empty, or hold this tool's output of the same `kind` (its marker file
      `.llm-unlearn.json` says so; a directory without marker whose entries are all in `own_names`
      counts as well: outputs of versions before the marker). Anything else is refused with one line
      unless `overwrite`; then the caller replaces its own outputs only, never the other files;
    - `create`: make the directory and write the marker (False: check only, write nothing).
    Returns the path. Temporary files of killed writes (`.*.tmp`) are ignored by the check."""
    from llm_unlearn.errors import UserError

    out = Path(path)
    check_not_input(out, inputs, "output directory")
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory {out} exists and is not a directory")
    if out.is_dir():
        marker = read_marker(out)
        entries = [p.name for p in out.iterdir() if p.name not in (MARKER, LOCK) and not _is_tmp(p.name)]
        if marker is not None and marker.get("kind") != kind and not overwrite:
            raise UserError(
                f"{out} holds the output of `llm-unlearn {marker.get('kind')}`, not of `{kind}`; "
                "use another --output-dir (or --overwrite to write into it anyway)"
            )
        if marker is None and entries and not overwrite:
            own = set(own_names)
            if not own or not set(entries) <= own:
                shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
                raise UserError(
                    f"{out} is not empty and was not written by `llm-unlearn {kind}` (it holds {shown}); "
                    "use an empty or new --output-dir (or --overwrite to write into it; other files "
                    "are kept)"
                )
    if create:
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) is None or read_marker(out).get("kind") != kind:
            write_marker(out, kind)
    return out


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old"))


def check_output_file(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    signature: str | None = None,
) -> Path:
    """The policy for a single output file (e.g. `sample --output`): not an input, not inside an input
    directory; an existing file is replaced only when it starts with `signature` (this tool wrote it)
    or with `overwrite`."""
    from llm_unlearn.errors import UserError

    out = Path(path)
    check_not_input(out, inputs, "output file")
    if out.is_dir():
        raise UserError(f"output file {out} is a directory")
    if out.exists() and not overwrite:
        try:
            head = out.read_bytes()[: len(signature.encode())] if signature else b""
        except OSError:
            head = b""
        if not signature or head != signature.encode():
            raise UserError(
                f"{out} exists and was not written by llm-unlearn; choose another path "
                "(or --overwrite to replace it)"
            )
    return out


def remove_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and directories (`.<name>.*.tmp`, `.<name>.old` whose `<name>`
    exists) that killed writes left in `directory`. Call only while holding the directory's lock."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if not p.name.startswith("."):
            continue
        stale = p.name.endswith(".tmp") or (p.name.endswith(".old") and (d / p.name[1:-4]).exists())
        if stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    pass
            removed.append(p)
    return removed


class DirectoryLock:
    """An exclusive lock on an output directory: `DIR/.llm-unlearn.lock`, held with `fcntl.flock`.

    The kernel drops a flock when its process dies, so a lock left by a kill -9 is free again at
    once (stale-lock recovery needs no guessing); the file's content (pid, host, start time, command)
    only serves the message another process prints. Released by `release()` / the context manager,
    which remove the file."""

    def __init__(self, directory: str | os.PathLike, sibling: bool = False):
        d = Path(directory)
        # sibling: `.<name>.llm-unlearn.lock` beside the directory, for outputs replaced as a whole
        self.directory = d
        self.path = d.with_name(f".{d.name}{LOCK}") if sibling else d / LOCK
        self.fd: int | None = None

    def acquire(self) -> DirectoryLock:
        import fcntl
        import socket
        import sys
        import time

        from llm_unlearn.errors import UserError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise UserError(
                    f"{self.directory} is in use by {self._holder()}; wait for it to finish or stop "
                    "it, or use another --output-dir"
                ) from None
            try:  # the file may have been removed (by its releasing owner) between open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv[:3]),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self.fd = fd
            return self
        raise UserError(f"could not lock {self.directory}")  # pragma: no cover

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return (
                f"another llm-unlearn process (pid {info.get('pid')} on host {info.get('host')}, since "
                f"{info.get('started')}: {info.get('command')})"
            )
        except (OSError, ValueError):
            return "another llm-unlearn process"

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        try:
            os.unlink(self.path)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def fill_output_dir(
    out_dir: str | os.PathLike,
    fill: Callable[[Path], None],
    marker_kind: str | None = None,
    replace_dir: bool = True,
) -> Path:
    """Write a whole output directory with `fill(tmp)`. `replace_dir`: `out_dir` is replaced as a whole
    (atomically, with the marker of `marker_kind`); False: the files are moved into it one by one (each
    atomically), no other file in it is touched, and no marker is written (a directory that also holds
    other files is never marked as ours)."""
    out_dir = Path(out_dir)

    def fill_marked(tmp: Path) -> None:
        fill(tmp)
        if marker_kind:
            write_marker(tmp, marker_kind)

    if replace_dir or not out_dir.is_dir():
        return io_utils.atomic_dir(out_dir, fill_marked)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        fill(tmp)
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                dest = out_dir / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
