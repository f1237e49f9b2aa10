"""Evaluation sets: images with labels, captions mapped to their images, class prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlexp.data.bad_samples import BAD_SAMPLES_KEY


class _Images(torch.utils.data.Dataset):
    """Image-only view of a pair source (captions are encoded separately)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.source[i]
        out = {"image": item["image"], "label": item.get("label", -1), "index": i}
        if BAD_SAMPLES_KEY in item:  # the reader's bad-sample records travel with the batch
            out[BAD_SAMPLES_KEY] = item[BAD_SAMPLES_KEY]
        return out


@dataclass
class EvalSet:
    """One evaluation set.

    ``images`` is a map-style dataset of ``{"image", "label", "index"}`` items;
    ``captions[j]`` describes image ``caption_image[j]`` (several captions per image
    allowed). Zero-shot classification runs when ``class_names`` and image labels exist.
    ``distractors[i]``, when given, lists false captions of image ``i`` that name the same
    objects with one thing changed; the set then scores fine-grained accuracy (its true
    caption above all of them, :mod:`vlexp.eval.metrics.finegrained`) and must have exactly one
    caption per image.
    """

    name: str
    images: torch.utils.data.Dataset
    captions: list[str]
    caption_image: np.ndarray
    class_names: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: ["a {}"])
    retrieval: bool = True
    distractors: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.distractors is None:
            return
        n = self.num_images
        if len(self.distractors) != n:
            raise ValueError(
                f"eval set '{self.name}': distractors must hold one list per image "
                f"({n} images), got {len(self.distractors)} lists"
            )
        per_image = np.bincount(np.asarray(self.caption_image, dtype=np.int64), minlength=n)
        if per_image.shape[0] != n or not (per_image == 1).all():
            raise ValueError(
                f"eval set '{self.name}': a set with distractors needs exactly one true caption "
                "per image (captions[j] for image caption_image[j]); split extra captions into "
                "their own set"
            )

    @classmethod
    def from_pairs(
        cls,
        name: str,
        source: Any,
        class_names: Sequence[str] = (),
        templates: Sequence[str] = ("a {}",),
    ) -> EvalSet:
        """One caption per image, taken from a pair source."""
        caps = list(source.captions)
        return cls(
            name, _Images(source), caps, np.arange(len(caps)), list(class_names), list(templates)
        )

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def captions_per_image(self) -> float:
        return len(self.captions) / max(1, self.num_images)
