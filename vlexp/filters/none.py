"""The pass-through filter (baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlexp.filters.base import FILTERS, PairFilter


@FILTERS.register("none", schema={})
class KeepAll(PairFilter):
    """Keeps every pair."""

    def decide(self, captions: Sequence[str], images=None) -> tuple[np.ndarray, list[str | None]]:
        return np.ones(len(captions), dtype=bool), [None] * len(captions)
