"""Judging a batch of pairs with any registered :class:`~vlexp.filters.base.PairFilter`.

The pass uses only the declared interface: :meth:`PairFilter.judge` (decision and
per-pair measurements), :meth:`PairFilter.criteria` and :meth:`PairFilter.warm_up`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from vlexp.filters.base import PairFilter, Verdicts

__all__ = ["Verdicts", "criteria_of", "judge", "warm_up"]


def criteria_of(flt: PairFilter) -> list[str]:
    """Names of the filter's switched-on criteria (empty when it has none to report)."""
    return list(flt.criteria())


def warm_up(flt: PairFilter) -> None:
    """Load what the filter loads lazily, so that unit timings measure filtering."""
    flt.warm_up()


def judge(
    flt: PairFilter, captions: Sequence[str], images: Sequence[Image.Image] | None
) -> Verdicts:
    """Run ``flt`` on one batch (``images`` None unless ``flt.needs_images``)."""
    return flt.judge(captions, images)
