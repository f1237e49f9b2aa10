"""Caption complexity (CAT filter): hand-derived graph degrees of hand-written captions."""

from __future__ import annotations

import pytest

pytest.importorskip("spacy", reason="spaCy is needed for the CAT complexity criterion")

from vlexp.filters.cat.complexity import caption_complexity, caption_graph  # noqa: E402
from vlexp.filters.cat.filter import load_spacy  # noqa: E402


@pytest.fixture(scope="module")
def nlp():
    return load_spacy()


# Expected values worked out by hand from the rules in vlexp/filters/cat/complexity.py:
# attribute -> 1 edge on its object; a relation node has one edge per object it links.
CASES = [
    ("a dog", 0),
    ("cat", 0),
    ("a brown dog", 1),  # dog-brown
    ("a coffee cup", 1),  # compound noun as attribute
    ("two dogs", 1),  # numeral
    ("the dog is brown", 1),  # predicative adjective
    ("a dog running", 1),  # intransitive verb: one edge on its subject
    ("a dog on a beach", 2),  # relation "on": dog, beach
    ("a brown and white dog", 2),  # coordinated adjectives
    ("three red apples", 2),
    ("a woman's hat", 2),  # possessive relation
    ("a man is riding a horse", 2),  # riding: man, horse
    ("a small brown dog on a red couch", 3),  # dog: small, brown, on
    ("a table with plates and cups", 3),  # with: table, plates, cups
    ("two people sitting at a table with food", 3),  # people: two, sit at, sit with
    # picture nouns frame their content and are not objects; quantity nouns are attributes
    ("a photo of a cat", 0),
    ("a black and white photo of a dog", 0),  # the photo's colours are not the dog's
    ("a photo showing a cat", 0),
    ("a picture of a red car", 1),  # car: red
    ("a group of people", 1),  # people: group
    ("a photo of a cat on a sofa", 2),  # on: cat, sofa (hangs from "photo" in the parse)
    ("a man taking a photo of a dog", 2),  # taking: man, dog
    ("a cup of coffee", 2),  # a cup is an object: of: cup, coffee
    ("a herd of cattle grazing in a field", 2),  # cattle: herd, graze in
]


@pytest.mark.parametrize(("caption", "expected"), CASES)
def test_complexity_of_hand_written_captions(nlp, caption, expected):
    assert caption_complexity([nlp(caption)]).tolist() == [expected]


def test_graph_of_a_small_brown_dog_on_a_red_couch(nlp):
    g = caption_graph(nlp("a small brown dog on a red couch"))
    kinds = {}
    for kind, text in g.nodes:
        kinds.setdefault(kind, set()).add(text)
    assert kinds == {
        "object": {"dog", "couch"},
        "attribute": {"small", "brown", "red"},
        "relation": {"on"},
    }
    assert len(g.edges) == 5  # small, brown, red, on-dog, on-couch
    deg = dict(zip([t for _, t in g.nodes], g.degrees().tolist()))
    assert deg == {"small": 1, "brown": 1, "red": 1, "dog": 3, "couch": 2, "on": 2}
    assert g.complexity == 3


def test_name_parts_are_not_objects(nlp):
    g = caption_graph(nlp("New York City skyline at night"))
    objects = {t for k, t in g.nodes if k == "object"}
    assert "New" not in objects and "York" not in objects
    assert {"skyline", "night"} <= objects


def test_batch_and_empty_caption(nlp):
    docs = list(nlp.pipe(["", "a dog", "a brown dog"]))
    out = caption_complexity(docs)
    assert out.dtype.kind == "i" and out.tolist() == [0, 0, 1]


def test_graph_of_a_photo_of_a_cat_on_a_sofa(nlp):
    g = caption_graph(nlp("a photo of a cat on a sofa"))
    assert sorted(g.nodes) == [("object", "cat"), ("object", "sofa"), ("relation", "on")]
    degree = {text: d for (_, text), d in zip(g.nodes, g.degrees().tolist())}
    assert degree == {"cat": 1, "sofa": 1, "on": 2} and g.complexity == 2
