"""Action criterion (CAT filter) on hand-written captions in web / COCO styles."""

from __future__ import annotations

import pytest

pytest.importorskip("spacy", reason="spaCy is needed for the CAT action criterion")

from vlexp.filters.cat.action import action_verbs, have_actions  # noqa: E402
from vlexp.filters.cat.filter import load_spacy  # noqa: E402


@pytest.fixture(scope="module")
def nlp():
    return load_spacy()


WITH_ACTION = [
    ("a dog chasing a ball on the beach", "chasing"),  # verb without a subject
    ("a man is riding a horse", "riding"),
    ("two people sitting at a table with food", "sitting"),
    ("a group of kids playing soccer in a park", "playing"),
    ("A man riding a wave on top of a surfboard.", "riding"),
    ("The girl jumps into the lake.", "jumps"),
    ("a man is being chased by a dog", "chased"),  # passive with auxiliary
    ("a boy has thrown a ball", "thrown"),  # perfect with auxiliary
    ("bird flying over the sea at sunset", "flying"),
    ("Stock photo: A young businessman talking on the phone", "talking"),
    ("a man holding an umbrella in the rain", "holding"),
    ("dogs run and play in the snow", "run"),
]

WITHOUT_ACTION = [
    "a photo of a cat",
    "cat",
    "the best sunset",
    "a red car parked on the street",  # bare participle = state (documented decision)
    "a plate filled with food",
    "a photo showing a cat on a sofa",  # picture-content verb
    "t-shirt featuring a skull logo",
    "a dog has a ball",
    "a swimming pool at a hotel",  # gerund used as a noun
    "Buy now",  # imperative boilerplate
    "Click to enlarge",
    "close-up of a hamburger with cheese and lettuce",  # 'lettuce' mis-tagged VB
    "a kitchen with a stove and a refrigerator",
    "New York City skyline at night",
]


@pytest.mark.parametrize(("caption", "verb"), WITH_ACTION)
def test_captions_with_an_action(nlp, caption, verb):
    found = [t.text for t in action_verbs(nlp(caption))]
    assert verb in found


@pytest.mark.parametrize("caption", WITHOUT_ACTION)
def test_captions_without_an_action(nlp, caption):
    assert action_verbs(nlp(caption)) == []


def test_have_actions_batch(nlp):
    caps = [WITH_ACTION[0][0], WITHOUT_ACTION[0], "", WITH_ACTION[1][0]]
    assert have_actions(nlp.pipe(caps)).tolist() == [True, False, False, True]
