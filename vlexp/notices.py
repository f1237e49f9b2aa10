"""One log line for each thing a run loads from a user path and each mechanism it turns on.

A run that reads weights, a teacher, a tag file or a resume point, or that switches on
accumulation, checkpointing, compilation, a trunk cache or a precision, says so in one
``vlexp`` log line whose shape is fixed here, so a log shows what was loaded and which
mechanisms ran (and a test or a ``grep`` can find them):

- ``loaded weights FILE into WHAT: 152 tensors matched, 0 missing, 2 unexpected``
- ``loaded teacher FILE: ...``, ``loaded tag file FILE: ...``, ``loaded resume point FILE: ...``
- ``on: gradient accumulation (optim.accum_freq=2: ...)``
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("vlexp")


@dataclass(frozen=True)
class LoadCounts:
    """Tensors of a weights file against a model's state dict, compared by name.

    ``matched``: in both (loaded); ``missing``: the model's tensors the file lacks (left
    at their initial values); ``unexpected``: the file's tensors the model has no place
    for (not loaded).
    """

    matched: int
    missing: int
    unexpected: int

    @classmethod
    def of(cls, model_keys: Iterable[str], file_keys: Iterable[str]) -> LoadCounts:
        """Counts from the two key sets."""
        model, file = set(model_keys), set(file_keys)
        return cls(len(model & file), len(model - file), len(file - model))


def loaded_weights(path: str | os.PathLike, into: str, counts: LoadCounts, note: str = "") -> str:
    """Log (and return) ``loaded weights PATH into INTO: N tensors matched, ...``."""
    line = (
        f"loaded weights {path} into {into}: {counts.matched} tensors matched, "
        f"{counts.missing} missing, {counts.unexpected} unexpected"
    )
    return _emit(line + (f" ({note})" if note else ""))


def loaded(what: str, path: str | os.PathLike, detail: str) -> str:
    """Log (and return) ``loaded WHAT PATH: DETAIL`` for a teacher, tag file, resume point."""
    return _emit(f"loaded {what} {path}: {detail}")


def switched_on(mechanism: str, detail: str) -> str:
    """Log (and return) ``on: MECHANISM (DETAIL)`` for a mechanism the run uses."""
    return _emit(f"on: {mechanism} ({detail})")


def _emit(line: str) -> str:
    log.info(line)
    return line
