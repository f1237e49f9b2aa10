"""Shop boilerplate scores complexity 0 in CAT, and scene captions with shop words do not.

Labelled by hand from the definition (vlexp/filters/cat/boilerplate.py): a caption that
carries a price, a percentage or a sales phrase sells rather than describes.
"""

from __future__ import annotations

import pytest

from vlexp.filters import FILTERS
from vlexp.filters.cat.boilerplate import is_boilerplate

# caption, is shop boilerplate
LABELLED = [
    ("Sale! 50% off all summer dresses", True),
    ("Free shipping on orders over $50", True),
    ("Women's leather handbag, only $29.99", True),
    ("Men's running shoes 19.99 EUR", True),
    ("Oak dining table 1,299.00 $", True),
    ("Up to 70 percent off outdoor furniture", True),
    ("Buy 2, get 1 free on all t-shirts", True),
    ("Use coupon code SAVE10 at checkout", True),
    ("New arrivals in stock - shop now", True),
    ("Flash sale on garden tools this weekend", True),
    ("a garage sale on a sunny street", False),
    ("a red for sale sign in front of a house", False),
    ("a man holding a $20 bill", False),
    ("a pile of 5 euro notes on a table", False),
    ("shipping containers stacked at a port", False),
    ("a woman at the checkout counter of a supermarket", False),
    ("a low clearance sign on a bridge", False),
    ("two dogs playing in 3 inches of snow", False),
    ("a small brown dog on a red couch", False),
]


@pytest.mark.parametrize(("caption", "boilerplate"), LABELLED)
def test_boilerplate_labels(caption: str, boilerplate: bool) -> None:
    assert is_boilerplate(caption) is boilerplate


def test_complexity_drops_boilerplate_that_parses_as_complex() -> None:
    pytest.importorskip("spacy", reason="spaCy is needed for the CAT complexity criterion")
    only = {"name": "cat", "action": False, "text_spotting": False, "min_complexity": 2}
    caps = [c for c, _ in LABELLED]
    keep_off = FILTERS.build({**only, "shop_boilerplate": False}).assess(caps)
    keep_on = FILTERS.build(only).assess(caps)
    for i, (caption, boilerplate) in enumerate(LABELLED):
        if boilerplate:
            assert keep_on.complexity[i] == 0 and not keep_on.keep[i], caption
            assert keep_on.reasons[i] == "complexity"
        else:  # scene captions keep their graph's complexity
            assert keep_on.complexity[i] == keep_off.complexity[i], caption
    # without the rule, boilerplate parses as complex: these would pass CAT complexity
    passed_before = [c for (c, b), k in zip(LABELLED, keep_off.keep) if b and k]
    assert "Free shipping on orders over $50" in passed_before
    assert len(passed_before) >= 5, passed_before


def test_the_option_is_validated_by_the_schema() -> None:
    errors = FILTERS.config_errors({"name": "cat", "shop_boilerplate": "yes"}, "filter")
    assert errors == ["filter.shop_boilerplate=yes: expected true/false"]
