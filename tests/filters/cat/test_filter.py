"""The registered CAT filter: criteria order, options, pickling, rendered-image answers."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from vlexp.filters import FILTERS

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract binary missing: apt-get install -y tesseract-ocr tesseract-ocr-eng",
)
needs_spacy = pytest.mark.skipif(
    __import__("importlib").util.find_spec("spacy") is None,
    reason="spaCy missing: pip install 'vlexp[cat]'",
)


def render(text: str = "") -> Image.Image:
    img = Image.new("RGB", (224, 224), "white")
    if text:
        ImageDraw.Draw(img).text((20, 80), text, fill="black", font=ImageFont.load_default(size=48))
    return img


CAPTIONS_ONLY = {"name": "cat", "text_spotting": False}


@needs_spacy
def test_caption_criteria_and_first_failing_reason():
    flt = FILTERS.build(CAPTIONS_ONLY)
    assert flt.needs_images is False
    caps = [
        "a dog",  # complexity 0 -> complexity
        "a photo of a cat",  # the photo frames the cat: complexity 0 -> complexity
        "a cat on a sofa",  # complexity 2, no verb -> action
        "a dog chasing a ball on the beach",  # kept
        "a brown dog",  # complexity 1 (and no action): first failure is complexity
        "a man is riding a horse",  # kept
    ]
    keep, reasons = flt.decide(caps)
    assert keep.tolist() == [False, False, False, True, False, True]
    assert reasons == ["complexity", "complexity", "action", None, "complexity", None]


@needs_spacy
def test_thresholds_and_switches():
    caps = ["a brown dog", "a dog running"]
    keep, _ = FILTERS.build({**CAPTIONS_ONLY, "min_complexity": 1}).decide(caps)
    assert keep.tolist() == [False, True]  # "a brown dog" has no action
    keep, reasons = FILTERS.build({**CAPTIONS_ONLY, "min_complexity": 1, "action": False}).decide(
        caps
    )
    assert keep.tolist() == [True, True] and reasons == [None, None]
    keep, reasons = FILTERS.build({**CAPTIONS_ONLY, "complexity": False}).decide(caps)
    assert keep.tolist() == [False, True] and reasons == ["action", None]


@needs_spacy
def test_pickled_filter_reloads_its_model_lazily():
    flt = FILTERS.build(CAPTIONS_ONLY)
    caps = ["a dog", "two people sitting at a table with food"]
    expected = flt.decide(caps)
    assert flt._nlp is not None
    copy = pickle.loads(pickle.dumps(flt))
    assert copy._nlp is None
    keep, reasons = copy.decide(caps)
    assert keep.tolist() == expected[0].tolist() and reasons == expected[1]


@needs_tesseract
def test_sale_image_drops_sale_caption_and_keeps_dog_on_beach():
    flt = FILTERS.build({"name": "cat", "complexity": False, "action": False})
    assert flt.needs_images is True
    sale = render("SALE")
    keep, reasons = flt.decide(["sale", "a dog on a beach", "SALE today"], [sale, sale, sale])
    assert keep.tolist() == [False, True, False]
    assert reasons == ["text_spotting", None, "text_spotting"]


@needs_tesseract
def test_image_without_text_keeps_everything():
    flt = FILTERS.build({"name": "cat", "complexity": False, "action": False})
    caps = ["sale", "a dog on a beach", "hello world"]
    keep, reasons = flt.decide(caps, [render()] * 3)
    assert keep.all() and reasons == [None, None, None]


@needs_tesseract
@needs_spacy
def test_all_criteria_ocr_only_pairs_still_kept():
    flt = FILTERS.build({"name": "cat", "max_text_overlap": 0.4})
    caps = ["a dog", "a dog chasing a ball on the beach", "a man selling sale tickets"]
    a = flt.assess(caps, [render("SALE")] * 3)
    assert a.reasons == ["complexity", None, None]
    assert np.isnan(a.overlap[0])  # not OCR'd: already dropped
    assert a.overlap[1] == 0.0
    assert a.overlap[2] == pytest.approx(1 / 4)  # man, selling, sale, tickets


def test_text_spotting_needs_images():
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract binary missing: apt-get install -y tesseract-ocr tesseract-ocr-eng")
    flt = FILTERS.build({"name": "cat", "complexity": False, "action": False})
    with pytest.raises(ValueError, match="needs the images"):
        flt.decide(["sale"])
    with pytest.raises(ValueError, match="1 captions but 2 images"):
        flt.decide(["sale"], [render(), render()])


@pytest.mark.parametrize(
    ("opts", "err", "msg"),
    [
        ({"min_complexity": -1}, ValueError, "min_complexity"),
        ({"min_complexity": 1.5}, ValueError, "min_complexity"),
        ({"max_text_overlap": 0.0}, ValueError, r"\(0, 1\]"),
        ({"max_text_overlap": 1.5}, ValueError, r"\(0, 1\]"),
        ({"action": "yes"}, TypeError, "true or false"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"n_process": 0}, ValueError, "n_process"),
        ({"ocr_psm": 14}, ValueError, "ocr_psm"),
        ({"threshold": 2}, TypeError, "accepted options"),
    ],
)
def test_invalid_options_are_clear_errors(opts, err, msg):
    with pytest.raises(err, match=msg):
        FILTERS.build(
            {"name": "cat", "complexity": False, "action": False, "text_spotting": False, **opts}
        )


def test_missing_tesseract_fails_at_construction():
    with pytest.raises(RuntimeError, match="apt-get install -y tesseract-ocr tesseract-ocr-eng"):
        FILTERS.build(
            {"name": "cat", "complexity": False, "action": False, "tesseract": "vlexp-no-such-ocr"}
        )


def test_missing_spacy_model_is_a_clear_error():
    with pytest.raises(RuntimeError, match="vlexp\\[cat\\]"):
        FILTERS.build({**CAPTIONS_ONLY, "spacy_model": "vlexp_no_such_model"})


def test_registry_import_works_without_spacy():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'spacy' or name.startswith('spacy.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from vlexp.filters import FILTERS\n"
        "assert 'cat' in FILTERS.names()\n"
        "try:\n"
        "    FILTERS.build({'name': 'cat', 'text_spotting': False})\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "need spaCy" in out.stdout and "vlexp[cat]" in out.stdout
