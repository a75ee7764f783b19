"""Errors a user can cause. The CLI prints them as one line and exits non-zero (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, flag, model path), not a bug in llm-unlearn."""


class DataError(UserError):
    """A data file is malformed. The message names the file, the line (1-based) and the field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field


class ConfigError(UserError):
    """An option has a value that cannot work (e.g. chunk_size <= 0, alpha <= 0)."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf. Raised with the step, chunk and term named."""


class TrainingInterrupted(BaseException):
    """SIGTERM / Ctrl-C: the work stops at a safe point (in training: after the current step, the last
    complete chunk saved); the CLI exits 3 with the message. A BaseException, like KeyboardInterrupt:
    it is raised from a signal handler, and no `except Exception` may swallow it."""
