"""FastAttributes gives the CAT criteria exactly what spaCy's attribute ruler + lemmatizer give.

Oracle: the stock ``en_core_web_sm`` pipeline (``CATFilter(fast_attributes=False,
numpy_gemm=False)``: spaCy's own components and thinc's BLIS matrix products), on
hand-written captions that hit the ruler's exception patterns (auxiliaries, "there is",
contractions, "gonna", determiners used as pronouns, possessives) and on 600 synthetic
captions of every template kind.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("spacy", reason="spaCy is needed for the CAT filter")

from vlexp.data.synthetic import build_synthetic  # noqa: E402
from vlexp.filters.cat.filter import CATFilter  # noqa: E402

HAND_WRITTEN = [
    "a dog chasing a ball",
    "Two men are playing frisbee in the park.",
    "There is a cat on the table",
    "there are two buses parked near a building",
    "I'm gonna go, y'all",
    "let's go to the beach",
    "a man who is riding a horse",
    "The sign says SALE",
    "but he ran",
    "people waiting for the bus at night",
    "a photo of my dog's toy",
    "Do you have it?",
    "it was raining and they had umbrellas",
    "gotta catch 'em all",
    "that is what he did",
    "a cyan cross below a green square",
    "sale",
    "",
]


@pytest.fixture(scope="module")
def captions() -> list[str]:
    splits = build_synthetic(
        seed=3, num_train=600, num_val=0, num_test=0, num_test_compositional=0,
        low_complexity_frac=0.3, text_in_image_frac=0.3, action_frac=0.5,
    )  # fmt: skip
    return HAND_WRITTEN + [splits["train"][i]["caption"] for i in range(600)]


def test_same_pos_dep_and_verb_lemmas_as_the_full_pipeline(captions):
    full = CATFilter(text_spotting=False, fast_attributes=False, numpy_gemm=False).parse(captions)
    fast = CATFilter(text_spotting=False).parse(captions)
    for a, b in zip(full, fast):
        assert [t.text for t in a] == [t.text for t in b]
        for x, y in zip(a, b):
            assert (x.pos_, x.dep_, x.tag_) == (y.pos_, y.dep_, y.tag_), (a.text, x.text)
            if x.pos_ in ("VERB", "AUX"):
                assert x.lemma_ == y.lemma_, (a.text, x.text)


def test_same_cat_decisions_as_the_full_pipeline(captions):
    a = CATFilter(text_spotting=False, fast_attributes=False, numpy_gemm=False).assess(captions)
    b = CATFilter(text_spotting=False).assess(captions)
    np.testing.assert_array_equal(a.complexity, b.complexity)
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.keep, b.keep)
    assert 0 < a.keep.sum() < len(captions)  # both outcomes occur


def test_the_fast_pipeline_skips_the_slow_components():
    f = CATFilter(text_spotting=False)
    assert "attribute_ruler" not in f.nlp.pipe_names and "lemmatizer" not in f.nlp.pipe_names
    full = CATFilter(text_spotting=False, fast_attributes=False)
    assert "attribute_ruler" in full.nlp.pipe_names
    with pytest.raises(TypeError, match="fast_attributes"):
        CATFilter(text_spotting=False, fast_attributes="yes")


def test_numpy_gemm_gives_the_same_parse_as_blis(captions):
    """Matrix products through numpy's BLAS: same tags, heads and labels as thinc's BLIS."""
    blis = CATFilter(text_spotting=False, fast_attributes=False, numpy_gemm=False)
    numpy_ = CATFilter(text_spotting=False, fast_attributes=False, numpy_gemm=True)
    for a, b in zip(blis.parse(captions), numpy_.parse(captions)):
        assert [(t.tag_, t.dep_, t.head.i) for t in a] == [(t.tag_, t.dep_, t.head.i) for t in b]


def test_numpy_gemm_switches_the_layers_ops_and_nothing_else():
    from thinc.api import get_current_ops

    before = get_current_ops()
    on = CATFilter(text_spotting=False, numpy_gemm=True).nlp
    off = CATFilter(text_spotting=False, numpy_gemm=False).nlp
    assert on.get_pipe("tok2vec").model.ops.use_blis is False
    assert off.get_pipe("tok2vec").model.ops.use_blis is True
    assert get_current_ops() is before  # the process-wide default is restored
    with pytest.raises(TypeError, match="numpy_gemm"):
        CATFilter(text_spotting=False, numpy_gemm=1)
