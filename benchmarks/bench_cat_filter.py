"""Throughput of the CAT filter's criteria.

- complexity + action: captions/s on generated captions of varied style, in one process
  and in a pool of worker processes each holding its own (pickled, lazily loaded)
  ``CATFilter``, which is how a standalone pass over files would run it;
- text-spotting: images/s of Tesseract on rendered 224 px images, one and two Tesseract
  processes at a time, and, for reference, one ``tesseract`` call per image.

Run:  .venv/bin/python benchmarks/bench_cat_filter.py [--captions 3000] [--images 120]

"kept/hits" is the number of captions kept (complexity >= 2 and an action) or of images
in which Tesseract read at least one word (half of the images carry rendered text).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlexp.filters.cat.filter import CATFilter
from vlexp.filters.cat.text_spotting import find_tesseract, ocr_words, prepare_for_ocr

SUBJECTS = ["dog", "man", "woman", "cat", "child", "group of people", "bird", "car", "horse"]
ADJS = ["small", "brown", "red", "old", "young", "happy", "wooden", "white", "large", "two"]
VERBS = ["chasing", "riding", "holding", "sitting on", "walking along", "looking at", "eating"]
THINGS = ["ball", "bench", "street", "beach", "table", "bicycle", "sandwich", "tree", "wall"]
PLACES = ["in a park", "on the beach", "at night", "near the water", "in a kitchen", ""]
WEB = ["Stock photo", "Buy now", "vintage poster", "close-up", "logo design", "best price"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` captions mixing COCO-like sentences, noun phrases and web boilerplate."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    out = []
    for _ in range(n):
        style = int(rng.integers(5))
        s, t = pick(SUBJECTS), pick(THINGS)
        if style == 0:
            out.append(f"a {pick(ADJS)} {s} {pick(VERBS)} a {pick(ADJS)} {t} {pick(PLACES)}")
        elif style == 1:
            out.append(f"a {s} is {pick(VERBS)} the {t} {pick(PLACES)}")
        elif style == 2:
            out.append(f"a photo of a {pick(ADJS)} {s} {pick(PLACES)}")
        elif style == 3:
            out.append(f"{pick(WEB)}: {pick(ADJS)} {t}")
        else:
            out.append(f"{s}")
    return [c.strip() for c in out]


def render_images(n: int, side: int = 224, noise: float = 0.0, seed: int = 0) -> list[Image.Image]:
    """``n`` images: gradients with a few shapes, half with rendered words.

    ``noise`` (0..1) adds per-pixel uniform noise of that share of the grey range: busy
    textures make Tesseract look much harder for text, as real photos do.
    """
    rng = np.random.default_rng(seed)
    words = ["SALE", "OPEN", "hello world", "FREE", "big deal", "caf\u00e9", "2024"]
    ramp = np.linspace(0.0, 1.0, side)[None, :, None]
    imgs = []
    for i in range(n):
        lo, hi = rng.integers(0, 256, size=(2, 1, 1, 3))
        base = lo + (hi - lo) * ramp * np.ones((side, 1, 1))
        if noise > 0:
            base = base + rng.uniform(-128 * noise, 128 * noise, size=(side, side, 1))
        base = np.clip(base, 0, 255)
        img = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(0, side - 40, size=2))
            w, h = (int(v) for v in rng.integers(10, 60, size=2))
            fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        if i % 2 == 0:
            font = ImageFont.load_default(size=int(rng.integers(18, 48)))
            xy = (int(rng.integers(0, side // 3)), int(rng.integers(0, side - 50)))
            draw.text(xy, words[i % len(words)], fill=(0, 0, 0), font=font)
        imgs.append(img)
    return imgs


_WORKER: CATFilter | None = None


def _init_worker(flt: CATFilter) -> None:
    global _WORKER
    _WORKER = flt
    _WORKER.decide(["warm up the parser"])


def _decide_shard(captions: list[str]) -> int:
    assert _WORKER is not None
    return int(_WORKER.decide(captions)[0].sum())


def bench_captions(captions: list[str], workers: int, chunk: int = 500) -> tuple[float, int]:
    """(captions/s, kept) of complexity+action with ``workers`` processes (model load excluded)."""
    flt = CATFilter(text_spotting=False)
    shards = [captions[i : i + chunk] for i in range(0, len(captions), chunk)]
    if workers == 1:
        flt.decide(["warm up the parser"])
        t0 = time.perf_counter()
        kept = sum(int(flt.decide(s)[0].sum()) for s in shards)
        return len(captions) / (time.perf_counter() - t0), kept
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(flt,)) as pool:
        list(pool.map(_decide_shard, [["warm up"]] * workers))  # start and load every worker
        t0 = time.perf_counter()
        kept = sum(pool.map(_decide_shard, shards))
        return len(captions) / (time.perf_counter() - t0), kept


def bench_ocr(images: list[Image.Image], workers: int) -> tuple[float, int]:
    """(images/s, images with words) of :func:`ocr_words` with ``workers`` Tesseract processes."""
    t0 = time.perf_counter()
    found = ocr_words(images, workers=workers, chunk_size=64)
    return len(images) / (time.perf_counter() - t0), sum(bool(w) for w in found)


def bench_ocr_per_image(images: list[Image.Image]) -> float:
    """images/s of one plain ``tesseract IMG stdout --psm 11`` call per image (reference)."""
    binary = find_tesseract()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, im in enumerate(images):
            p = Path(tmp) / f"{i}.png"
            prepare_for_ocr(im).save(p)
            paths.append(p)
        t0 = time.perf_counter()
        for p in paths:
            subprocess.run(
                [binary, str(p), "stdout", "--psm", "11"],
                capture_output=True,
                check=True,
                env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"},
            )
        return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--captions", type=int, default=3000)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    rows = []
    captions = make_captions(args.captions)
    for w in (1, 2):
        rate, kept = bench_captions(captions, w)
        rows.append(
            ("complexity+action", f"{w} process(es)", args.captions, rate, "captions/s", kept)
        )
    if shutil.which("tesseract"):
        for label, noise in (("clean", 0.0), ("textured", 0.5)):
            images = render_images(args.images, noise=noise)
            for w in (1, 2):
                rate, hits = bench_ocr(images, w)
                name = f"text-spotting {label}"
                rows.append((name, f"{w} tesseract proc", args.images, rate, "images/s", hits))
            n_ref = min(args.images, 30)
            rate = bench_ocr_per_image(images[:n_ref])
            rows.append((f"CLI per image {label}", "1 proc", n_ref, rate, "images/s", None))
    else:
        print(
            "tesseract missing: skipping text-spotting (apt-get install -y tesseract-ocr tesseract-ocr-eng)"
        )

    print(
        f"{'criterion':26s} {'workers':18s} {'items':>6s} {'rate':>9s} {'unit':11s} {'kept/hits':>9s}"
    )
    for name, workers, n, rate, unit, extra in rows:
        print(
            f"{name:26s} {workers:18s} {n:6d} {rate:9.1f} {unit:11s} {'' if extra is None else extra:>9}"
        )
    if args.json:
        keys = ("criterion", "workers", "items", "rate", "unit", "kept_or_hits")
        args.json.write_text(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
