"""Ontology loading and caption -> object tags on hand-written captions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import vlexp.data.tags as tags_mod
from vlexp.data.tags import CaptionTagger, Ontology, OntologyClass, pluralize, words

# the 80 COCO categories in the official order (typed from the COCO category list)
COCO_80 = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]

try:
    tags_mod._load_spacy(tags_mod.SPACY_MODEL)  # cached: the taggers below reuse it
    HAVE_SPACY = True
except (ImportError, OSError):
    HAVE_SPACY = False
needs_spacy = pytest.mark.skipif(not HAVE_SPACY, reason="spaCy pipeline not installed")


@pytest.fixture(scope="module")
def coco() -> Ontology:
    return Ontology.load("coco")


@pytest.fixture(scope="module", params=["rules", "auto"])
def tagger(request: pytest.FixtureRequest, coco: Ontology) -> CaptionTagger:
    if request.param == "auto" and not HAVE_SPACY:
        pytest.skip("spaCy pipeline not installed")
    return CaptionTagger(coco, backend=request.param)


# ----------------------------------------------------------------------------- ontology
def test_coco_ontology(coco: Ontology) -> None:
    assert coco.class_names[:80] == COCO_80
    supers = {
        "vehicle",
        "outdoor",
        "animal",
        "accessory",
        "sports",
        "kitchen",
        "food",
        "furniture",
        "electronic",
        "appliance",
        "indoor",
    }
    assert set(coco.class_names[80:]) == supers
    assert coco.parents[coco.index("person")] == -1
    assert coco.class_names[coco.parents[coco.index("dog")]] == "animal"
    assert coco.class_names[coco.parents[coco.index("cell phone")]] == "electronic"
    assert all(coco.parents[i] >= 80 for i in range(1, 80))
    assert all(coco.parents[i] == -1 for i in range(80, 91))
    assert coco.ancestors(coco.index("pizza")) == [coco.index("food")]
    terms = coco.terms()
    assert terms[("hot", "dog")] == coco.index("hot dog")
    assert terms[("people",)] == coco.index("person")
    assert terms[("mice",)] == coco.index("mouse")
    assert ("outdoor",) not in terms  # match_name false


def test_round_trip_and_custom_file(tmp_path: Path, coco: Ontology) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(coco.to_dict()))
    again = Ontology.load(path)
    assert again.class_names == coco.class_names
    np.testing.assert_array_equal(again.parents, coco.parents)
    assert again.terms() == coco.terms()


def test_synthetic_ontology() -> None:
    from vlexp.data.synthetic.ontology import class_names, parents

    o = Ontology.load("synthetic")
    assert o.class_names == class_names()
    np.testing.assert_array_equal(o.parents, parents())
    tagger = CaptionTagger(o, backend="rules")
    assert tagger.tag_names("a red triangle left of two blue circles") == ["triangle", "circle"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"classes": [{"name": "a", "synonyms": ["x"]}, {"name": "b", "synonyms": ["x"]}]},
            "belongs to both",
        ),
        ({"classes": [{"name": "a", "parent": "zzz"}]}, "not a class"),
        ({"classes": [{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}]}, "cycle"),
        ({"classes": [{"name": "a", "colour": "red"}]}, "unknown keys"),
        ({"classes": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"noun_check": ["zebra"], "classes": [{"name": "a"}]}, "noun_check"),
        ({"format": "other/2", "classes": []}, "format"),
        ({"name": "x"}, "classes"),
    ],
)
def test_ontology_validation(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ontology.from_dict(data).terms()


def test_unknown_ontology_name() -> None:
    with pytest.raises(FileNotFoundError, match="coco"):
        Ontology.load("no_such_ontology")


def test_plural_rules() -> None:
    assert [pluralize(w) for w in ["dog", "bus", "box", "bench", "puppy", "toy", "cell phone"]] == [
        "dogs",
        "buses",
        "boxes",
        "benches",
        "puppies",
        "toys",
        "cell phones",
    ]
    assert words("A dog's hot-dog, please.") == ["a", "dog", "'s", "hot", "dog", ",", "please", "."]


# ----------------------------------------------------------------------------- tagging
@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("two dogs chasing a frisbee", ["dog", "frisbee"]),
        ("a man riding a motorbike", ["person", "motorcycle"]),
        ("a cell phone on a table", ["cell phone", "dining table"]),
        ("a mug", ["cup"]),
        ("Two hot dogs next to a teddy bear", ["hot dog", "teddy bear"]),
        ("three mice and two knives", ["mouse", "knife"]),
        ("The geese and the sheep near a fire hydrant", ["bird", "sheep", "fire hydrant"]),
        ("a baby elephant next to its mother", ["elephant"]),
        (
            "A woman talking on her cellphone, holding an umbrella.",
            ["person", "cell phone", "umbrella"],
        ),
        ("a kitchen with a sink, oven and fridge", ["sink", "oven", "refrigerator"]),
        ("an orange on a plate", ["orange"]),
        ("a man tying his tie", ["person", "tie"]),
    ],
)
def test_hand_written_captions(tagger: CaptionTagger, caption: str, expected: list[str]) -> None:
    assert tagger.tag_names(caption) == expected


def test_unmatched_captions_are_counted(tagger: CaptionTagger, coco: Ontology) -> None:
    caps = ["two dogs chasing a frisbee", "a view of the mountains at sunset", "a mug", "blue sky"]
    table = tagger.tag_captions(caps)
    assert table.num_pairs == 4
    assert table.class_names == coco.class_names
    np.testing.assert_array_equal(table.parents, coco.parents)
    assert table.tags_of(1).tolist() == [] and table.tags_of(3).tolist() == []
    assert sorted(table.tags_of(0).tolist()) == sorted([coco.index("dog"), coco.index("frisbee")])
    assert tagger.last_report.num_unmatched == 2
    assert tagger.last_report.unmatched_share == 0.5
    assert tagger.last_report.class_counts[coco.index("cup")] == 1


@needs_spacy
def test_noun_check_uses_spacy(coco: Ontology) -> None:
    caption = "the cat on the sofa is orange"
    assert CaptionTagger(coco, backend="rules").tag_names(caption) == ["cat", "couch", "orange"]
    auto = CaptionTagger(coco, backend="auto")
    assert auto.tag_names(caption) == ["cat", "couch"]  # "orange" is an adjective here
    assert auto.last_report.num_spacy == 1
    auto.tag_names("two dogs chasing a frisbee")  # no noun-check word: rules only
    assert auto.last_report.num_spacy == 0
    full = CaptionTagger(coco, backend="spacy")
    assert full.tag_names(caption) == ["cat", "couch"]
    assert full.tag_names("two dogs chasing a frisbee") == ["dog", "frisbee"]
    assert full.last_report.num_spacy == 1


def test_lemmatize_false_matches_listed_spellings_only(coco: Ontology) -> None:
    t = CaptionTagger(coco, lemmatize=False, backend="rules")
    assert t.tag_names("two dogs and a dog") == ["dog"]
    assert t.tag_names("two dogs") == []
    assert t.tag_names("people") == ["person"]  # listed plural


def test_falls_back_to_rules_without_spacy(monkeypatch: pytest.MonkeyPatch, coco: Ontology) -> None:
    def missing(model: str) -> None:
        raise ImportError("No module named 'spacy'")

    monkeypatch.setattr(tags_mod, "_load_spacy", missing)
    t = CaptionTagger(coco, backend="auto")
    assert t.tag_names("the cat is orange") == ["cat", "orange"]
    assert t.last_report.backend == "rules"
    with pytest.raises(ImportError, match="backend='rules'"):
        CaptionTagger(coco, backend="spacy").tag("a cat")


def test_modifier_rule_can_be_disabled(coco: Ontology) -> None:
    t = CaptionTagger(coco, backend="rules", drop_modifiers=False)
    assert t.tag_names("a baby giraffe") == ["person", "giraffe"]
    assert CaptionTagger(coco, backend="rules").tag_names("a baby giraffe") == ["giraffe"]


def test_custom_ontology_classes() -> None:
    o = Ontology([OntologyClass("animal"), OntologyClass("dog", "animal", ("hound",))])
    t = CaptionTagger(o, backend="rules")
    table = t.tag_captions(["hounds and an animal", "nothing"])
    assert table.tags_of(0).tolist() == [1, 0]
    assert table.parents.tolist() == [-1, 0]


def test_rules_backend_is_fast(coco: Ontology) -> None:
    rng = np.random.default_rng(0)
    parts = [
        "a man",
        "two dogs",
        "a red car",
        "near the",
        "holding a",
        "bowl of",
        "broccoli",
        "cell phone",
        "on a",
        "sunny day",
        "with",
        "kite",
    ]
    caps = [" ".join(rng.choice(parts, 8)) for _ in range(20_000)]
    t = CaptionTagger(coco, backend="rules")
    start = time.perf_counter()
    table = t.tag_captions(caps)
    elapsed = time.perf_counter() - start
    assert table.num_pairs == 20_000
    assert elapsed < 10.0  # about 0.4 s on one core: 100k captions in a few seconds
