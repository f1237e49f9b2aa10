"""The synthetic benchmark's vocabulary: shape classes in families, attributes, relations, verbs.

Class ids: the ``NUM_LEAF_CLASSES`` leaf shapes come first (ids ``0..L-1``, the ids used
for tags and labels), then the family classes. ``parents()[c]`` is the family id of leaf
``c`` and ``-1`` for a family. Every word is lower-case ASCII and no leaf name starts
with a vowel, so the prompt ``"a {}"`` is grammatical for every leaf class.
"""

from __future__ import annotations

import numpy as np

FAMILIES: dict[str, tuple[str, ...]] = {
    "polygon": ("triangle", "square", "pentagon", "hexagon"),
    "round shape": ("circle", "semicircle", "ring", "crescent"),
    "symbol": ("star", "cross", "diamond", "heart"),
}
"""Family name -> its leaf shape classes (the two-level ontology)."""

LEAF_CLASSES: tuple[str, ...] = tuple(c for leaves in FAMILIES.values() for c in leaves)
FAMILY_CLASSES: tuple[str, ...] = tuple(FAMILIES)
NUM_LEAF_CLASSES: int = len(LEAF_CLASSES)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 185, 60),
    "blue": (45, 95, 235),
    "yellow": (240, 225, 40),
    "purple": (150, 60, 205),
    "orange": (250, 140, 20),
    "pink": (250, 125, 195),
    "cyan": (40, 215, 225),
}
"""Colour name -> RGB. All distinct from each other, the background, cue and text colours."""

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
ACTIONS: tuple[str, ...] = ("chasing", "pushing", "jumping over", "hitting")
"""Verbs; each is drawn as its own cue from the subject to the object (see render.py)."""

OPPOSITE_RELATION: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("blue", "star"),
    ("green", "heart"),
    ("yellow", "square"),
    ("purple", "circle"),
    ("orange", "cross"),
)
"""(colour, class) combinations absent from train/val/test; one is in every
``test_compositional`` scene (its primary object)."""

RANDOM_WORDS: tuple[str, ...] = (
    "sale",
    "open",
    "music",
    "river",
    "coffee",
    "house",
    "garden",
    "winter",
    "ticket",
    "paper",
    "window",
    "market",
    "happy",
    "travel",
    "forest",
    "city",
    "bread",
    "planet",
    "summer",
    "piano",
    "letter",
    "rocket",
    "school",
    "island",
)
"""Words unrelated to any caption word, drawn by the ``random_text_frac`` knob."""


def class_names() -> list[str]:
    """All class names: leaf classes (ids ``0..L-1``) then family classes."""
    return list(LEAF_CLASSES) + list(FAMILY_CLASSES)


def parents() -> np.ndarray:
    """Parent id of every class in :func:`class_names` order (family id; ``-1`` for a family)."""
    out = np.full(len(LEAF_CLASSES) + len(FAMILY_CLASSES), -1, dtype=np.int32)
    for f, leaves in enumerate(FAMILIES.values()):
        for leaf in leaves:
            out[LEAF_CLASSES.index(leaf)] = NUM_LEAF_CLASSES + f
    return out


def article(word: str) -> str:
    """``"an"`` before a vowel-initial word, else ``"a"``."""
    return "an" if word[:1] in "aeiou" else "a"


def held_out_colour_ids() -> dict[int, int]:
    """Leaf class id -> the colour id held out for it (classes without one are absent)."""
    return {LEAF_CLASSES.index(c): COLOUR_NAMES.index(col) for col, c in HELD_OUT_COMBOS}
