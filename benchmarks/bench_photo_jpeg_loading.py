"""Loading photo-size JPEGs: JPEG draft mode against full decoding, open_clip and the bare decode.

Exports ``--n`` pairs of 640x480 JPEGs (quality 90, photo-like: smooth gradients plus
grain) as img2dataset-style shards and measures **samples per CPU second** of one
process doing all the work (``workers=0``; other load on the machine does not distort
it), best of ``--repeats`` epochs, training crop 224 px (ViT-B-32):

* ``bare decode``          ``Image.open(...).convert("RGB")`` of every image, nothing else
* ``bare decode, draft``   the same with ``draft("RGB", ...)`` as vlexp requests it
* ``open_clip``            ``open_clip_train.data.get_wds_dataset`` with the ViT-B-32
                           training preprocess and tokenizer
* ``vlexp, full decode``   vlexp's streaming loader + collator with ``data.jpeg_draft=false``
                           (what it did before draft mode)
* ``vlexp, draft``         the same with draft mode, as the datamodule configures it for a
                           224 px crop of area share >= 0.9 (decode to >= 237 px per side)

    .venv/bin/python benchmarks/bench_photo_jpeg_loading.py --n 200
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.records import ImageDecoder
from vlexp.data.shards.export import export_webdataset
from vlexp.data.shards.samples import iter_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader_vs_open_clip import (  # noqa: E402  (the shard-loader benchmark's loaders)
    MODEL,
    epoch_rate,
    open_clip_loader,
    vlexp_loader,
)

CROP = 224
CROP_SCALE = (0.9, 1.0)


def photo(seed: int, w: int = 640, h: int = 480) -> Image.Image:
    """A photo-like RGB image: low-frequency colour waves plus fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / w
    f = rng.uniform(1, 8, size=(3, 2))
    waves = [0.5 + 0.35 * np.sin(2 * np.pi * (f[c, 0] * x + f[c, 1] * y)) for c in range(3)]
    img = np.stack(waves, -1) * 255 + rng.normal(0, 4, size=(h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class Photos:
    """A lazy pair source of :func:`photo` images (rendered on access, nothing held)."""

    class_names: list[str] = []
    tag_table = None

    def __init__(self, n: int) -> None:
        self.n = n
        self.captions = [f"photo {i}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": photo(i), "caption": self.captions[i], "tags": [], "label": -1}


def bare_rate(blobs: list[bytes], decode: Callable[[bytes], Image.Image], repeats: int) -> float:
    """Samples per CPU second of decoding every blob."""
    best = 0.0
    for _ in range(repeats):
        c0 = time.process_time()
        for b in blobs:
            decode(b)
        best = max(best, len(blobs) / max(time.process_time() - c0, 1e-9))
    return best


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="number of pairs")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    draft_side = math.ceil(CROP / math.sqrt(CROP_SCALE[0]))  # what the datamodule requests

    def drafted(b: bytes) -> Image.Image:
        with Image.open(io.BytesIO(b)) as img:
            img.draft("RGB", (draft_side, draft_side))
            return img.convert("RGB")

    with tempfile.TemporaryDirectory(prefix="vlexp-bench-") as tmp:
        shards = [
            str(s) for s in export_webdataset(Photos(args.n), tmp, shard_size=args.shard_size)
        ]
        spec = f"{tmp}/{{00000..{len(shards) - 1:05d}}}.tar"
        blobs = [b for s in shards for b in _jpegs(s)]
        kb = sum(map(len, blobs)) / len(blobs) / 1024
        print(f"{args.n} pairs, 640x480 JPEG q90 ({kb:.0f} KB each), crop {CROP}, {MODEL}")
        rates = {
            "bare decode": bare_rate(blobs, lambda b: Image.open(io.BytesIO(b)).convert("RGB"), 2),
            "bare decode, draft": bare_rate(blobs, drafted, args.repeats),
        }
        loaders = {
            "open_clip": (open_clip_loader(spec, args.n, 0, args.batch_size), lambda b: len(b[0])),
            "vlexp, full decode": (_vlexp(shards, args.batch_size, None), _count),
            "vlexp, draft": (_vlexp(shards, args.batch_size, draft_side), _count),
        }
        for name, (loader, count) in loaders.items():
            rates[name] = epoch_rate(loader, args.repeats, count)[1]
    base, bare = rates["open_clip"], rates["bare decode"]
    print(f"\n{'pipeline':<22}{'samples/CPU s':>15}{'vs open_clip':>14}{'vs bare decode':>16}")
    for name, r in rates.items():
        print(f"{name:<22}{r:>15.0f}{r / base:>14.2f}{r / bare:>16.2f}")
    return rates


def _count(batch: dict[str, Any]) -> int:
    return len(batch["image"])


def _vlexp(shards: list[str], batch: int, draft_side: int | None) -> Any:
    loader = vlexp_loader(shards, 0, batch, fused=True)
    loader.dataset.decoder = ImageDecoder(draft_side=draft_side)
    return loader


def _jpegs(shard: str) -> list[bytes]:
    """The image bytes of one shard."""
    return [raw.fields["jpg"] for raw in iter_shard(shard, BadSampleCounter(1.0))]  # type: ignore[misc]


if __name__ == "__main__":
    main()
