"""Synthetic benchmark: pairs are a pure function of (seed, split, index)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from vlexp.data.synthetic import SyntheticPairs, build_synthetic
from vlexp.data.types import PairSource

NOISY = {
    "noisy_caption_frac": 0.3,
    "low_complexity_frac": 0.2,
    "text_in_image_frac": 0.3,
    "random_text_frac": 0.3,
}


def _pixels(source, i):
    return np.asarray(source[i]["image"])


def test_same_seed_same_captions_and_pixels():
    a = SyntheticPairs("train", 200, seed=3, **NOISY)
    b = SyntheticPairs("train", 200, seed=3, **NOISY)
    assert a.captions == b.captions
    for i in (0, 17, 199):
        assert np.array_equal(_pixels(a, i), _pixels(b, i))
        assert a[i]["caption"] == b[i]["caption"]
        assert a[i]["tags"] == b[i]["tags"]


def test_different_seed_or_split_differs():
    a = SyntheticPairs("train", 200, seed=3)
    b = SyntheticPairs("train", 200, seed=4)
    v = SyntheticPairs("val", 200, seed=3)
    assert sum(x != y for x, y in zip(a.captions, b.captions)) > 150
    assert sum(x != y for x, y in zip(a.captions, v.captions)) > 150
    assert not np.array_equal(_pixels(a, 0), _pixels(b, 0))


def test_access_order_and_worker_copies_do_not_matter():
    src = SyntheticPairs("train", 300, seed=1, **NOISY)
    order = np.random.default_rng(0).permutation(300)[:40]
    shuffled = {int(i): src[int(i)] for i in order}
    fresh = SyntheticPairs("train", 300, seed=1, **NOISY)  # no cached table yet
    clone = pickle.loads(pickle.dumps(fresh))  # what a loader worker gets
    for i, item in sorted(shuffled.items()):
        for other in (fresh[i], clone[i]):
            assert other["caption"] == item["caption"]
            assert other["noisy"] == item["noisy"]
            assert np.array_equal(np.asarray(other["image"]), np.asarray(item["image"]))
    # The cached caption list (one pass, no rendering) agrees with per-item captions.
    caps = fresh.captions
    assert all(caps[i] == item["caption"] for i, item in shuffled.items())


def test_split_sizes_item_layout_and_protocol():
    splits = build_synthetic(
        seed=0, num_train=50, num_val=20, num_test=30, num_test_compositional=10
    )
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 50,
        "val": 20,
        "test": 30,
        "test_compositional": 10,
        "test_single": 30,  # as many as num_test by default
    }
    item = splits["train"][7]
    assert set(item) >= {"image", "caption", "tags", "label", "index", "noisy", "attributes"}
    assert item["image"].mode == "RGB" and item["image"].size == (64, 64)
    assert item["index"] == 7 and item["noisy"] is False
    assert isinstance(splits["train"], PairSource)
    with pytest.raises(IndexError):
        splits["train"][50]


def test_knob_values_do_not_change_the_scenes():
    plain = SyntheticPairs("train", 100, seed=2, action_frac=0.0)
    noisy = SyntheticPairs("train", 100, seed=2, action_frac=1.0, **NOISY)
    for i in range(100):
        a, b = plain.scene(i), noisy.scene(i)
        assert a.objects == b.objects
