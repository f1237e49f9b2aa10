"""The pair-filter interface.

A filter decides, for a batch of pairs, which to keep and why the others were
dropped. Criteria that need only text look at ``captions``; those that need pixels
(text-spotting) set ``needs_images`` and get the images as PIL RGB images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

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


class PairFilter:
    """Decides which image-caption pairs to keep."""

    needs_images: bool = False

    def decide(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Return (keep mask of shape (N,), reason per pair: None if kept)."""
        raise NotImplementedError


FILTERS: Registry[PairFilter] = Registry("filter")
