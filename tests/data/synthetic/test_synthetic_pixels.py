"""Synthetic benchmark: what captions say is true in the rendered pixels.

The oracle is the caption text (parsed here with a regular expression) and exact colour
masks of the image; the generator's own scene bookkeeping is not used.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlexp.data.synthetic import COLOURS, LEAF_CLASSES, RELATIONS, SyntheticPairs
from vlexp.data.synthetic.render import TEXTURE_SHADE

_MENTION = (
    r"an? (?:(small|large) )?(?:("
    + "|".join(COLOURS)
    + r") )?(?:(solid|striped|dotted) )?("
    + "|".join(LEAF_CLASSES)
    + ")"
)
RELATION_RE = re.compile(rf"^{_MENTION} ({'|'.join(RELATIONS)}) {_MENTION}$")
CUE = (245, 245, 245)


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """Pixels of exactly the named colour or its texture shade (TEXTURE_SHADE x, truncated)."""
    rgb = np.array(COLOURS[colour])
    shade = (rgb * TEXTURE_SHADE).astype(int)
    return np.all(image == rgb, -1) | np.all(image == shade, -1)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


@pytest.fixture(scope="module")
def val():
    return SyntheticPairs("val", 600, seed=5)


def test_relation_captions_are_true_in_pixels(val):
    checked = 0
    for i, caption in enumerate(val.captions):
        m = RELATION_RE.match(caption)
        if not m or m.group(2) is None or m.group(7) is None:
            continue
        relation = m.group(5)
        image = np.asarray(val[i]["image"]).astype(int)
        (sx, sy), (ox, oy) = (centroid(colour_mask(image, c)) for c in (m.group(2), m.group(7)))
        margin = 5.0  # pixels at 64 px
        expected = {
            "left of": ox - sx,
            "right of": sx - ox,
            "above": oy - sy,
            "below": sy - oy,
        }[relation]
        assert expected > margin, (i, caption, (sx, sy), (ox, oy))
        checked += 1
    assert checked >= 80


def test_named_colours_and_sizes_are_visible():
    src = SyntheticPairs("val", 300, seed=6, image_size=128, action_frac=0.0)
    sizes_checked = 0
    for i, caption in enumerate(src.captions):
        image = np.asarray(src[i]["image"]).astype(int)
        for size, colour, _, _ in re.findall(_MENTION, caption):
            if not colour:
                continue
            mask = colour_mask(image, colour)
            assert mask.sum() > 20, (i, caption, colour)
            if size:
                ys, xs = np.nonzero(mask)
                extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                # at 128 px small objects span 24..35 px, large ones 38..58 px
                assert (extent > 36.5) == (size == "large"), (i, caption, extent)
                sizes_checked += 1
    assert sizes_checked > 100


def test_action_cue_drawn_exactly_for_action_scenes():
    always = SyntheticPairs("val", 200, seed=7, action_frac=1.0)
    never = SyntheticPairs("val", 200, seed=7, action_frac=0.0)
    verbs = 0
    for i in range(200):
        n_objects = len(always[i]["attributes"]["objects"])
        cue = np.all(np.asarray(always[i]["image"]) == CUE, -1).sum()
        assert (cue > 10) == (n_objects >= 2), (i, cue, n_objects)
        assert np.all(np.asarray(never[i]["image"]) == CUE, -1).sum() == 0
        verbs += always[i]["attributes"]["caption_kind"] == "action"
    assert verbs > 60  # most captions of action scenes name the verb


def test_primary_object_is_largest_and_label():
    src = SyntheticPairs("val", 200, seed=8, image_size=128, action_frac=0.0)
    for i in range(200):
        item = src[i]
        objects = item["attributes"]["objects"]
        image = np.asarray(item["image"]).astype(int)
        areas = [colour_mask(image, o["colour"]).sum() for o in objects]
        radii = [o["radius"] for o in objects]
        assert radii[0] == max(radii)
        assert item["label"] == LEAF_CLASSES.index(objects[0]["class"])
        assert all(a > 0 for a in areas)
