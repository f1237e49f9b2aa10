"""Each CAT criterion drops exactly the captions / images labelled by hand as failing it.

Labels were written from the definitions (vlexp/filters/cat/complexity.py, action.py,
text_spotting.py), not from the filter's output: "complex" means some object of the
scene has two links (attributes or relations) or two scene objects are related; a
picture noun framing its content ("a photo of ...") is no object of the scene.
"""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont

from vlexp.filters import FILTERS

pytest.importorskip("spacy", reason="spaCy is needed for the CAT caption criteria")

ONLY = {"complexity": False, "action": False, "text_spotting": False}

# caption, complex enough (complexity >= 2), has an action
CAPTIONS = [
    ("cat", False, False),
    ("a photo of a cat", False, False),
    ("a close-up of a hamburger", False, False),
    ("a black and white photo of a dog", False, False),
    ("an illustration of a lion", False, False),
    ("a photo showing a cat", False, False),
    ("a picture of a red car", False, False),  # one attribute
    ("a brown dog", False, False),
    ("a group of people", False, False),  # "group" counts the people, like a numeral
    ("Buy now", False, False),
    ("a dog running", False, True),
    ("a woman smiling", False, True),
    ("image of a man jumping", False, True),
    ("a dog on a beach", True, False),
    ("a photo of a cat on a sofa", True, False),
    ("a small brown dog on a red couch", True, False),
    ("a red car parked on the street", True, False),  # a parked car does nothing
    ("a woman's hat", True, False),
    ("a bowl of fruit on a wooden table", True, False),
    ("a man riding a horse", True, True),
    ("a dog chasing a ball on the beach", True, True),
    ("two people sitting at a table with food", True, True),
    ("a group of kids playing soccer in a park", True, True),
    ("a herd of cattle grazing in a field", True, True),
    ("a girl eating an ice cream cone", True, True),
    ("stock photo: a young businessman talking on the phone", True, True),
    ("people walking down a busy street", True, True),
]

# caption, text written in the image, caption mostly spelled out in the image
IMAGES = [
    ("sale", "SALE", True),
    ("big sale today", "BIG SALE TODAY", True),
    ("welcome to paris", "WELCOME TO PARIS", True),
    ("happy birthday mom", "HAPPY BIRTHDAY", True),  # 2 of 3 content words
    ("open 24 hours", "OPEN 24 HOURS", True),
    ("a dog on a beach", "SALE", False),
    ("a red stop sign", "STOP", False),  # 1 of 3 content words
    ("a man holding a sign", "", False),
    ("a cat sleeping on a sofa", "CAT", False),
    ("a coffee shop at night", "COFFEE", False),
]


def _render(text: str) -> Image.Image:
    """White 448x224 image with ``text`` in black (one word per line when long)."""
    img = Image.new("RGB", (448, 224), "white")
    if text:
        lines = text.replace(" ", "\n") if len(text) > 14 else text
        font = ImageFont.load_default(size=36)
        ImageDraw.Draw(img).multiline_text((20, 30), lines, fill="black", font=font, spacing=8)
    return img


def _dropped(opts: dict, captions: list[str], images=None) -> list[str]:
    flt = FILTERS.build({"name": "cat", **ONLY, **opts})
    keep, _ = flt.decide(captions, images)
    return [c for c, k in zip(captions, keep) if not k]


def test_complexity_drops_exactly_the_simple_captions():
    caps = [c for c, _, _ in CAPTIONS]
    expected = [c for c, is_complex, _ in CAPTIONS if not is_complex]
    assert _dropped({"complexity": True, "min_complexity": 2}, caps) == expected


def test_a_photo_of_a_cat_fails_complexity_at_any_positive_threshold():
    for threshold in (1, 2):
        assert _dropped({"complexity": True, "min_complexity": threshold}, ["a photo of a cat"])


def test_action_drops_exactly_the_captions_without_an_action():
    caps = [c for c, _, _ in CAPTIONS]
    expected = [c for c, _, action in CAPTIONS if not action]
    assert _dropped({"action": True}, caps) == expected


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary missing")
def test_text_spotting_drops_exactly_the_spelled_out_captions():
    caps = [c for c, _, _ in IMAGES]
    images = [_render(t) for _, t, _ in IMAGES]
    expected = [c for c, _, spelled in IMAGES if spelled]
    assert _dropped({"text_spotting": True}, caps, images) == expected


def test_all_caption_criteria_report_the_first_failure():
    flt = FILTERS.build({"name": "cat", "text_spotting": False})
    caps = [c for c, _, _ in CAPTIONS]
    _, reasons = flt.decide(caps)
    expected = [
        "complexity" if not is_complex else "action" if not action else None
        for _, is_complex, action in CAPTIONS
    ]
    assert reasons == expected


def test_docs_table_is_the_commands_output():
    from pathlib import Path

    from vlexp.filters.cat.examples import EXAMPLE_CAPTIONS, markdown_table

    doc = (Path(__file__).resolve().parents[3] / "docs" / "FILTER_PASS.md").read_text()
    table = doc.split("<!-- cat-examples:begin -->")[1].split("<!-- cat-examples:end -->")[0]
    assert table.strip() == markdown_table(EXAMPLE_CAPTIONS).strip()
    assert "| a photo of a cat | cat | 0 | drop | no | drop (complexity) |" in table
