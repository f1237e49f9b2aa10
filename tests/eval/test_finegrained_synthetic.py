"""The synthetic source's `finegrained` test set: detailed captions vs counterfactuals."""

import pytest

from vlexp.data.sources.synthetic import synthetic_splits
from vlexp.data.synthetic import counterfactual_candidates, detailed_caption

SIZES = {
    "num_train": 8,
    "num_val": 4,
    "num_test": 24,
    "num_test_compositional": 4,
    "num_test_single": 0,
}


def test_finegrained_set_is_built_from_the_test_split():
    splits = synthetic_splits(seed=3, finegrained_k=3, **SIZES)
    assert [s.name for s in splits.test] == ["synthetic", "compositional", "finegrained"]
    fg = splits.test[2]
    test_pairs = splits.test[0].images.source
    assert fg.num_images == 24 and not fg.retrieval and not fg.class_names
    assert fg.caption_image.tolist() == list(range(24))
    for i in range(24):
        scene = test_pairs.scene(i)
        true = detailed_caption(scene)
        assert true.holds(scene) and fg.captions[i] == true.text
        false = fg.distractors[i]
        assert len(false) == 3 and len(set(false)) == 3 and true.text not in false
        # each distractor is one of the scene's checked-false one-change variants
        assert set(false) <= set(counterfactual_candidates(scene))
        assert fg.images[i]["index"] == i and fg.images[i]["label"] == int(test_pairs.labels[i])


def test_finegrained_set_is_deterministic_and_optional():
    a = synthetic_splits(seed=1, **SIZES).test[2]
    b = synthetic_splits(seed=1, **SIZES).test[2]
    assert a.distractors == b.distractors and len(a.distractors[0]) == 4  # default k = 4
    assert [s.name for s in synthetic_splits(seed=1, finegrained_k=0, **SIZES).test] == [
        "synthetic",
        "compositional",
    ]


@pytest.mark.parametrize("k", [11, -1, 2.5, True])
def test_invalid_k_is_explained(k):
    with pytest.raises(ValueError, match=r"finegrained_k=.* integer in \[0, 10\]"):
        synthetic_splits(seed=0, finegrained_k=k, **SIZES)


def test_ten_distractors_always_exist():
    """k = 10 (the documented maximum) works even for one-object scenes."""
    sizes = {**SIZES, "num_test": 40}
    fg = synthetic_splits(seed=0, finegrained_k=10, min_objects=1, max_objects=1, **sizes).test[2]
    assert all(len(d) == 10 for d in fg.distractors)
