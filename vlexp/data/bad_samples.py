"""Accounting for bad samples: skip them, count them per reason, abort past a ceiling.

Readers never stop on one broken record and never drop one silently. Every reader owns
a :class:`BadSampleCounter`; it is told about each good sample (:meth:`~BadSampleCounter.ok`)
and each skipped one (:meth:`~BadSampleCounter.add`, with a reason such as
``"broken_image"``). The first few occurrences of every reason are logged with their
detail; once at least ``min_samples`` samples were seen, a bad fraction above
``max_bad_fraction`` raises :class:`TooManyBadSamples` naming the counts per reason.

Records that are kept but altered (a tag name missing from the class list) are
*notes*: counted and logged the same way but not part of the bad fraction.

Counters are per process: inside DataLoader workers each worker checks its own share
(the fraction is what matters) and logs its own summary.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

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


class TooManyBadSamples(RuntimeError):
    """Raised when the fraction of skipped samples exceeds the configured ceiling."""


class BadSampleCounter:
    """Counts good and skipped samples per reason and enforces a ceiling on the bad fraction.

    Args:
        max_bad_fraction: largest tolerated ``bad / seen``; ``1.0`` disables the check.
        min_samples: the ceiling is only checked once this many samples were seen, so a
            single early failure cannot abort a run.
        name: what the counts describe (shown in logs and errors), e.g. the file read.
        log_first: how many occurrences of each reason are logged with their detail.
    """

    def __init__(
        self,
        max_bad_fraction: float = 0.01,
        min_samples: int = 1000,
        name: str = "data",
        log_first: int = 3,
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

    # ---------------------------------------------------------------- counting
    @property
    def num_bad(self) -> int:
        """Number of skipped samples (all reasons)."""
        return sum(self.bad.values())

    @property
    def seen(self) -> int:
        """Good plus skipped samples."""
        return self.good + self.num_bad

    def ok(self, n: int = 1) -> None:
        """Record ``n`` good samples (and check the ceiling)."""
        self.good += int(n)
        self.check()

    def add(self, reason: str, detail: str = "", check: bool = True) -> None:
        """Record one skipped sample with its ``reason`` (and check the ceiling unless
        ``check`` is False, e.g. while tallying a whole table before one check)."""
        self.bad[reason] += 1
        self._remember(reason, detail, self.bad[reason], "skipped")
        if check:
            self.check()

    def note(self, reason: str, detail: str = "") -> None:
        """Record a sample that was kept but altered (not part of the bad fraction)."""
        self.notes[reason] += 1
        self._remember(reason, detail, self.notes[reason], "kept, altered")

    def _remember(self, reason: str, detail: str, count: int, what: str) -> None:
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5 and detail:
            ex.append(detail)
        if count <= self.log_first:
            log.warning("%s: %s sample (%s) %s", self.name, what, reason, detail)
            if count == self.log_first:
                log.warning("%s: further '%s' samples are counted, not logged", self.name, reason)

    # ---------------------------------------------------------------- ceiling
    @property
    def bad_fraction(self) -> float:
        return self.num_bad / self.seen if self.seen else 0.0

    def check(self) -> None:
        """Raise :class:`TooManyBadSamples` when past ``min_samples`` and above the ceiling."""
        if self.seen < self.min_samples or self.bad_fraction <= self.max_bad_fraction:
            return
        raise TooManyBadSamples(
            f"{self.name}: {self.num_bad} of {self.seen} samples "
            f"({100 * self.bad_fraction:.2f}%) were bad, above the ceiling of "
            f"{100 * self.max_bad_fraction:.2f}%. Reasons: {dict(self.bad)}; examples: "
            f"{ {k: v[:2] for k, v in self.examples.items() if k in self.bad} }. "
            "Fix or re-export the data, or raise max_bad_fraction if this is expected."
        )

    # ---------------------------------------------------------------- reporting
    def as_dict(self) -> dict[str, Any]:
        """Plain summary: ``seen``, ``good``, ``bad``, ``bad_fraction``, ``by_reason``, ``notes``."""
        return {
            "seen": self.seen,
            "good": self.good,
            "bad": self.num_bad,
            "bad_fraction": self.bad_fraction,
            "by_reason": dict(self.bad),
            "notes": dict(self.notes),
        }

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
) -> tuple[int, T]:
    """Map-style skipping: load row ``i`` or, when it is bad, a deterministic substitute.

    Rows that fail are counted once (with ``reason_of(error)``) and remembered in
    ``known_bad``; substitutes are ``(i + k * stride) % n`` for k = 1, 2, ... with a large
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
            counter.add(reason_of(e), f"row {j}: {type(e).__name__}: {e}")
            continue
        counter.ok()
        return j, value
    raise TooManyBadSamples(
        f"{counter.name}: {max_tries} rows tried as substitutes for row {i} were all bad "
        f"({counter.as_dict()}); the data around here is broken, check it"
    )


_STRIDE = 104729  # a prime
