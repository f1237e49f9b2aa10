"""`InMemoryPairs`: a list-backed pair source, and a tiny colour-block generator for it.

Useful for tests, benchmarks and small hand-made sets: any lists of PIL images,
captions, tag-id lists and labels become a :class:`~vlexp.data.types.PairSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from vlexp.data.types import TagTable


class InMemoryPairs:
    """Pairs held in Python lists (a :class:`PairSource`)."""

    def __init__(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str],
        tags: Sequence[Sequence[int]] | None = None,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str] = (),
        parents: Sequence[int] | None = None,
    ) -> None:
        n = len(images)
        if (
            len(captions) != n
            or (tags is not None and len(tags) != n)
            or (labels is not None and len(labels) != n)
        ):
            raise ValueError("images, captions, tags and labels must have the same length")
        self.images = list(images)
        self._captions = list(captions)
        self.tags = (
            [list(map(int, t)) for t in tags] if tags is not None else [[] for _ in range(n)]
        )
        self.labels = [int(x) for x in labels] if labels is not None else [-1] * n
        self._class_names = list(class_names)
        self._table = (
            TagTable.from_lists(self.tags, self._class_names, parents) if tags is not None else None
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = range(len(self))[i]
        return {
            "image": self.images[i],
            "caption": self._captions[i],
            "tags": list(self.tags[i]),
            "label": self.labels[i],
            "index": i,
        }

    @property
    def captions(self) -> list[str]:
        return self._captions

    @property
    def tag_table(self) -> TagTable | None:
        return self._table

    @property
    def class_names(self) -> list[str]:
        return self._class_names


COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 170),
    "white": (245, 245, 245),
}


def colour_block_pairs(n: int, image_size: int = 64, seed: int = 0) -> InMemoryPairs:
    """``n`` images of one coloured block on a grey background with a noisy texture,
    captioned ``"a <colour> block at the <side>"``; tags and label are the colour's id
    (classes = colour names)."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    images, captions, tags, labels = [], [], [], []
    s = image_size
    for _ in range(n):
        c = int(rng.integers(len(names)))
        img = rng.normal(128, 20, size=(s, s, 3)).clip(0, 255)
        w = int(rng.integers(s // 4, s // 2))
        x, y = (int(v) for v in rng.integers(0, s - w, 2))
        img[y : y + w, x : x + w] = COLOURS[names[c]]
        images.append(Image.fromarray(img.astype(np.uint8)))
        side = "left" if x + w / 2 < s / 2 else "right"
        captions.append(f"a {names[c]} block at the {side}")
        tags.append([c])
        labels.append(c)
    return InMemoryPairs(images, captions, tags, labels, names)
