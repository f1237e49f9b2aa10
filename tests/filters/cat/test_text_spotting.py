"""Text-spotting (CAT filter): word overlap by hand, and Tesseract on rendered images."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont

from vlexp.filters.cat.text_spotting import (
    TesseractNotFoundError,
    _parse_tsv,
    content_words,
    find_tesseract,
    ocr_words,
    prepare_for_ocr,
    text_overlap,
    words,
)

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract binary missing: apt-get install -y tesseract-ocr tesseract-ocr-eng",
)


def render(text: str = "", side: int = 224, size: int = 48, at: tuple[int, int] = (20, 80)):
    """A white RGB square with ``text`` in black."""
    img = Image.new("RGB", (side, side), "white")
    if text:
        font = ImageFont.load_default(size=size)
        ImageDraw.Draw(img).text(at, text, fill="black", font=font)
    return img


def test_words_and_content_words():
    assert words("SALE! 50% off, e-mail_us") == {"sale", "50", "off", "mail", "us"}
    assert content_words("A dog on a beach") == {"dog", "beach"}
    assert content_words("the of a") == set()


def test_text_overlap_by_hand():
    assert text_overlap("sale", {"sale"}) == 1.0
    assert text_overlap("Big SALE today!", {"sale", "shoes"}) == pytest.approx(1 / 3)
    assert text_overlap("a dog on a beach", {"sale"}) == 0.0
    assert text_overlap("sale sale SALE", {"sale"}) == 1.0  # each word once
    assert text_overlap("the", {"the"}) == 0.0  # no content word: nothing to overlap


def test_prepare_for_ocr_upscales_short_side():
    small = prepare_for_ocr(Image.new("RGB", (100, 50)), min_side=224)
    assert small.size == (448, 224) and small.mode == "L"
    big = prepare_for_ocr(Image.new("RGB", (300, 260)), min_side=224)
    assert big.size == (300, 260)


def test_parse_tsv_groups_words_by_page():
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "1\t1\t0\t0\t0\t0\t0\t0\t224\t224\t-1\t",
        "5\t1\t1\t1\t1\t1\t13\t94\t111\t34\t96.5\tSALE",
        "1\t2\t0\t0\t0\t0\t0\t0\t224\t224\t-1\t",
        "5\t3\t1\t1\t1\t1\t13\t88\t64\t20\t96.3\tHello,",
        "5\t3\t1\t1\t1\t2\t84\t88\t74\t20\t96.3\tWorld",
    ]
    assert _parse_tsv("\n".join([header, *rows]), 4) == [{"sale"}, set(), {"hello", "world"}, set()]


def test_missing_tesseract_names_the_apt_package():
    with pytest.raises(TesseractNotFoundError, match="tesseract-ocr tesseract-ocr-eng"):
        find_tesseract("vlexp-no-such-tesseract")


@needs_tesseract
def test_ocr_reads_rendered_words_in_order():
    imgs = [render("SALE"), render(), render("HELLO", size=40), render()]
    expected = [{"sale"}, set(), {"hello"}, set()]
    assert ocr_words(imgs) == expected
    assert ocr_words(imgs, workers=2, chunk_size=1) == expected  # order kept across workers


@needs_tesseract
def test_small_images_are_upscaled_before_ocr():
    tiny = render("SALE", side=48, size=8, at=(4, 18))  # 8 px letters: unreadable as is
    assert ocr_words([tiny], min_side=1) == [set()]
    assert ocr_words([tiny], min_side=224) == [{"sale"}]
