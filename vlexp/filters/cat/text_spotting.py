"""Text-spotting: is a caption mostly the text written in its image?

DiHT's CAT filter drops pairs whose caption repeats text rendered in the image (a model
trained on them learns to read instead of to see). We OCR each image with the Tesseract
command line (Debian packages ``tesseract-ocr tesseract-ocr-eng``) and measure

    overlap = |caption content words  ∩  OCR'd words| / |caption content words|

where words are lower-cased runs of letters and digits of at least two characters and
the caption's content words exclude :data:`STOP_WORDS` (each word counted once). A pair
is dropped when the overlap reaches a threshold (0.5 in :class:`~vlexp.filters.cat.filter.
CATFilter`). A caption with no content word has overlap 0.

Tesseract runs once per chunk of images (a list file of page images, TSV output whose
``page_num`` column tells the pages apart), so its model is loaded once per chunk, and
chunks run in parallel threads (each a single-threaded ``tesseract`` process).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

TESSERACT_APT = "tesseract-ocr tesseract-ocr-eng"
SPARSE_TEXT_PSM = 11
"""Tesseract page segmentation mode 11: find as much text as possible, in no order."""

STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those there here some any each every all both no not
    and or but nor so yet if then than as of at by for from in into on onto off out
    over under up down to with without within about above below across after before
    behind beside between beyond near through toward towards upon via against along
    around among is are was were be been being am has have had having do does did
    doing will would can could shall should may might must it its it's itself he him
    his she her hers they them their theirs we us our you your yours i me my mine who
    whom whose which what when where why how very too also just only more most other
    such own same while during until
    """.split()
)
"""Function words ignored on the caption side of the overlap."""

_WORD_RE = re.compile(r"[^\W_]+")


class TesseractNotFoundError(RuntimeError):
    """The ``tesseract`` binary is not installed or not on PATH."""


def words(text: str) -> set[str]:
    """Lower-cased runs of letters/digits of at least two characters."""
    return {w for w in _WORD_RE.findall(text.lower()) if len(w) >= 2}


def content_words(caption: str) -> set[str]:
    """The caption's words without :data:`STOP_WORDS`."""
    return words(caption) - STOP_WORDS


def text_overlap(caption: str, ocr: set[str] | frozenset[str]) -> float:
    """Share of the caption's content words found among the OCR'd words ``ocr``."""
    cw = content_words(caption)
    if not cw:
        return 0.0
    return len(cw & ocr) / len(cw)


def find_tesseract(command: str = "tesseract") -> str:
    """Path of the Tesseract binary; a :class:`TesseractNotFoundError` saying how to install it."""
    path = shutil.which(command)
    if path is None:
        raise TesseractNotFoundError(
            f"The Tesseract OCR binary '{command}' was not found on PATH; the CAT filter's "
            f"text-spotting needs it. Install it with `apt-get install -y {TESSERACT_APT}` "
            "(the project's install step does this), or switch the criterion off with "
            "`text_spotting=false`."
        )
    return path


def prepare_for_ocr(image: Image.Image, min_side: int = 224) -> Image.Image:
    """Grey-scale copy of ``image`` upscaled (bicubic) so that its short side is >= ``min_side``."""
    img = image.convert("L")
    short = min(img.size)
    if 0 < short < min_side:
        scale = min_side / short
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
    return img


def _parse_tsv(tsv: str, n_pages: int) -> list[set[str]]:
    """Words per page from Tesseract's TSV output (level-5 rows are words)."""
    out: list[set[str]] = [set() for _ in range(n_pages)]
    for line in tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        page = int(cols[1]) - 1
        if 0 <= page < n_pages:
            out[page] |= words(cols[11])
    return out


def _ocr_chunk(
    images: Sequence[Image.Image], binary: str, psm: int, lang: str, min_side: int
) -> list[set[str]]:
    with tempfile.TemporaryDirectory(prefix="vlexp_ocr_") as tmp:
        paths = []
        for i, im in enumerate(images):
            p = Path(tmp) / f"{i:06d}.png"
            prepare_for_ocr(im, min_side).save(p, compress_level=1)
            paths.append(str(p))
        listing = Path(tmp) / "pages.txt"
        listing.write_text("\n".join(paths) + "\n")
        env = dict(os.environ, OMP_THREAD_LIMIT="1")  # one core per tesseract process
        cmd = [binary, str(listing), "stdout", "--psm", str(psm), "-l", lang, "tsv"]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=30 + 10 * len(paths)
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"tesseract timed out on {len(paths)} images: {cmd}") from e
    if proc.returncode != 0:
        raise RuntimeError(
            f"tesseract failed (exit {proc.returncode}) running {' '.join(cmd)}: "
            f"{proc.stderr.strip()[-500:]}. Check that the language data is installed "
            f"(`apt-get install -y {TESSERACT_APT}`)."
        )
    return _parse_tsv(proc.stdout, len(paths))


def ocr_words(
    images: Sequence[Image.Image],
    *,
    min_side: int = 224,
    psm: int = SPARSE_TEXT_PSM,
    lang: str = "eng",
    workers: int = 1,
    chunk_size: int = 64,
    tesseract: str = "tesseract",
) -> list[set[str]]:
    """The words Tesseract reads in each image (see :func:`words`), in input order.

    Images are upscaled to a short side of at least ``min_side`` px, split into chunks of
    at most ``chunk_size`` images (but at least one chunk per worker), and each chunk is
    read by one ``tesseract`` process; ``workers`` processes run at a time.
    """
    if workers < 1 or chunk_size < 1:
        raise ValueError(f"workers and chunk_size must be >= 1, got {workers}, {chunk_size}")
    if not images:
        return []
    binary = find_tesseract(tesseract)
    size = min(chunk_size, math.ceil(len(images) / workers))
    chunks = [images[i : i + size] for i in range(0, len(images), size)]
    if workers == 1 or len(chunks) == 1:
        results = [_ocr_chunk(c, binary, psm, lang, min_side) for c in chunks]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda c: _ocr_chunk(c, binary, psm, lang, min_side), chunks))
    return [w for chunk in results for w in chunk]
