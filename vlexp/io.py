"""File helpers: atomic writes, a file lock, and reading user files without running code.

Atomic writes (:func:`write_atomic` and friends) write next to the target under a
temporary name carrying the process id, then rename, so a reader (or a resumed run) sees
either the old file or the complete new one. A process killed mid-write leaves its
temporary behind; the next write of the same target removes it. :func:`file_lock` holds
an exclusive ``flock`` for a block.

A ``.ckpt``/``.pt``/``.pth`` file is a pickle, and unpickling an arbitrary pickle can
execute any code its author chose. Every vlexp path that reads such a file (a training
checkpoint, a teacher, weights for a tower) goes through :func:`load_torch_file`, which
reads ``.safetensors`` files with safetensors and everything else with
``torch.load(weights_only=True)``: only tensors and plain values (dicts, lists, tuples,
strings, numbers, None) are rebuilt, and a file that needs anything else is refused with
:class:`UnsafeFileError` before any of its code runs.

vlexp's own files satisfy this by construction: checkpoints hold the model and
optimizer state, loop counters and the datamodule's plain-dict resume state, and the
synthetic teacher stores its settings as plain values.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)
_OPERAND_RE = re.compile(r"Unsupported operand (\S+)")


class UnsafeFileError(ValueError):
    """A file that only loads by running code from it (a pickled object); refused."""


class UnreadableFileError(ValueError):
    """A file that is not a complete torch or safetensors file (truncated, corrupt)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _refused_detail(err: BaseException) -> str:
    """What torch's safe unpickler stopped at, e.g. ``posix.system`` or ``__main__.Payload``."""
    text = str(err)
    found = _GLOBAL_RE.search(text)
    if found:
        return f"it asks for the Python object {found.group(1)}"
    found = _OPERAND_RE.search(text)
    if found:
        return f"it uses pickle opcode {found.group(1)}, which the safe loader does not accept"
    return "it holds objects other than tensors and plain values"


def load_torch_file(
    path: str | os.PathLike, what: str = "file", *, map_location: Any = "cpu", mmap: bool = False
) -> Any:
    """Load ``path`` (a torch file or ``.safetensors``) without executing code from it.

    ``what`` names the file in error messages ("checkpoint", "teacher weights", ...);
    ``mmap`` memory-maps the tensors of a zip-format torch file instead of reading them.
    Raises :class:`FileNotFoundError` when missing, :class:`UnsafeFileError` when the
    file holds pickled objects other than tensors and plain values, and
    :class:`UnreadableFileError` when it is truncated or not a torch file; each message
    is one line naming the file and saying what to do.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist (check the path)")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, what)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and not _starts_like_a_pickle(path):
        raise UnreadableFileError(
            f"{what} '{path}' is not a torch file (neither torch's zip format nor a binary "
            "pickle); give a file written by torch.save or a .safetensors file."
        )
    mmap = mmap and is_zip  # only torch's zip format can be memory-mapped
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        detail = _refused_detail(err)
        raise UnsafeFileError(
            f"refusing to load {what} '{path}': {detail}, and loading it could run code "
            "from the file. vlexp reads only tensors and plain values: re-save it from a "
            "session you trust with torch.save(model.state_dict(), path) (or as "
            ".safetensors), or use a file written by vlexp."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UnreadableFileError(
            f"{what} '{path}' is not a readable torch file ({_first_line(err)}); it may be "
            "truncated or corrupt: use another copy, or write it again."
        ) from None


def _starts_like_a_pickle(path: Path) -> bool:
    """True if the file starts with a binary pickle's PROTO opcode (torch's legacy format)."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UnreadableFileError(
            f"{what} '{path}' is not a readable safetensors file ({_first_line(err)}); it "
            "may be truncated or corrupt: use another copy, or write it again."
        ) from None


# ------------------------------------------------------------------ atomic writes


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
