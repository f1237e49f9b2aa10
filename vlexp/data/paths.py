"""Config values that must name an existing file or folder, checked with errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def need_path(
    value: Any,
    key: str,
    what: str,
    *,
    folder: bool = False,
    error: type[Exception] = FileNotFoundError,
    unset_error: type[Exception] = ValueError,
) -> Path:
    """``value`` as a :class:`Path` to an existing file (``folder=True``: folder).

    Unset (None or empty) raises ``unset_error``, a missing path ``error``; both messages
    name the config ``key`` and say what to give.
    """
    if value is None or str(value) == "":
        raise unset_error(f"{key} is not set: give the path of the {what} (e.g. {key}=/data/...)")
    p = Path(str(value)).expanduser()
    if not (p.is_dir() if folder else p.is_file()):
        kind = "folder" if folder else "file"
        raise error(f"{key}={value}: the {what} does not exist (no such {kind})")
    return p
