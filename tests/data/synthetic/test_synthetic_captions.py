"""Synthetic benchmark: caption text, complexity levels, truth and counterfactuals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlexp.data.synthetic import (
    COLOUR_NAMES,
    LEAF_CLASSES,
    TEXTURES,
    Action,
    CaptionSpec,
    Mention,
    Scene,
    SceneObject,
    SyntheticPairs,
    counterfactual_candidates,
    counterfactual_captions,
    detailed_caption,
)

C = {name: k for k, name in enumerate(LEAF_CLASSES)}
COL = {name: k for k, name in enumerate(COLOUR_NAMES)}
TEX = {name: k for k, name in enumerate(TEXTURES)}

# A hand-made scene: a large red striped circle on the left, a small blue solid star on
# the right, the circle chasing the star.
CIRCLE = SceneObject(C["circle"], COL["red"], 1, TEX["striped"], 0.25, 0.3, 0.2)
STAR = SceneObject(C["star"], COL["blue"], 0, TEX["solid"], 0.75, 0.3, 0.12)
SCENE = Scene((CIRCLE, STAR), Action(0, 0, 1))


@pytest.mark.parametrize(
    ("spec", "text", "complexity"),
    [
        (CaptionSpec("noun", (Mention(0, C["circle"]),)), "a circle", 0),
        (
            CaptionSpec("attributes", (Mention(0, C["circle"], colour=COL["orange"]),)),
            "an orange circle",
            1,
        ),
        (
            CaptionSpec("attributes", (Mention(0, C["circle"], 0, COL["red"], TEX["striped"]),)),
            "a small red striped circle",
            3,
        ),
        (
            CaptionSpec(
                "relation",
                (Mention(0, C["circle"], 0, COL["red"]), Mention(1, C["star"], colour=COL["blue"])),
                "left of",
            ),
            "a small red circle left of a blue star",
            3,
        ),
        (
            CaptionSpec("action", (Mention(0, C["triangle"]), Mention(1, C["square"])), "chasing"),
            "a triangle chasing a square",
            2,
        ),
        (
            CaptionSpec(
                "list",
                (
                    Mention(0, C["circle"], colour=COL["red"]),
                    Mention(1, C["star"], colour=COL["blue"]),
                    Mention(2, C["square"], colour=COL["green"]),
                ),
            ),
            "a red circle, a blue star and a green square",
            1,
        ),
        (
            CaptionSpec(
                "list", (Mention(0, C["star"], colour=COL["orange"]), Mention(1, C["ring"], 1))
            ),
            "an orange star and a large ring",
            1,
        ),
    ],
)
def test_caption_text_and_complexity_by_hand(spec, text, complexity):
    assert spec.text == text
    assert spec.complexity == complexity


def test_truth_of_hand_made_captions():
    red_circle = Mention(0, C["circle"], colour=COL["red"])
    blue_star = Mention(1, C["star"], colour=COL["blue"])
    assert CaptionSpec("relation", (red_circle, blue_star), "left of").holds(SCENE)
    assert not CaptionSpec("relation", (red_circle, blue_star), "right of").holds(SCENE)
    assert not CaptionSpec("relation", (red_circle, blue_star), "above").holds(SCENE)  # same y
    assert CaptionSpec("action", (red_circle, blue_star), "chasing").holds(SCENE)
    assert not CaptionSpec("action", (blue_star, red_circle), "chasing").holds(SCENE)
    assert not CaptionSpec("action", (red_circle, blue_star), "pushing").holds(SCENE)
    assert not CaptionSpec("attributes", (Mention(0, C["circle"], size=0),)).holds(SCENE)
    assert CaptionSpec("list", (blue_star, red_circle)).holds(SCENE)


def test_counterfactuals_of_hand_made_scene():
    assert (
        detailed_caption(SCENE).text == "a large red striped circle chasing a small blue solid star"
    )
    cands = counterfactual_candidates(SCENE)
    # 7 + 7 colours, 1 + 1 sizes, 2 + 2 textures, 1 colour swap, 3 verbs, 1 role swap
    assert len(cands) == 25
    assert "a large blue striped circle chasing a small red solid star" in cands  # binding
    assert "a small blue solid star chasing a large red striped circle" in cands  # roles
    assert "a large red striped circle hitting a small blue solid star" in cands  # verb
    assert "a small red striped circle chasing a small blue solid star" in cands  # size
    out = counterfactual_captions(SCENE, 5, np.random.default_rng(0))
    assert len(set(out)) == 5 and set(out) <= set(cands)
    with pytest.raises(ValueError, match="k=26"):
        counterfactual_captions(SCENE, 26, np.random.default_rng(0))


def test_generated_captions_are_true_lowercase_ascii():
    src = SyntheticPairs("train", 500, seed=21, action_frac=0.5)
    kinds = set()
    for i in range(500):
        info = src.info(i)
        assert info.caption.holds(info.scene), info.caption.text
        assert re.fullmatch(r"[a-z]+(,? [a-z]+)*", info.caption.text), info.caption.text
        kinds.add(info.caption.kind)
    assert kinds == {"noun", "attributes", "list", "relation", "action"}
    assert {int(c) for c in src.caption_complexity} == {0, 1, 2, 3, 4}


def test_counterfactuals_are_false_and_name_the_same_objects():
    src = SyntheticPairs("test", 150, seed=22, action_frac=0.5)
    for i in range(150):
        scene = src.scene(i)
        true = detailed_caption(scene)
        nouns = sorted(m.shape for m in true.mentions)
        for text in counterfactual_candidates(scene):
            assert text != true.text
            named = sorted(C[w] for w in text.split() if w in C)
            assert named == nouns, (true.text, text)
