"""Data contracts shared by every source, sampler, filter and evaluator.

A *pair source* is a map-style dataset of image-caption pairs. Item ``i`` is a dict::

    {"image": PIL.Image (RGB), "caption": str, "tags": list[int], "label": int, "index": i}

``tags`` are ontology class ids of the objects the pair shows (may be empty), ``label``
the class id used for zero-shot classification (``-1`` when unknown). Besides item
access a source exposes cheap, image-free views used by samplers and filters:
``captions`` (sequence of str), ``tag_table`` (:class:`TagTable` or ``None``) and
``class_names``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class TagTable:
    """Object tags of N pairs in compressed sparse row form (no per-pair Python objects).

    Tags of pair ``i`` are ``values[offsets[i]:offsets[i + 1]]``. ``parents[c]`` is the
    parent class of class ``c`` in the ontology hierarchy (``-1`` for a root).
    """

    offsets: np.ndarray  # (N + 1,) int64
    values: np.ndarray  # (nnz,) int32 class ids
    class_names: list[str]
    parents: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.int32)
        if self.parents.size == 0:
            self.parents = np.full(len(self.class_names), -1, dtype=np.int32)
        self.parents = np.asarray(self.parents, dtype=np.int32)
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.values):
            raise ValueError("TagTable offsets must start at 0 and end at len(values)")
        if len(self.values) and (
            self.values.min() < 0 or self.values.max() >= len(self.class_names)
        ):
            raise ValueError("TagTable values must be class ids in [0, num_classes)")

    @property
    def num_pairs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def tags_of(self, i: int) -> np.ndarray:
        """Class ids of pair ``i``."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def counts(self) -> np.ndarray:
        """Number of tags of each pair, shape (N,)."""
        return np.diff(self.offsets)

    def subset(self, indices: np.ndarray) -> TagTable:
        """The table restricted to ``indices`` (re-numbered 0..len-1)."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.counts()[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        starts = np.repeat(self.offsets[indices], counts)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
        return TagTable(offsets, self.values[starts + within], self.class_names, self.parents)

    @classmethod
    def from_lists(
        cls, tags: Sequence[Sequence[int]], class_names: list[str], parents: Any = None
    ) -> TagTable:
        """Build from one list of class ids per pair (convenient for small data and tests)."""
        counts = np.fromiter((len(t) for t in tags), dtype=np.int64, count=len(tags))
        offsets = np.zeros(len(tags) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = np.fromiter((c for t in tags for c in t), dtype=np.int32, count=int(offsets[-1]))
        par = np.zeros(0, dtype=np.int32) if parents is None else np.asarray(parents, np.int32)
        return cls(offsets, values, list(class_names), par)


@runtime_checkable
class PairSource(Protocol):
    """Map-style image-caption pairs (see module docstring for the item layout)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @property
    def captions(self) -> Sequence[str]: ...

    @property
    def tag_table(self) -> TagTable | None: ...

    @property
    def class_names(self) -> list[str]: ...


class Subset:
    """A view of a pair source restricted to some indices (keeps the cheap views)."""

    def __init__(self, source: PairSource, indices: np.ndarray) -> None:
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.source[int(self.indices[i])])
        item["index"] = int(i)
        return item

    @property
    def captions(self) -> list[str]:
        caps = self.source.captions
        return [caps[int(j)] for j in self.indices]

    @property
    def tag_table(self) -> TagTable | None:
        table = self.source.tag_table
        return None if table is None else table.subset(self.indices)

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names
