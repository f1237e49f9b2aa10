"""Atomic file writes: write next to the target under a temporary name, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one,
never a half-written file. Temporary names carry the process id. A process that was
killed mid-write leaves its temporary behind; the next write of the same target removes
it, which is safe because the pass has one writer per target at a time (units are
disjoint between jobs, and the merge step holds a lock).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def tmp_path(path: Path) -> Path:
    """The temporary name :func:`write_atomic` uses for ``path`` in this process."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` left by killed processes (``<name>.tmp<pid>``)."""
    for stale in path.parent.glob(f"{glob.escape(path.name)}.tmp*"):
        if stale.name[len(path.name) + 4 :].isdigit():
            stale.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to produce the file at a temporary path, then rename it to
    ``path`` (creating parent folders). The temporary is removed if ``write`` fails;
    temporaries of ``path`` left by killed processes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block; where
    the file system does not support locks the block runs unlocked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            yield
        finally:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                pass
