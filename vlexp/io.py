"""File helpers: atomic writes, a file lock, and reading user files without running code.

Atomic writes (:func:`write_atomic` and friends) write next to the target under a
temporary name carrying the process id, then rename, so a reader (or a resumed run) sees
either the old file or the complete new one. A process killed mid-write leaves its
temporary behind; the next write of the same target removes it. :func:`file_lock` holds
an exclusive ``flock`` for a block.

A ``.ckpt``/``.pt``/``.pth`` file is a pickle, and unpickling an arbitrary pickle can
execute any code its author chose. Every vlexp path that reads such a file (a training
checkpoint, a teacher, weights for a tower, a Hugging Face model folder's weights) goes
through :func:`load_torch_file`, which reads ``.safetensors`` files with safetensors and
everything else with ``torch.load(weights_only=True)``: only tensors and plain values
(dicts, lists, tuples, strings, numbers, None) are rebuilt. A pickle that needs anything
else (or one named ``.safetensors``) is refused as unsafe (:class:`UnsafeFileError`)
before any of its code runs; a truncated file is :class:`UnreadableFileError`.

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
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vlexp.errors import (
    MissingFileError,
    RefusedFileError,
    UnreadableFileError,
    UnsafeFileError,
)

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)
_OPERAND_RE = re.compile(r"Unsupported operand (\S+)")
# opcodes through which a pickle names a Python object to import or call
_OBJECT_OPCODES = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
)
_TRUNCATED = ("truncated", "ran out of input")


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


def _unsafe(path: Path, what: str, detail: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"refusing to load {what} '{path}': it is unsafe, a pickle that is not plain tensors "
        f"({detail}), and loading it could run code from the file. vlexp reads only tensors "
        "and plain values: re-save it from a session you trust with "
        "torch.save(model.state_dict(), path) (or as .safetensors), or use a file written by vlexp."
    )


def _damaged(path: Path, what: str, why: str) -> UnreadableFileError:
    return UnreadableFileError(
        f"{what} '{path}' is not a readable torch file ({why}); it may be truncated or "
        "corrupt: use another copy, or write it again."
    )


def load_torch_file(
    path: str | os.PathLike, what: str = "file", *, map_location: Any = "cpu", mmap: bool = False
) -> Any:
    """Load ``path`` (a torch file or ``.safetensors``) without executing code from it.

    ``what`` names the file in error messages ("checkpoint", "teacher weights", ...);
    ``mmap`` memory-maps the tensors of a zip-format torch file instead of reading them.
    Torch's zip format and its legacy format (a binary pickle) holding only tensors and
    plain values load. Raises :class:`MissingFileError` when missing,
    :class:`UnsafeFileError` for a pickle that is not plain tensors (a torch file asking
    for other objects, a raw pickle naming objects, a pickle named ``.safetensors``), and
    :class:`UnreadableFileError` when truncated or not a torch file; each message is one
    line naming the file and saying what to do.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{what} '{path}' does not exist (check the path)")
    is_zip = zipfile.is_zipfile(path)
    legacy = not is_zip and _starts_like_a_pickle(path)
    if path.suffix == ".safetensors":
        if is_zip or legacy:
            raise UnsafeFileError(
                f"refusing to load {what} '{path}': it is unsafe, named .safetensors but a "
                "pickle (torch.save's format), and unpickling can run code from the file; "
                "rename it to .pt if it comes from a source you trust, or convert it with "
                "safetensors.torch.save_file."
            )
        return _load_safetensors(path, what)
    if not is_zip and not legacy:
        raise _not_a_torch_file(path, what)
    mmap = mmap and is_zip  # only torch's zip format can be memory-mapped
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if any(word in str(err).lower() for word in _TRUNCATED):
            raise _damaged(path, what, _first_line(err)) from None
        if is_zip or _GLOBAL_RE.search(str(err)):
            raise _unsafe(path, what, _refused_detail(err)) from None
        names = _pickled_objects(path)  # a raw pickle: which objects, read statically
        if names:
            raise _unsafe(path, what, f"it asks for {', '.join(names[:3])}") from None
        raise _plain_pickle(path, what) from None
    except RuntimeError as err:
        if "magic number" in str(err).lower():  # a raw pickle of plain values
            raise _plain_pickle(path, what) from None
        raise _damaged(path, what, _first_line(err)) from None
    except (EOFError, OSError, ValueError) as err:
        raise _damaged(path, what, _first_line(err)) from None


def _not_a_torch_file(path: Path, what: str) -> RefusedFileError:
    """The error for a file in neither torch format: unsafe when it is a text pickle
    naming Python objects (its opcodes are read, never run), unreadable otherwise."""
    if path.stat().st_size == 0:
        return _damaged(path, what, "it is empty, 0 bytes")
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # torch's zip format keeps its index at the end
            return _damaged(path, what, "a zip file without its end record")
    names = _pickled_objects(path)
    if names:
        return _unsafe(path, what, f"a text pickle that asks for {', '.join(names[:3])}")
    return UnreadableFileError(
        f"{what} '{path}' is not a torch file (neither torch's zip format nor a binary "
        "pickle); give a file written by torch.save or a .safetensors file."
    )


def _pickled_objects(path: Path, limit: int = 1 << 20) -> list[str]:
    """The Python objects a pickle in ``path`` would import or call, found by reading its
    opcodes (``pickletools``, which executes nothing); empty unless it is a whole pickle."""
    names: list[str] = []
    found = False
    strings: list[str] = []  # the last two string arguments (STACK_GLOBAL's module, name)
    with open(path, "rb") as f:
        try:
            for op, arg, pos in pickletools.genops(f):
                if pos is not None and pos > limit:
                    return []
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if op.name in _OBJECT_OPCODES:
                    found = True
                    if op.name == "STACK_GLOBAL":
                        names.append(".".join(strings))
                    elif arg:
                        names.append(str(arg).replace(" ", "."))
                if op.name == "STOP":
                    return names or (["Python objects"] if found else [])
        except (ValueError, EOFError, UnicodeDecodeError):
            return []
    return []


def _plain_pickle(path: Path, what: str) -> UnreadableFileError:
    return UnreadableFileError(
        f"{what} '{path}' is a pickle but not a file written by torch.save; give a file "
        "written by torch.save or a .safetensors file."
    )


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
