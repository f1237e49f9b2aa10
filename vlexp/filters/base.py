"""The pair-filter interface.

A filter decides, for a batch of pairs, which to keep and why the others were
dropped. Criteria that need only text look at ``captions``; those that need pixels
(text-spotting) set ``needs_images`` and get the images as PIL RGB images.

The standalone filtering pass (:mod:`vlexp.filters.filter_pass`) drives any filter
through this interface alone: :meth:`PairFilter.judge` returns the decision plus the
per-pair measurements shown next to each example of its report,
:meth:`PairFilter.criteria` names the switched-on criteria the report counts,
:meth:`PairFilter.warm_up` loads what the filter loads lazily, and
:attr:`PairFilter.speed_options` lists the config keys that change only speed (free to
change when a pass is resumed). Only :meth:`PairFilter.decide` is required.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from vlexp.registry import Registry


@dataclass
class FilterReport:
    """Counts of what a filter kept and dropped, per reason, with a few examples."""

    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, captions: Sequence[str], keep: np.ndarray, reasons: Sequence[str | None]) -> None:
        self.total += len(keep)
        self.kept += int(np.sum(keep))
        for cap, k, r in zip(captions, keep, reasons):
            if not k:
                reason = r or "unspecified"
                self.dropped[reason] += 1
                ex = self.examples.setdefault(reason, [])
                if len(ex) < 5:
                    ex.append(cap)

    def merge(self, other: FilterReport) -> FilterReport:
        self.total += other.total
        self.kept += other.kept
        self.dropped.update(other.dropped)
        for k, v in other.examples.items():
            self.examples.setdefault(k, []).extend(v[: 5 - len(self.examples.get(k, []))])
        return self

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "kept_share": self.kept / self.total if self.total else 0.0,
            "dropped": dict(self.dropped),
            "examples": self.examples,
        }


@dataclass
class Verdicts:
    """A filter's decision on a batch: keep mask, first failing criterion per pair (None
    if kept), measurements per pair (shown in pass reports), and images OCR'd."""

    keep: np.ndarray
    reasons: list[str | None]
    details: list[dict[str, Any]]
    ocr_images: int = 0


class PairFilter:
    """Decides which image-caption pairs to keep."""

    needs_images: bool = False
    speed_options: ClassVar[frozenset[str]] = frozenset()
    """Config keys that change how fast, not what, the filter decides."""

    def decide(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Return (keep mask of shape (N,), reason per pair: None if kept)."""
        raise NotImplementedError

    def judge(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> Verdicts:
        """The decision with per-pair measurements (none by default)."""
        keep, reasons = self.decide(captions, images)
        return Verdicts(np.asarray(keep, dtype=bool), list(reasons), [{} for _ in captions])

    def criteria(self) -> list[str]:
        """Names of the switched-on criteria a report counts (none by default)."""
        return []

    def warm_up(self) -> None:
        """Load what the filter loads lazily, so pass timings measure filtering only."""


FILTERS: Registry[PairFilter] = Registry("filter")
