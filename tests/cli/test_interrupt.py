"""Ctrl-C and SIGTERM end every subcommand with exit 3 and one `stopped:` line on a line of its own
(any progress bar cleared first) saying what was kept and how to resume."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_unlearn.cli import main
from llm_unlearn.cli.errors import Signalled, clear_progress_line
from llm_unlearn.errors import TrainingInterrupted

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.split("\n") if line.strip()]


def _raising(exc):
    def func(args):
        raise exc

    return func


@pytest.mark.parametrize(
    "module, attr, argv, kept",
    [
        ("demo", "cmd_demo", ["demo", "--output-dir", "d"], "the stages finished so far are kept in d"),
        (
            "merge",
            "cmd_merge",
            ["merge", "--model", "m", "--adapter", "a", "--output-dir", "o"],
            "no result was written in o",
        ),
        ("train", "cmd_train", ["train", "--output-dir", "t"], "the chunks completed so far are saved in t"),
        ("options", "cmd_options", ["options"], "no result was written"),
        ("methods", "cmd_methods", ["methods"], "no result was written"),
    ],
)
def test_ctrl_c_in_any_subcommand_is_exit_3_and_one_line(monkeypatch, capsys, module, attr, argv, kept):
    import importlib

    monkeypatch.setattr(
        importlib.import_module(f"llm_unlearn.cli.{module}"), attr, _raising(KeyboardInterrupt)
    )
    assert main(argv) == 3
    (line,) = _lines(capsys)
    assert line.startswith("stopped: interrupted by Ctrl-C (SIGINT); ") and kept in line, line
    assert "nothing is half-written" in line and "Run the same command again to" in line


def test_sigterm_and_train_messages(monkeypatch, capsys):
    import llm_unlearn.cli.demo as demo

    monkeypatch.setattr(demo, "cmd_demo", _raising(Signalled(signal.SIGTERM)))
    assert main(["demo"]) == 3
    (line,) = _lines(capsys)
    assert line.startswith(
        "stopped: interrupted by signal 15 (SIGTERM); the stages finished so far are kept in runs/demo"
    )
    # train's own handler says what it saved: its message is kept as it is
    monkeypatch.setattr(demo, "cmd_demo", _raising(TrainingInterrupted("interrupted in chunk 2/5; saved")))
    assert main(["demo"]) == 3
    assert _lines(capsys) == ["stopped: interrupted in chunk 2/5; saved"]


def test_the_message_is_not_on_a_progress_bar_line(monkeypatch, capsys):
    from tqdm import tqdm

    import llm_unlearn.cli.options as options

    def with_bar(args):
        bar = tqdm(total=10, file=sys.stderr, mininterval=0, leave=True)
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(options, "cmd_options", with_bar)
    assert main(["options"]) == 3
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("stopped: interrupted by Ctrl-C"), repr(err)
    assert not tqdm._instances  # closed: it does not redraw after the message


def test_clear_progress_line_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    clear_progress_line(s)
    assert s.getvalue() == "\r\033[K"
    plain = io.StringIO()
    clear_progress_line(plain)  # no bar, no terminal: nothing to clear
    assert plain.getvalue() == ""


SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    # as a shell starts a command: both signals delivered, Ctrl-C Python's KeyboardInterrupt. A child
    # inherits its parent's blocked and ignored signals; this child missing its SIGINT was seen twice in
    # the full suite (never alone), and an inherited mask is the one way we know for that to happen.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from tqdm import tqdm
    import llm_unlearn.cli.options as options

    def slow(args):
        bar = tqdm(total=100, file=sys.stderr, mininterval=0)
        bar.update(1)
        print("ready", flush=True)
        time.sleep(60)

    options.cmd_options = slow
    from llm_unlearn.cli import main
    sys.exit(main(["options"]))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_a_running_command(sig):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    parent = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    assert proc.returncode == 3, (err, "the test process's SIGINT handler and blocked signals:", parent)
    name = "Ctrl-C (SIGINT)" if sig == signal.SIGINT else "signal 15 (SIGTERM)"
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"stopped: interrupted by {name}; no result was written"), repr(err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, kept, rerun",
    [
        (
            {"command": "evaluate", "output_dir": "e", "benchmark": "semeval"},
            "stages finished so far are kept in e",
            "resume",
        ),
        (
            {"command": "evaluate", "output_dir": "e", "benchmark": "tofu"},
            "no result was written in e",
            "start over",
        ),
        ({"command": "mmlu", "output_dir": "m"}, "no result was written in m", "start over"),
        ({"command": "sample", "output": "s.md"}, "no result was written to s.md", "start over"),
        ({"command": "finetune", "output_dir": "f"}, "no result was written in f", "start over"),
    ],
)
def test_what_each_subcommand_keeps(capsys, args, kept, rerun):
    import argparse

    from llm_unlearn.cli.errors import run_guarded

    assert run_guarded(_raising(KeyboardInterrupt), argparse.Namespace(**args), debug=True) == 3
    (line,) = _lines(capsys)
    assert kept in line and line.endswith(f"Run the same command again to {rerun}."), line
