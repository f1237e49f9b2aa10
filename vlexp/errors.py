"""User errors: a mistake in what the user gave (a config value, a file, the data).

Every such error derives from :class:`UserError` and carries a message that names the
key or file and says what to do. Commands end on one with that message as one line on
stderr and exit code 2 (:func:`exiting_on_user_error`), never a traceback: a traceback
is for vlexp's own bugs. This module imports nothing heavy, so the command layer can
catch these errors before torch is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

# a DataLoader worker re-raises its error with the worker's traceback in the message
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


class UserError(Exception):
    """Something the user gave is wrong; the message (one line) says what and how to fix it."""


class RefusedFileError(UserError, ValueError):
    """A file the user named that vlexp will not read; the message names it."""


class MissingFileError(RefusedFileError, FileNotFoundError):
    """A file (or folder) the user named does not exist."""


class UnsafeFileError(RefusedFileError):
    """A file that only loads by running code from it (a pickle that is not plain tensors)."""


class UnreadableFileError(RefusedFileError):
    """A file that is not a complete torch or safetensors file (truncated, corrupt)."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line; for an error re-raised from a DataLoader worker,
    the worker's own message without the traceback around it."""
    text = str(exc)
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = f"{type(exc).__name__}: "
        text = last.split(name, 1)[1] if name in last else last
    return " ".join(text.split()) or type(exc).__name__


def exit_on_user_error(exc: BaseException) -> NoReturn:
    """End a command on a user's error: the message as one line on stderr, exit 2."""
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextmanager
def exiting_on_user_error() -> Iterator[None]:
    """Run a command's body; a :class:`UserError` ends it with :func:`exit_on_user_error`."""
    try:
        yield
    except UserError as exc:
        exit_on_user_error(exc)
