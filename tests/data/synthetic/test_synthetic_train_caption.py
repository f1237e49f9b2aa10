"""The `train_caption` knob: `detailed` names every object; `sampled` (default) is unchanged.

The detailed oracle spells each object's full phrase from the scene's plain-name
description; the default oracle recomputes pairs through the low-level scene and caption
functions, plus captions recorded before the knob existed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlexp.data.sources.synthetic import synthetic_splits
from vlexp.data.synthetic import SyntheticPairs, build_synthetic, sample_caption, sample_scene
from vlexp.data.synthetic.ontology import article
from vlexp.data.synthetic.scene import MAX_OBJECTS

N = 200
SMALL = {"num_val": 8, "num_test": 8, "num_test_compositional": 8, "num_test_single": 8}


def _phrase(obj: dict) -> str:
    words = f"{obj['size']} {obj['colour']} {obj['texture']} {obj['class']}"
    return f"{article(words)} {words}"


def test_detailed_captions_name_every_object_with_all_attributes():
    src = SyntheticPairs("train", N, seed=8, train_caption="detailed")
    counts = set()
    for i in range(N):
        objects = src[i]["attributes"]["objects"]
        caption = src.captions[i]
        counts.add(len(objects))
        for obj in objects:
            assert _phrase(obj) in caption, (caption, obj)
        mentioned = re.findall(r"\ban? (?:small|large) ", caption)
        assert len(mentioned) == len(objects), caption
    assert counts == set(range(1, MAX_OBJECTS + 1))


def test_detailed_keeps_scenes_and_leaves_eval_splits_sampled():
    sampled = build_synthetic(seed=5, num_train=60, **SMALL)
    detailed = build_synthetic(seed=5, num_train=60, train_caption="detailed", **SMALL)
    assert np.array_equal(sampled["train"].tag_table.values, detailed["train"].tag_table.values)
    assert np.array_equal(
        np.asarray(sampled["train"][9]["image"]), np.asarray(detailed["train"][9]["image"])
    )
    assert sampled["train"].captions != detailed["train"].captions
    for name in ("val", "test", "test_compositional", "test_single"):
        assert sampled[name].captions == detailed[name].captions, name


def test_detailed_with_noise_swaps_detailed_captions():
    clean = SyntheticPairs("train", 300, seed=3, train_caption="detailed")
    noisy = SyntheticPairs("train", 300, seed=3, train_caption="detailed", noisy_caption_frac=0.3)
    assert noisy.noisy.any()
    assert set(noisy.captions) <= set(clean.captions)


def _low_level(seed: int, i: int) -> tuple[str, int]:
    """Caption and label of train pair ``i`` under the default knobs, step by step."""
    rng = np.random.default_rng([seed, 0, i])
    rng.random(5)  # the pair's knob draws come first
    scene = sample_scene(rng, 1, MAX_OBJECTS, 0.2)
    return sample_caption(scene, rng).text, scene.label


def test_default_output_unchanged():
    src = SyntheticPairs("train", 40, seed=3)
    assert src.train_caption == "sampled"
    for i in range(40):
        assert (src.captions[i], int(src.labels[i])) == _low_level(3, i)
    # Recorded before the knob existed (build_synthetic(seed=3), first train pairs).
    assert src.captions[:3] == [
        "an orange circle jumping over a large green striped ring",
        "a large blue circle and a small cyan ring",
        "a yellow diamond",
    ]


def test_source_passes_train_caption_through():
    splits = synthetic_splits(seed=1, num_train=20, train_caption="detailed", **SMALL)
    assert splits.train.train_caption == "detailed"
    assert (
        splits.train.captions
        == SyntheticPairs("train", 20, seed=1, train_caption="detailed").captions
    )


def test_bad_train_caption_is_one_clear_error():
    with pytest.raises(ValueError, match="train_caption='full' is invalid"):
        SyntheticPairs("train", 4, train_caption="full")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source.train_caption=full", "data.source.train_caption=full: expected one of"),
        ("data.source.num_test_single=-1", "data.source.num_test_single=-1: expected an integer"),
    ],
)
def test_config_rejects_bad_knobs_in_one_line(make_cfg, override, message):
    from vlexp.config import ConfigError, validate_config

    validate_config(make_cfg(["data.source.train_caption=detailed"]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(make_cfg([override]))
