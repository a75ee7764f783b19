"""The CLI's error boundary: how a failure or a signal ends a subcommand.

- a user error (``UserError``, ``NonFiniteLossError``): one line ``error: ...``, exit 2;
- a failure of the machine or of a file (disk full, permission denied, corrupt safetensors, CUDA
  absent, out of memory): one line from :func:`known_failure`, exit 1;
- SIGINT (Ctrl-C) or SIGTERM: the progress bar is cleared, then one line ``stopped: ...`` saying what
  was kept and how to resume, exit 3 (:func:`interrupted`);
- anything else is a bug: its traceback is kept (as with ``--debug`` for the cases above).
"""

from __future__ import annotations

import signal
import sys

from llm_unlearn.errors import NonFiniteLossError, TrainingInterrupted, UserError

__all__ = [
    "EXIT_USER_ERROR",
    "EXIT_INTERRUPTED",
    "Signalled",
    "one_line",
    "known_failure",
    "interrupted",
    "clear_progress_line",
    "run_guarded",
    "install_sigterm",
]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3


def one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


_OOM_HINT = (
    "lower --batch-size (--grad-accum keeps the global batch), or --training-arg "
    "gradient_checkpointing=true, or a smaller --max-length"
)


def known_failure(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for a failure of the machine or of a file rather than of llm-unlearn:
    disk full, permission denied, corrupt or truncated safetensors, CUDA asked for but absent, out of
    memory. None for anything else (a bug: its traceback is kept)."""
    import errno

    text = one_line(exc)
    low = text.lower()
    name = type(exc).__name__
    if (
        isinstance(exc, MemoryError)
        or name == "OutOfMemoryError"
        or "out of memory" in low
        or "can't allocate memory" in low
        or "cannot allocate memory" in low
    ):
        return f"out of memory ({text[:200]}): {_OOM_HINT}", 1
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "no space left on device" in low:
        return f"disk full: {text[:300]} (free space or use another --output-dir)", 1
    if (
        isinstance(exc, PermissionError)
        or (isinstance(exc, OSError) and exc.errno == errno.EACCES)
        or "permission denied" in low
    ):
        return f"permission denied: {text[:300]}", 1
    if (
        name == "SafetensorError"
        or "deserializing header" in low
        or "safetensors" in low
        and ("invalid" in low or "incomplete" in low or "truncat" in low or "metadata" in low)
    ):
        return (
            f"a safetensors file is corrupt or truncated: {text[:300]} (rewrite it, e.g. rerun what produced it)",
            1,
        )
    if ("cuda" in low or "nvidia" in low) and (
        "not compiled" in low or "no cuda gpus" in low or "driver" in low or "not available" in low
    ):
        return (
            f"CUDA was asked for but is not usable here: {text[:200]} (use --device cpu, or a machine with a GPU)",
            1,
        )
    if isinstance(exc, OSError):
        return f"{text} (--debug shows where)", 1
    return None


class Signalled(TrainingInterrupted):
    """Raised by the CLI's own SIGTERM handler (outside train's finer one): the subcommand was stopped
    wherever it was; :func:`interrupted` says what was kept."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {_signal_name(signum)}")
        self.signum = signum


def _signal_name(signum: int) -> str:
    try:
        return f"signal {signum} ({signal.Signals(signum).name})"
    except ValueError:
        return f"signal {signum}"


def _sigterm_handler(signum, frame):
    raise Signalled(signum)


def install_sigterm():
    """SIGTERM anywhere raises :class:`Signalled` (train installs its own, finer handler while it
    runs). Returns the previous handler (None when not on the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _sigterm_handler)
    except ValueError:  # not the main thread
        return None


def _what_was_kept(args) -> tuple[str, str]:
    """(what a stopped subcommand leaves, what a rerun does) — by subcommand."""
    command = getattr(args, "command", None)
    out = getattr(args, "output_dir", None) or getattr(args, "train.output_dir", None)
    where = f" in {out}" if out else ""
    if getattr(args, "output", None):  # sample: one file (and its .jsonl beside it)
        where = f" to {args.output}"
    if command == "train":
        return f"the chunks completed so far are saved{where}", "resume"
    if command == "evaluate" and getattr(args, "benchmark", "semeval") in (None, "semeval"):
        return f"the evaluation stages finished so far are kept{where} (.stages)", "resume"
    if command == "demo":
        return f"the stages finished so far are kept{where}", "start over"
    return f"no result was written{where} (results are written whole, at the end)", "start over"


def interrupted(args, what: str) -> int:
    """End a subcommand stopped by a signal: clear the progress bar, one ``stopped:`` line, exit 3."""
    kept, rerun = _what_was_kept(args)
    clear_progress_line()
    print(
        f"stopped: interrupted by {what}; {kept}; every output is written atomically, nothing is "
        f"half-written. Run the same command again to {rerun}.",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_INTERRUPTED


def clear_progress_line(stream=None) -> None:
    """Remove any tqdm bar still shown so that the next line starts on a line of its own: active bars
    are closed without leaving their line (else they redraw when collected, after our message); on a
    terminal the current line (a bar, the echoed ^C) is erased; elsewhere a bar's unterminated line is
    ended."""
    stream = stream or sys.stderr
    shown = False
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        shown = shown or not getattr(bar, "disable", True)
        try:
            bar.leave = False
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the message
            pass
    try:
        if stream.isatty():
            stream.write("\r\033[K")
        elif shown:
            stream.write("\n")
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stream: the message will fail too, quietly
        pass


def run_guarded(func, args, *, debug: bool) -> int:
    """Run a subcommand's function behind the error boundary; returns the exit code."""
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C (SIGINT), or train's second signal ("stop now")
        return interrupted(args, "Ctrl-C (SIGINT)")
    except Signalled as exc:
        return interrupted(args, _signal_name(exc.signum))
    except TrainingInterrupted as exc:  # train's own handler: its message says what was saved
        clear_progress_line()
        print(f"stopped: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UserError, NonFiniteLossError) as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # the machine's side (disk full, permission denied, OOM, ...): one line too
        known = known_failure(exc)
        if debug or known is None:
            raise
        print(f"error: {known[0]}", file=sys.stderr)
        return known[1]
