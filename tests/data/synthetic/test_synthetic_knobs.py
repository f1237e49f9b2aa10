"""Synthetic benchmark: the knobs do what they say, in the shares they say (2000 pairs)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from vlexp.data.synthetic import LEAF_CLASSES, SyntheticPairs, build_synthetic
from vlexp.data.synthetic.ontology import RANDOM_WORDS

N = 2000
TOL = 0.04  # a binomial share of 2000 has standard deviation <= 0.011


def _black_pixels(image) -> int:
    """Text is drawn on pure-black boxes; nothing else in an image is pure black."""
    return int(np.all(np.asarray(image) == 0, -1).sum())


def test_noisy_captions_share_and_truth():
    clean = SyntheticPairs("train", N, seed=11)
    noisy = SyntheticPairs("train", N, seed=11, noisy_caption_frac=0.3)
    flags = noisy.noisy
    assert abs(flags.mean() - 0.3) < TOL
    clean_set = set(clean.captions)
    swapped = [noisy.captions[i] != clean.captions[i] for i in np.flatnonzero(flags)]
    assert np.mean(swapped) > 0.95  # another pair's caption (rarely the same words)
    assert all(noisy.captions[i] in clean_set for i in np.flatnonzero(flags))
    assert all(noisy.captions[i] == clean.captions[i] for i in np.flatnonzero(~flags))
    # Tags stay the image's truth.
    assert np.array_equal(noisy.tag_table.values, clean.tag_table.values)
    i = int(np.flatnonzero(flags)[0])
    assert noisy[i]["noisy"] is True and noisy[i]["tags"] == clean[i]["tags"]


def test_low_complexity_captions_are_bare_noun_phrases():
    src = SyntheticPairs("train", N, seed=12, low_complexity_frac=0.25)
    low = src.low_complexity
    assert abs(low.mean() - 0.25) < TOL
    for i in np.flatnonzero(low):
        m = re.fullmatch(r"a (\w+)", src.captions[i])
        assert m and m.group(1) == LEAF_CLASSES[src.labels[i]], src.captions[i]
        assert src.caption_complexity[i] == 0
    assert np.mean([len(c.split()) > 2 for c in np.array(src.captions)[~low]]) > 0.9


def test_text_in_image_share_and_pixels():
    src = SyntheticPairs("train", N, seed=13, text_in_image_frac=0.3)
    flags = src.text_in_image
    assert abs(flags.mean() - 0.3) < TOL
    for i in range(40):
        with_text, without = src[i]["image"], src.render(i, with_text=False)
        assert src[i]["attributes"]["text_in_image"] == flags[i]
        if flags[i]:
            assert _black_pixels(with_text) > 30
            assert not np.array_equal(np.asarray(with_text), np.asarray(without))
        else:
            assert _black_pixels(with_text) == 0
            assert np.array_equal(np.asarray(with_text), np.asarray(without))


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary missing")
def test_text_in_image_is_readable_at_224_px():
    from vlexp.filters.cat.text_spotting import ocr_words, text_overlap

    src = SyntheticPairs("train", 12, seed=14, image_size=224, text_in_image_frac=1.0)
    plain = SyntheticPairs("train", 12, seed=14, image_size=224)
    read = ocr_words([src[i]["image"] for i in range(12)])
    overlaps = [text_overlap(c, w) for c, w in zip(src.captions, read)]
    assert np.mean(overlaps) > 0.75, list(zip(src.captions, read))
    read_plain = ocr_words([plain[i]["image"] for i in range(12)])
    assert np.mean([text_overlap(c, w) for c, w in zip(plain.captions, read_plain)]) < 0.1


def test_action_share_among_multi_object_scenes():
    src = SyntheticPairs("train", N, seed=15, action_frac=0.5)
    scenes = [src.scene(i) for i in range(N)]
    multi = [s for s in scenes if len(s.objects) >= 2]
    assert all(s.action is None for s in scenes if len(s.objects) == 1)
    assert abs(np.mean([s.action is not None for s in multi]) - 0.5) < TOL
    default = SyntheticPairs("train", N, seed=15)
    multi = [default.scene(i) for i in range(N) if len(default.scene(i).objects) >= 2]
    assert abs(np.mean([s.action is not None for s in multi]) - 0.2) < TOL


def test_random_text_share_and_words():
    src = SyntheticPairs("train", N, seed=16, random_text_frac=0.3)
    infos = [src.info(i) for i in range(N)]
    has_words = np.array([bool(info.random_words) for info in infos])
    assert abs(has_words.mean() - 0.3) < TOL
    for i in range(30):
        item = src[i]
        words = item["attributes"]["random_words"]
        assert bool(words) == has_words[i]
        assert all(w in RANDOM_WORDS and w not in item["caption"].split() for w in words)
        assert (_black_pixels(item["image"]) > 10) == bool(words)


def test_object_count_range():
    src = SyntheticPairs("val", 300, seed=17, min_objects=2, max_objects=3)
    counts = [len(src.scene(i).objects) for i in range(300)]
    assert set(counts) == {2, 3}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"noisy_caption_frac": 1.5}, r"noisy_caption_frac=1\.5 .*\[0, 1\]"),
        ({"low_complexity_frac": -0.1}, r"low_complexity_frac=-0\.1"),
        ({"text_in_image_frac": "0.2"}, r"text_in_image_frac='0\.2'"),
        ({"random_text_frac": True}, r"random_text_frac=True"),
        ({"action_frac": 2}, r"action_frac=2 "),
        ({"image_size": 8}, r"image_size=8 .*\[16, 1024\]"),
        ({"image_size": 64.5}, r"image_size=64\.5"),
        ({"min_objects": 0}, r"min_objects=0 .*\[1, 4\]"),
        ({"max_objects": 5}, r"max_objects=5 .*\[1, 4\]"),
        ({"min_objects": 3, "max_objects": 2}, r"max_objects=2 .*\[3, 4\]"),
        ({"seed": -1}, r"seed=-1"),
        ({"num_train": -5}, r"num_train=-5"),
        ({"num_test_compositional": 2.5}, r"num_test_compositional=2\.5"),
        ({"num_train": 1, "noisy_caption_frac": 0.1}, r"noisy_caption_frac=0\.1 needs at least 2"),
    ],
)
def test_invalid_knobs_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_synthetic(
            **{"num_train": 10, "num_val": 5, "num_test": 5, "num_test_compositional": 5, **kwargs}
        )


def test_invalid_split_raises():
    with pytest.raises(ValueError, match="split='training'"):
        SyntheticPairs("training", 10)
