"""The output-directory policy of every subcommand: the marker file, input/output checks, DirectoryLock.

Writes go through ``io_utils`` by module attribute (``io_utils.atomic_dir``), so that a test patching
``llm_unlearn.io_utils`` reaches them here as well.
"""

from __future__ import annotations

import json
import os
import shutil
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


def _written(path: str | os.PathLike) -> dict[str, str]:
    """name -> subcommand that wrote it, from the marker's manifest (`written`)."""
    written = (read_marker(path) or {}).get("written")
    if isinstance(written, dict):
        return {k: v for k, v in written.items() if isinstance(k, str) and isinstance(v, str)}
    return {}


def manifest(path: str | os.PathLike, kind: str | None = None) -> set[str]:
    """The top-level names inside `path` that this tool wrote (the marker's manifest); only those a
    subcommand `kind` wrote when given; empty for a directory without marker."""
    return {n for n, k in _written(path).items() if kind is None or k == kind}


def write_marker(
    path: str | os.PathLike, kind: str, written: Iterable[str] = (), replace: bool = False
) -> None:
    """Write the marker of `path`: the subcommand `kind` and the manifest of the names the tool wrote
    there (name -> the subcommand that wrote it). The names of an earlier marker are kept (they are
    still ours) unless `replace`; `written` are recorded as written by `kind`."""
    names = {} if replace else _written(path)
    names.update({n: kind for n in written if n not in (MARKER, LOCK)})
    _write_manifest(path, kind, names)


def _write_manifest(path: str | os.PathLike, kind: str, written: dict[str, str]) -> None:
    from llm_unlearn import __version__

    io_utils.atomic_write_json(
        Path(path) / MARKER,
        {"kind": kind, "llm_unlearn": __version__, "written": dict(sorted(written.items()))},
        indent=None,
    )


def _entries(out: Path) -> list[str]:
    """The names in `out` that are not the tool's bookkeeping (marker, lock, its temporary names)."""
    return sorted(p.name for p in out.iterdir() if p.name not in (MARKER, LOCK) and not _is_tmp(p.name))


def prepare_output_dir(
    path: str | os.PathLike,
    kind: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    own_names: Iterable[str] = (),
    create: bool = True,
) -> Path:
    """The one output-directory policy of every subcommand.

    - `path` may not be an input, lie inside one, or contain one (`inputs`: files or directories,
      symlinks resolved);
    - an existing `path` must be empty, or hold this tool's output of the same `kind` (its marker file
      `.llm-unlearn.json` says so). Anything else is refused with one line unless `overwrite`. No name
      is ever taken as proof of ownership: only the marker's manifest (`written`) is;
    - `own_names`: the top-level names this run will write. One that exists but is not in the manifest
      is a user's file: refused, with or without `overwrite` (`--overwrite` replaces the tool's earlier
      outputs, never a user's file);
    - `create`: make the directory and write the marker with `own_names` added to its manifest (False:
      check only, write nothing).
    Returns the path. The tool's own temporary names (`.llm-unlearn-tmp.*`) are ignored by the check."""
    from llm_unlearn.errors import UserError

    out = Path(path)
    own = [n for n in own_names]
    check_not_input(out, inputs, "output directory")
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory {out} exists and is not a directory")
    if out.is_dir():
        marker = read_marker(out)
        entries = _entries(out)
        if marker is not None and marker.get("kind") != kind and not overwrite:
            raise UserError(
                f"{out} holds the output of `llm-unlearn {marker.get('kind')}`, not of `{kind}`; "
                "use another --output-dir (or --overwrite to write into it anyway; other files are kept)"
            )
        if marker is None and entries and not overwrite:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(
                f"{out} is not empty and was not written by `llm-unlearn {kind}` (it holds {shown}); "
                "use an empty or new --output-dir (or --overwrite to write into it; other files are kept)"
            )
        check_clashes(out, own)
    if create:
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, kind, own)
    return out


