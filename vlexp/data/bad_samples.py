"""Accounting for bad samples: skip them, count them per reason, abort past a ceiling.

Readers never stop on one broken record and never drop one silently: each owns a
:class:`BadSampleCounter` told about every good and every skipped sample (with a reason
such as ``"broken_image"``); above ``max_bad_fraction`` (once ``min_samples`` were seen)
:class:`TooManyBadSamples` names the counts. Each distinct sample counts once, and the
counts of DataLoader workers reach the main process's :class:`BadSampleTally` with their
batches, so they are the same for any number of workers. Details: docs/DESIGN.md
("Bad samples").
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from vlexp.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Reasons used by vlexp's readers (any string is accepted).
BROKEN_IMAGE = "broken_image"
MISSING_IMAGE = "missing_image"
EMPTY_CAPTION = "empty_caption"
MISSING_CAPTION = "missing_caption"
BAD_JSON = "bad_json"
TRUNCATED_TAR = "truncated_tar"
UNREADABLE_SHARD = "unreadable_shard"
UNKNOWN_TAG = "unknown_tag"
UNKNOWN_LABEL = "unknown_label"
BAD_ENCODING = "bad_encoding"
MALFORMED_ROW = "malformed_row"
TOO_LARGE = "too_large"

BAD_SAMPLES_KEY = "bad_samples"
"""Item and batch field carrying :class:`ReadLog` records from loader workers."""

_UNSEEN, _GOOD, _BAD = 0, 1, 2


@dataclass
class ReadLog:
    """What one reader looked at while producing some items (plain, picklable).

    ``good_rows``: rows read fine; ``good``: samples read fine that have no row id;
    ``bad`` / ``notes``: ``(reason, row or -1, detail)``; ``lost``: ``(reason, count,
    detail, first row or -1)`` for consecutive samples lost together (a cut shard).
    """

    source: str
    good_rows: list[int] = field(default_factory=list)
    good: int = 0
    bad: list[tuple[str, int, str]] = field(default_factory=list)
    notes: list[tuple[str, int, str]] = field(default_factory=list)
    lost: list[tuple[str, int, str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.good_rows or self.good or self.bad or self.notes or self.lost)

    def extend(self, other: ReadLog) -> ReadLog:
        """Append another log of the same source."""
        self.good_rows.extend(other.good_rows)
        self.good += other.good
        self.bad.extend(other.bad)
        self.notes.extend(other.notes)
        self.lost.extend(other.lost)
        return self


def merge_logs(logs: Iterable[ReadLog | None]) -> list[ReadLog]:
    """One log per source, in order of first appearance."""
    out: dict[str, ReadLog] = {}
    for log_ in logs:
        if log_:
            mine = out.setdefault(log_.source, ReadLog(log_.source))
            mine.extend(log_)
    return list(out.values())


class TooManyBadSamples(UserError, RuntimeError):
    """Raised when the fraction of skipped samples exceeds the configured ceiling (a
    problem of the user's data: commands end on it with one line, exit code 2)."""


class BadSampleCounter:
    """Counts good and skipped samples per reason and enforces a ceiling on the bad fraction.

    Args:
        max_bad_fraction: largest tolerated ``bad / seen``; ``1.0`` disables the check.
        min_samples: the ceiling is only checked once this many samples were seen, so a
            single early failure cannot abort a run.
        name: what the counts describe (shown in logs and errors), e.g. the file read.
        log_first: how many occurrences of each reason are logged with their detail.
        num_rows: rows of a map-style reader; when set, a row is counted once, at its
            first look (``row=`` arguments), however often it is read again.
    """

    def __init__(
        self,
        max_bad_fraction: float = 0.01,
        min_samples: int = 1000,
        name: str = "data",
        log_first: int = 3,
        num_rows: int | None = None,
    ) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_samples = int(min_samples)
        self.name = name
        self.log_first = int(log_first)
        self.good = 0
        self.bad: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.checked_rows: int | None = None  # rows a start-up check looked at (all)
        self.checked_bad = 0  # ... and dropped
        self._status = None if num_rows is None else np.zeros(int(num_rows), dtype=np.uint8)
        self._outbox: ReadLog | None = None  # deferred: record instead of counting

    # ---------------------------------------------------------------- counting
    @property
    def num_bad(self) -> int:
        """Number of skipped samples (all reasons)."""
        return sum(self.bad.values())

    @property
    def seen(self) -> int:
        """Good plus skipped samples."""
        return self.good + self.num_bad

    @property
    def is_deferred(self) -> bool:
        """True when this counter records for the main process instead of counting."""
        return self._outbox is not None

    def _tracks(self, row: int | None) -> bool:
        """Whether ``row`` is a row this counter counts once (else every time)."""
        return row is not None and self._status is not None and 0 <= row < len(self._status)

    def _first_look(self, row: int | None, status: int) -> bool:
        """False when ``row`` was already counted (rows are counted once)."""
        if not self._tracks(row):
            return True
        if self._status[row] != _UNSEEN:
            return False
        self._status[row] = status
        return True

    def ok(self, n: int = 1, row: int | None = None) -> None:
        """Record ``n`` good samples, or the good row ``row`` (and check the ceiling)."""
        if self._outbox is not None:
            if row is None:
                self._outbox.good += int(n)
            else:
                self._outbox.good_rows.append(int(row))
            return
        if self._first_look(row, _GOOD):
            self.good += int(n)
            self.check()

    def add(
        self, reason: str, detail: str = "", check: bool = True, row: int | None = None
    ) -> None:
        """Record one skipped sample with its ``reason`` (and check the ceiling unless
        ``check`` is False, e.g. while tallying a whole table before one check)."""
        if self._outbox is not None:
            self._outbox.bad.append((reason, -1 if row is None else int(row), detail))
            return
        if not self._first_look(row, _BAD):
            return
        self.bad[reason] += 1
        self._remember(reason, detail, self.bad[reason], "skipped")
        if check:
            self.check()

    def lost(
        self,
        reason: str,
        count: int,
        detail: str = "",
        check: bool = True,
        first_row: int | None = None,
    ) -> None:
        """Record ``count`` samples lost together (e.g. the tail of a truncated shard),
        logged as one occurrence; rows ``first_row ...`` when known (counted once)."""
        if self._outbox is not None:
            row = -1 if first_row is None else int(first_row)
            self._outbox.lost.append((reason, int(count), detail, row))
            return
        if self._tracks(first_row):
            rows = self._status[first_row : first_row + int(count)]  # type: ignore[index,operator]
            count = int((rows == _UNSEEN).sum())
            rows[:] = np.where(rows == _UNSEEN, _BAD, rows)
            if not count:
                return
        self.bad[reason] += int(count)
        self._remember(reason, detail, self.bad[reason] - int(count) + 1, "skipped")
        if check:
            self.check()

    def note(self, reason: str, detail: str = "", row: int | None = None) -> None:
        """Record a sample that was kept but altered (not part of the bad fraction); a
        row's notes count until the row itself is counted (at its first look)."""
        if self._outbox is not None:
            self._outbox.notes.append((reason, -1 if row is None else int(row), detail))
            return
        if self._tracks(row) and self._status[row] != _UNSEEN:  # type: ignore[index]
            return
        self.notes[reason] += 1
        self._remember(reason, detail, self.notes[reason], "kept, altered")

    # ---------------------------------------------------------------- deferral
    def deferred(self, source: str) -> BadSampleCounter:
        """A twin that records into a :class:`ReadLog` for ``source`` (taken with
        :meth:`take`) instead of counting, logging or checking."""
        twin = BadSampleCounter(self.max_bad_fraction, self.min_samples, self.name, 0)
        twin._outbox = ReadLog(source)
        return twin

    def take(self) -> ReadLog | None:
        """The records since the last call (None when not deferred or nothing new)."""
        box = self._outbox
        if not box:
            return None
        self._outbox = ReadLog(box.source)
        return box

    def apply(self, records: ReadLog) -> None:
        """Count the records of a :class:`ReadLog` (then check the ceiling once)."""
        for reason, row, detail in records.notes:  # before their rows are counted
            self.note(reason, detail, row=None if row < 0 else row)
        for row in records.good_rows:
            if self._first_look(row, _GOOD):
                self.good += 1
        self.good += records.good
        for reason, row, detail in records.bad:
            self.add(reason, detail, check=False, row=None if row < 0 else row)
        for reason, count, detail, first in records.lost:
            self.lost(reason, count, detail, check=False, first_row=None if first < 0 else first)
        self.check()

    def _remember(self, reason: str, detail: str, count: int, what: str) -> None:
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5 and detail:
            ex.append(detail)
        if count <= self.log_first:
            log.warning("%s: %s sample (%s) %s", self.name, what, reason, detail)
            if count == self.log_first:
                log.warning("%s: further '%s' samples are counted, not logged", self.name, reason)

    def start_up(
        self,
        rows: int,
        dropped: Counter[str],
        examples: dict[str, list[str]],
        notes: Counter[str] | None = None,
    ) -> None:
        """Start from a check that looked at all ``rows`` rows, dropped ``dropped`` and
        noted ``notes`` (per reason); the rows it kept are counted when read (see
        :attr:`bad_fraction`)."""
        self.checked_rows = int(rows)
        self.checked_bad = sum(dropped.values())
        self.bad.update(dropped)
        self.notes.update(notes or {})
        for k, v in examples.items():
            self.examples.setdefault(k, []).extend(v[:5])

    # ---------------------------------------------------------------- ceiling
    @property
    def bad_fraction(self) -> float:
        """``bad / seen``; after a start-up check, the share it dropped plus the share of
        the rows it kept that were bad when read, ``d/R + (1 - d/R) * b/r``, so rows not
        read yet neither dilute nor inflate it."""
        if self.checked_rows:
            dropped = self.checked_bad / self.checked_rows
            read = self.seen - self.checked_bad
            broken = (self.num_bad - self.checked_bad) / read if read else 0.0
            return dropped + (1.0 - dropped) * broken
        return self.num_bad / self.seen if self.seen else 0.0

    def check(self) -> None:
        """Raise :class:`TooManyBadSamples` when past ``min_samples`` and above the ceiling."""
        if self.seen < self.min_samples or self.bad_fraction <= self.max_bad_fraction:
            return
        how = ""
        if self.checked_bad:
            read = self.seen - self.checked_bad
            how = (
                f": {self.checked_bad} of {self.checked_rows} rows dropped by the start-up "
                f"check, {self.num_bad - self.checked_bad} of {read} rows read"
            )
        raise TooManyBadSamples(
            f"{self.name}: {self.num_bad} of {self.seen} samples "
            f"({100 * self.bad_fraction:.2f}%{how}) were bad, above the ceiling of "
            f"{100 * self.max_bad_fraction:.2f}%. Reasons: {dict(self.bad)}; examples: "
            f"{ {k: v[:2] for k, v in self.examples.items() if k in self.bad} }. "
            "Fix or re-export the data, or raise max_bad_fraction if this is expected."
        )

    # ---------------------------------------------------------------- reporting
    def as_dict(self) -> dict[str, Any]:
        """Plain summary: ``seen``, ``good``, ``bad``, ``bad_fraction``, ``by_reason``,
        ``notes`` and, after a start-up check, ``rows`` (the rows it looked at) and
        ``dropped_at_start`` (the bad ones among them, included in ``bad``: every DDP
        rank runs the check, so a total over ranks counts them once)."""
        out: dict[str, Any] = {
            "seen": self.seen,
            "good": self.good,
            "bad": self.num_bad,
            "bad_fraction": self.bad_fraction,
            "by_reason": dict(self.bad),
            "notes": dict(self.notes),
        }
        if self.checked_rows is not None:
            out["rows"] = self.checked_rows
            out["dropped_at_start"] = self.checked_bad
        return out

    def merge(self, other: BadSampleCounter) -> BadSampleCounter:
        """Add another counter's counts to this one (e.g. per-shard counters of an index pass)."""
        self.good += other.good
        self.bad.update(other.bad)
        self.notes.update(other.notes)
        for k, v in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(v[: 5 - len(mine)])
        return self

    def log_summary(self) -> None:
        """Log the counts once (a warning when anything was skipped or altered)."""
        if self.num_bad or self.notes:
            log.warning("%s: bad-sample summary %s", self.name, self.as_dict())
        else:
            log.info("%s: %d samples, none bad", self.name, self.good)

    def __repr__(self) -> str:
        return f"BadSampleCounter({self.name!r}, {self.as_dict()})"


def first_good(
    i: int,
    n: int,
    load: Callable[[int], T],
    counter: BadSampleCounter,
    known_bad: set[int],
    reason_of: Callable[[BaseException], str],
    errors: tuple[type[BaseException], ...],
    max_tries: int = 16,
    where: Callable[[int], str] = lambda j: f"row {j}",
) -> tuple[int, T]:
    """Map-style skipping: load row ``i`` or, when it is bad, a deterministic substitute.

    Rows that fail are counted once (with ``reason_of(error)``) and remembered in
    ``known_bad`` (``where(row)`` names it in the log); substitutes are ``(i + k * stride) % n`` for k = 1, 2, ... with a large
    prime stride, so they rarely land in the same batch as ``i``. Returns ``(row, value)``:
    callers report ``row`` as the item's index so per-row lookups stay consistent.
    """
    stride = _STRIDE % n or 1
    for k in range(max_tries):
        j = (i + k * stride) % n
        if j in known_bad:
            continue
        try:
            value = load(j)
        except errors as e:
            known_bad.add(j)
            counter.add(reason_of(e), f"{where(j)}: {type(e).__name__}: {e}", row=j)
            continue
        counter.ok(row=j)
        return j, value
    raise TooManyBadSamples(
        f"{counter.name}: {max_tries} rows tried as substitutes for row {i} were all bad "
        f"({counter.as_dict()}); the data around here is broken, check it"
    )


_STRIDE = 104729  # a prime


# --------------------------------------------------------------------- main process
def attach_log(item: dict[str, Any], counter: BadSampleCounter) -> dict[str, Any]:
    """Put the deferred ``counter``'s new records on ``item`` (nothing when not deferred)."""
    records = counter.take()
    if records is not None:
        item[BAD_SAMPLES_KEY] = records
    return item


class CollateReadLogs:
    """Wraps a collate function: takes the :class:`ReadLog` records off the items and
    puts them, merged per source, on the batch under :data:`BAD_SAMPLES_KEY`."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        logs = merge_logs(it.pop(BAD_SAMPLES_KEY, None) for it in items)
        batch = self.collate(items)
        if logs:
            batch[BAD_SAMPLES_KEY] = logs
        return batch


class BadSampleTally:
    """The main process's counters of the readers that loader workers run (see the
    module docstring): :meth:`track` a reader, :meth:`absorb` every batch."""

    def __init__(self) -> None:
        self.counters: dict[str, BadSampleCounter] = {}
        self.read_keys: set[str] = set()  # readers whose batches this process consumed

    def track(self, key: str, reader: Any) -> None:
        """Take over ``reader.bad`` (its counts so far included) under ``key`` and give
        the reader a deferred twin. Readers without a counter are ignored."""
        counter = getattr(reader, "bad", None)
        if not isinstance(counter, BadSampleCounter) or counter.is_deferred:
            return
        self.counters[key] = counter
        reader.bad = counter.deferred(key)

    def absorb(self, batch: Any) -> Any:
        """Remove the records from ``batch``, count them and check the ceilings."""
        if isinstance(batch, dict):
            for records in batch.pop(BAD_SAMPLES_KEY, None) or ():
                counter = self.counters.get(records.source)
                if counter is not None:
                    self.read_keys.add(records.source)
                    counter.apply(records)
        return batch

    def report(self) -> dict[str, dict[str, Any]]:
        """``{key: counter.as_dict()}``."""
        return {k: c.as_dict() for k, c in self.counters.items()}

    def read_report(self) -> dict[str, dict[str, Any]]:
        """:meth:`report` of the readers this process read batches of."""
        return {k: self.counters[k].as_dict() for k in sorted(self.read_keys)}

    def log_summary(self) -> None:
        """One summary line per tracked reader."""
        for c in self.counters.values():
            c.log_summary()
