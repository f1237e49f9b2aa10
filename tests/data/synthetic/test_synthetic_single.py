"""The `single` zero-shot test set: one object per image, labelled with that object's class.

Oracles: exact colour masks of the rendered pixels (objects of a scene have distinct
colours, so one object colour in the image means one object) and the scene's
plain-name description, not the label code path.
"""

from __future__ import annotations

import numpy as np
import pytest

from vlexp.data.sources.synthetic import synthetic_splits
from vlexp.data.synthetic import (
    COLOURS,
    HELD_OUT_COMBOS,
    LEAF_CLASSES,
    SyntheticPairs,
    build_synthetic,
)
from vlexp.data.synthetic.render import TEXTURE_SHADE

N = 300
SMALL = {"num_train": 8, "num_val": 8, "num_test": 8, "num_test_compositional": 8}


@pytest.fixture(scope="module")
def single() -> SyntheticPairs:
    return SyntheticPairs("test_single", N, seed=4)


def _colours_present(image: np.ndarray) -> set[str]:
    """Object colours with at least one pixel (plain or texture shade)."""
    out = set()
    for name, rgb in COLOURS.items():
        shade = (np.array(rgb) * TEXTURE_SHADE).astype(int)
        if (np.all(image == rgb, -1) | np.all(image == shade, -1)).any():
            out.add(name)
    return out


def test_single_images_hold_one_object_and_labels_match(single):
    for i in range(0, N, 5):
        item = single[i]
        objects = item["attributes"]["objects"]
        assert len(objects) == 1
        obj = objects[0]
        assert _colours_present(np.asarray(item["image"])) == {obj["colour"]}, i
        assert item["label"] == LEAF_CLASSES.index(obj["class"])
        assert single.labels[i] == item["label"]
        assert item["attributes"]["action"] is None


def test_single_attributes_are_random_and_never_held_out(single):
    names = [single[i]["attributes"]["objects"][0] for i in range(N)]
    assert {o["class"] for o in names} == set(LEAF_CLASSES)
    assert {o["colour"] for o in names} == set(COLOURS)
    assert {o["size"] for o in names} == {"small", "large"}
    assert {o["texture"] for o in names} == {"solid", "striped", "dotted"}
    held = {(c, s) for c, s in HELD_OUT_COMBOS}
    assert not any((o["colour"], o["class"]) in held for o in names)
    counts = np.bincount(single.labels, minlength=len(LEAF_CLASSES))
    assert counts.min() >= 10  # 300 draws over 12 classes: 25 expected each


def test_single_ignores_object_count_knobs():
    forced = SyntheticPairs("test_single", 20, seed=4, min_objects=3, max_objects=4)
    plain = SyntheticPairs("test_single", 20, seed=4)
    assert forced.captions == plain.captions
    assert all(len(forced.scene(i).objects) == 1 for i in range(20))


def test_single_split_is_deterministic_and_leaves_other_splits_alone():
    a = build_synthetic(seed=6, num_test_single=30, **SMALL)
    b = build_synthetic(seed=6, num_test_single=30, **SMALL)
    off = build_synthetic(seed=6, num_test_single=0, **SMALL)
    assert a["test_single"].captions == b["test_single"].captions
    assert np.array_equal(np.asarray(a["test_single"][17]["image"]), b["test_single"][17]["image"])
    assert len(off["test_single"]) == 0
    for name in ("train", "val", "test", "test_compositional"):
        assert a[name].captions == off[name].captions, name
    other_seed = build_synthetic(seed=7, num_test_single=30, **SMALL)
    assert a["test_single"].captions != other_seed["test_single"].captions


def test_source_builds_single_zero_shot_set():
    splits = synthetic_splits(seed=2, num_test_single=40, **SMALL)
    names = [s.name for s in splits.test]
    assert names == ["synthetic", "compositional", "finegrained", "single"]
    single = splits.test[-1]
    assert single.num_images == 40 and not single.retrieval
    assert single.class_names == list(LEAF_CLASSES)
    for i in (0, 13, 39):
        item = single.images[i]
        assert item["index"] == i
        assert item["label"] == LEAF_CLASSES.index(
            single.images.source.scene(i).objects[0].shape_name
        )
    assert [s.name for s in splits.val] == ["synthetic"]
    off = synthetic_splits(seed=2, num_test_single=0, **SMALL)
    assert [s.name for s in off.test] == ["synthetic", "compositional", "finegrained"]
    no_comp = synthetic_splits(seed=2, num_test_single=0, **{**SMALL, "num_test_compositional": 0})
    assert [s.name for s in no_comp.test] == ["synthetic", "finegrained"]  # empty split: no set


def test_single_size_defaults_to_num_test_and_is_validated():
    assert len(build_synthetic(seed=0, **SMALL)["test_single"]) == SMALL["num_test"]
    with pytest.raises(ValueError, match="num_test_single"):
        build_synthetic(seed=0, num_test_single=-1, **SMALL)
