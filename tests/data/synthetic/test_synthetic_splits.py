"""Synthetic benchmark: ontology, tags, compositional split, clean evaluation splits."""

from __future__ import annotations

import numpy as np
import pytest

from vlexp.data.synthetic import (
    FAMILIES,
    HELD_OUT_COMBOS,
    LEAF_CLASSES,
    NUM_LEAF_CLASSES,
    SyntheticPairs,
    build_synthetic,
    class_names,
    classification_class_names,
    parents,
    prompt_templates,
)


def test_ontology_layout():
    names, par = class_names(), parents()
    assert names[:NUM_LEAF_CLASSES] == list(LEAF_CLASSES)
    assert names[NUM_LEAF_CLASSES:] == list(FAMILIES)
    assert len(par) == len(names)
    assert np.all(par[NUM_LEAF_CLASSES:] == -1)
    for family, leaves in FAMILIES.items():
        for leaf in leaves:
            assert names[par[names.index(leaf)]] == family
    assert classification_class_names() == list(LEAF_CLASSES)
    assert all(t.count("{}") == 1 for t in prompt_templates())
    assert all(c[0] not in "aeiou" for c in LEAF_CLASSES)  # "a {}" stays grammatical


def test_tag_table_matches_items():
    src = SyntheticPairs("train", 300, seed=4, noisy_caption_frac=0.5)
    table = src.tag_table
    assert table.num_pairs == 300 and table.class_names == class_names()
    assert np.array_equal(table.parents, parents())
    assert table.values.max() < NUM_LEAF_CLASSES
    for i in range(0, 300, 7):
        item = src[i]
        shapes = {o["class"] for o in item["attributes"]["objects"]}
        expected = sorted(LEAF_CLASSES.index(s) for s in shapes)
        assert item["tags"] == expected == table.tags_of(i).tolist()
        assert item["label"] == src.labels[i]


def _combos(source) -> list[set[tuple[str, str]]]:
    out = []
    for i in range(len(source)):
        out.append({(o.colour_name, o.shape_name) for o in source.scene(i).objects})
    return out


def test_compositional_combos_only_in_compositional_split():
    splits = build_synthetic(
        seed=9, num_train=1500, num_val=300, num_test=300, num_test_compositional=300
    )
    held = set(HELD_OUT_COMBOS)
    for name in ("train", "val", "test"):
        assert all(not (c & held) for c in _combos(splits[name])), name
    comp = splits["test_compositional"]
    seen = set()
    for i, combos in enumerate(_combos(comp)):
        present = combos & held
        assert len(present) == 1, (i, combos)
        colour, shape = next(iter(present))
        seen.add((colour, shape))
        caption = comp.captions[i]
        # The caption names the held-out object with its colour.
        assert any(f"{colour} {t}{shape}" in caption for t in ("", "solid ", "striped ", "dotted "))
    assert seen == held
    # Each held-out class and colour still occurs in training, just not together.
    train_combos = set().union(*_combos(splits["train"]))
    for colour, shape in held:
        assert any(c == colour for c, _ in train_combos)
        assert any(s == shape for _, s in train_combos)


def test_noise_knobs_leave_evaluation_splits_clean():
    knobs = {
        "noisy_caption_frac": 0.5,
        "low_complexity_frac": 0.5,
        "text_in_image_frac": 0.5,
        "random_text_frac": 0.5,
    }
    noisy = build_synthetic(
        seed=1, num_train=200, num_val=200, num_test=200, num_test_compositional=100, **knobs
    )
    clean = build_synthetic(
        seed=1, num_train=200, num_val=200, num_test=200, num_test_compositional=100
    )
    for name in ("val", "test", "test_compositional"):
        assert noisy[name].captions == clean[name].captions
        assert not noisy[name].noisy.any() and not noisy[name].text_in_image.any()
        assert np.array_equal(
            np.asarray(noisy[name][3]["image"]), np.asarray(clean[name][3]["image"])
        )
    assert noisy["train"].noisy.mean() > 0.3


@pytest.mark.parametrize("k", [1, 4, 8])
def test_fine_grained_sets(k):
    src = SyntheticPairs("test", 60, seed=2)
    for i in range(60):
        true, false = src.fine_grained(i, k)
        assert len(false) == k == len(set(false)) and true not in false
        assert src.fine_grained(i, k) == (true, false)  # seeded per pair
