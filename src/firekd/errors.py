"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class FirekdError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class DataError(FirekdError):
    """Bad CSV, labels, image files or splits."""


class ConfigError(FirekdError):
    """Bad flag values or combinations."""


class ModelError(FirekdError):
    """Unknown model names, unavailable weights, checkpoints of another architecture."""


class TrainingError(FirekdError):
    """Training went wrong in a way the user must act on (e.g. a NaN loss)."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters (the class name when
    the message is empty): third-party errors often carry pages of detail."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def one_line(message: str) -> str:
    """The user-facing line of an error message.

    DataLoader workers re-raise exceptions with the worker traceback folded into the message;
    the last line then holds the original `Class: message`.
    """
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    if lines[0].startswith("Caught ") and len(lines) > 1:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(line.strip() for line in lines)
