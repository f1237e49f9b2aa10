"""Judging a batch of pairs with any registered :class:`~vlexp.filters.base.PairFilter`.

Filters with an ``assess`` method (the CAT filter) also report their measurements, which
the pass shows next to each example (``complexity``, ``action``, ``text_overlap``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vlexp.filters.base import PairFilter

CAT_CRITERIA = ("complexity", "action", "text_spotting")


@dataclass
class Verdicts:
    """Decision on a batch: keep mask, first failing criterion per pair (None if kept),
    measurements per pair, and how many images were OCR'd."""

    keep: np.ndarray
    reasons: list[str | None]
    details: list[dict[str, Any]]
    ocr_images: int = 0


def criteria_of(flt: PairFilter) -> list[str]:
    """Names of the filter's switched-on criteria (empty when it has none to report)."""
    if all(isinstance(getattr(flt, c, None), bool) for c in CAT_CRITERIA):
        return [c for c in CAT_CRITERIA if getattr(flt, c)]
    return list(getattr(flt, "criteria", []) or [])


def warm_up(flt: PairFilter) -> None:
    """Load what the filter loads lazily (the CAT filter's spaCy pipeline), so that unit
    timings measure filtering, not start-up."""
    if any(getattr(flt, c, False) is True for c in ("complexity", "action")):
        getattr(flt, "nlp", None)


def judge(
    flt: PairFilter, captions: Sequence[str], images: Sequence[Image.Image] | None
) -> Verdicts:
    """Run ``flt`` on one batch (``images`` None unless ``flt.needs_images``)."""
    assess = getattr(flt, "assess", None)
    if assess is None:
        keep, reasons = flt.decide(captions, images)
        return Verdicts(np.asarray(keep, dtype=bool), list(reasons), [{} for _ in captions])
    a = assess(captions, images)
    on = set(criteria_of(flt))
    details: list[dict[str, Any]] = []
    for i in range(len(captions)):
        d: dict[str, Any] = {}
        if "complexity" in on:
            d["complexity"] = int(a.complexity[i])
        if "action" in on:
            d["action"] = bool(a.action[i])
        if not math.isnan(float(a.overlap[i])):
            d["text_overlap"] = round(float(a.overlap[i]), 4)
        details.append(d)
    ocr = int(np.sum(~np.isnan(np.asarray(a.overlap, dtype=float))))
    return Verdicts(np.asarray(a.keep, dtype=bool), list(a.reasons), details, ocr)