def check_clashes(out: Path, names: Iterable[str]) -> None:
    """Refuse when one of `names` exists in `out` (a file, directory or symlink) but is not in its
    manifest: the user's own file, never replaced."""
    from llm_unlearn.errors import UserError

    marker = read_marker(out)
    if marker is not None and "written" not in marker:
        return  # a marker of a version before the manifest: its directory held only the tool's outputs
    ours = manifest(out)
    clash = [n for n in names if n not in ours and ((out / n).exists() or (out / n).is_symlink())]
    if clash:
        raise UserError(
            f"{out / clash[0]} exists and was not written by llm-unlearn; it is never replaced (move it, "
            "or use another --output-dir)"
        )


def _is_tmp(name: str) -> bool:
    return io_utils.temp_parts(name) is not None


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
    """Remove the temporary files and directories that killed writes of this tool left in `directory`
    (`.llm-unlearn-tmp.<pid>.*` and `.llm-unlearn-old.<pid>.*` of another process; a previous version
    whose path is missing is put back first). No other name is touched: a user's `.notes.tmp` stays.
    Call only while holding the directory's lock (nobody else writes there then)."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in sorted(d.iterdir()):
        parts = io_utils.temp_parts(p.name)
        if parts is None or parts[1] == os.getpid():
            continue
        kind, _, name = parts
        if kind == "old" and not (d / name).exists() and not (d / name).is_symlink():
            io_utils.recover_dir(d / name)
            if not p.exists():
                continue
        io_utils.remove_path(p)
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
    """Write an output directory with `fill(tmp)`.

    With `marker_kind` (a subcommand's output directory, e.g. finetune's or merge's): `fill` writes
    into a temporary directory inside `out_dir`; then every top-level entry it made is moved into
    `out_dir` (each atomically), the manifest names them, and the entries of this tool's earlier
    output of the same kind that this write did not make again are removed. Nothing else in `out_dir`
    is touched; an entry that exists but is not in the manifest (a user's file) is refused before
    anything moves. A new `out_dir` is written whole beside it and renamed into place (a kill leaves
    no directory; its temporary sibling is removed by the next write). Without `marker_kind`: `out_dir` is wholly the caller's (a path in its own
    manifest, e.g. train's `DIR/model`) and is replaced as a whole (`io_utils.atomic_dir`).
    `replace_dir` is accepted for compatibility and ignored."""
    del replace_dir
    out_dir = Path(out_dir)
    if marker_kind is None:
        return io_utils.atomic_dir(out_dir, fill)
    remove_stale_siblings(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():  # new: made whole beside it, then renamed

        def fill_marked(tmp: Path) -> None:
            fill(tmp)
            write_marker(tmp, marker_kind, [p.name for p in tmp.iterdir()])

        return io_utils.atomic_dir(out_dir, fill_marked)
    tmp = io_utils.make_temp_dir(out_dir / "fill")
    try:
        fill(tmp)
        made = sorted(p.name for p in tmp.iterdir() if p.name not in (MARKER, LOCK))
        check_clashes(out_dir, made)
        earlier = manifest(out_dir, marker_kind) - set(made)
        write_marker(out_dir, marker_kind, made)  # named before they move: a kill leaves them listed
        for name in made:
            _move_into(tmp / name, out_dir / name)
        for name in sorted(earlier):
            io_utils.remove_path(out_dir / name)
        _write_manifest(
            out_dir, marker_kind, {n: k for n, k in _written(out_dir).items() if n not in earlier}
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def remove_stale_siblings(out_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed write of a whole new `out_dir` left beside it: the tool's temporary
    directories for that name (`.llm-unlearn-tmp.<pid>.*.<name>` of another process) in its parent.
    Call while holding `out_dir`'s lock."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for p in sorted(out_dir.parent.iterdir()):
        parts = io_utils.temp_parts(p.name)
        if parts and parts[0] == "tmp" and parts[2] == out_dir.name and parts[1] != os.getpid():
            io_utils.remove_path(p)
            removed.append(p)
    return removed


def _move_into(src: Path, dest: Path) -> None:
    """Move `src` to `dest` (a path of ours), atomically for a file; a directory replaces the earlier
    one by two renames (the earlier one moved aside first, removed after)."""
    if src.is_dir() and (dest.exists() or dest.is_symlink()):
        old = io_utils.old_path(dest)
        os.replace(dest, old)
        os.replace(src, dest)
        io_utils.remove_path(old)
    else:
        if dest.is_dir() and not dest.is_symlink():
            io_utils.remove_path(dest)
        os.replace(src, dest)
