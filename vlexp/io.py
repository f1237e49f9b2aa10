"""Reading user-supplied files without running code from them.

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

import os
import pickle
import re
import warnings
import zipfile
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


__all__ = ["UnreadableFileError", "UnsafeFileError", "load_torch_file"]
