"""Evaluation sets: images with labels, captions mapped to their images, class prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class _Images(torch.utils.data.Dataset):
    """Image-only view of a pair source (captions are encoded separately)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.source[i]
        return {"image": item["image"], "label": item.get("label", -1), "index": i}


@dataclass
class EvalSet:
    """One evaluation set.

    ``images`` is a map-style dataset of ``{"image", "label", "index"}`` items;
    ``captions[j]`` describes image ``caption_image[j]`` (several captions per image
    allowed). Zero-shot classification runs when ``class_names`` and image labels exist.
    """

    name: str
    images: torch.utils.data.Dataset
    captions: list[str]
    caption_image: np.ndarray
    class_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: ["a {}"])
    retrieval: bool = True

    @classmethod
    def from_pairs(
        cls, name: str, source: Any, class_names: Sequence[str] = (),
        templates: Sequence[str] = ("a {}",),
    ) -> EvalSet:
        """One caption per image, taken from a pair source."""
        caps = list(source.captions)
        return cls(name, _Images(source), caps, np.arange(len(caps)), list(class_names), list(templates))

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def captions_per_image(self) -> float:
        return len(self.captions) / max(1, self.num_images)
