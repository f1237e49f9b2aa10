"""Export a pair source to disk: CSV/TSV + image files, or img2dataset-style tar shards.

Both layouts are what users already have for real data, so any :class:`PairSource`
(e.g. the synthetic benchmark) can be read back through ``data=csv`` or
``data=webdataset`` exactly like CC3M or LAION.

CSV layout (``export_csv``)::

    out_dir/images/00000000.jpg ...
    out_dir/pairs.csv            # filepath (relative to out_dir), caption, tags, label
    out_dir/classes.json         # {"class_names": [...], "parents": [...]}

WebDataset layout (``export_webdataset``), as img2dataset writes it::

    out_dir/00000.tar            # 000000000.jpg, 000000000.txt, 000000000.json, ...
    out_dir/00000_stats.json     # count, successes, ...
    out_dir/00000.parquet        # one row per sample: key, caption, status, ...
    out_dir/sizes.json           # {"00000.tar": n, ...}
    out_dir/classes.json

Sample keys are ``{shard:05d}{i:04d}`` (nine digits while ``shard_size <= 10000``; the
in-shard part widens for bigger shards). The ``.json`` member carries img2dataset's fields
(``key``, ``caption``, ``url`` = None, ``status``, ``width``, ``height``, ...) plus
``tags`` (class names) and ``label`` (class id, -1 when unknown).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlexp.data.records import TAG_SEP, ClassVocab
from vlexp.data.types import PairSource
from vlexp.io import write_atomic, write_text_atomic

log = logging.getLogger(__name__)

_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
# what an export writes (and what overwrite=True removes; nothing else is touched)
_ARTIFACT_GLOBS = (
    "pairs.csv",
    "pairs.tsv",
    "classes.json",
    "sizes.json",
    "*.tar",
    "*.tar.tmp",
    "*_stats.json",
    "*.parquet",
)


# --------------------------------------------------------------------- helpers
def _prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite`` (then remove only
    earlier export artifacts, never unrelated files)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export target {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"export target {out} is not empty; choose a new directory or pass "
                "overwrite=True to replace an earlier export there"
            )
        for pattern in _ARTIFACT_GLOBS:
            for f in out.glob(pattern):
                f.unlink()
        images = out / "images"
        if images.is_dir():
            for f in images.iterdir():
                if f.is_file():
                    f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _encode_image(img: Image.Image, image_format: str, quality: int) -> bytes:
    """Encode as JPEG (4:4:4 chroma, so colours survive at small sizes), PNG or WebP."""
    fmt = _FORMATS.get(image_format.lower())
    if fmt is None:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = int(quality)
    if fmt == "JPEG":
        kwargs["subsampling"] = 0
    img.convert("RGB").save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _vocab(source: PairSource) -> ClassVocab:
    names = list(source.class_names or [])
    table = source.tag_table
    parents = table.parents if table is not None and len(table.parents) == len(names) else None
    return ClassVocab(names, parents)


def _tag_names(tags: Sequence[int], vocab: ClassVocab, i: int) -> list[str]:
    try:
        return [vocab.class_names[int(t)] for t in tags]
    except IndexError:
        raise ValueError(
            f"pair {i} has tags {list(tags)} but the source has only {len(vocab)} class names"
        ) from None


# --------------------------------------------------------------------- CSV
def export_csv(
    source: PairSource,
    out_dir: str | os.PathLike,
    *,
    sep: str = ",",
    image_format: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write ``source`` as image files plus ``pairs.csv`` (``sep=","``) or ``pairs.tsv``
    (``sep="\\t"``) and ``classes.json``; return the table's path.

    Columns: ``filepath`` (relative to ``out_dir``), ``caption``, ``tags`` (class names
    joined by ``;``), ``label`` (class id, -1 when unknown).
    """
    if sep not in (",", "\t"):
        raise ValueError(f"sep must be ',' (CSV) or '\\t' (TSV), got {sep!r}")
    vocab = _vocab(source)
    bad = [c for c in vocab.class_names if TAG_SEP in c]
    if bad:
        raise ValueError(
            f"class names {bad[:5]} contain '{TAG_SEP}', the CSV tag separator; rename them"
        )
    ext = "jpg" if image_format.lower() == "jpeg" else image_format.lower()
    out = _prepare_out_dir(out_dir, overwrite)
    (out / "images").mkdir(exist_ok=True)
    rows: dict[str, list[Any]] = {"filepath": [], "caption": [], "tags": [], "label": []}
    for i in range(len(source)):
        item = source[i]
        rel = f"images/{i:08d}.{ext}"
        (out / rel).write_bytes(_encode_image(item["image"], ext, quality))
        rows["filepath"].append(rel)
        rows["caption"].append(item["caption"])
        rows["tags"].append(TAG_SEP.join(_tag_names(item.get("tags", ()), vocab, i)))
        rows["label"].append(int(item.get("label", -1)))
    table = out / ("pairs.csv" if sep == "," else "pairs.tsv")
    pd.DataFrame(rows).to_csv(table, sep=sep, index=False)
    vocab.save(out / "classes.json")
    log.info("exported %d pairs to %s", len(source), table)
    return table


# --------------------------------------------------------------------- WebDataset
def _tar_member(name: str, data: bytes, mtime: float) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o444
    info.uname = info.gname = "bigdata"
    return info, io.BytesIO(data)


def _write_shard(out: Path, shard: int, samples: list[dict[str, Any]], ext: str) -> dict[str, Any]:
    """Write one ``{shard:05d}.tar`` plus its ``_stats.json`` and ``.parquet``."""
    name = f"{shard:05d}"
    start = time.time()

    def write_tar(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for s in samples:
                for member, data in (
                    (f"{s['key']}.{ext}", s["image_bytes"]),
                    (f"{s['key']}.txt", s["caption"].encode("utf-8")),
                    (f"{s['key']}.json", json.dumps(s["meta"]).encode("utf-8")),
                ):
                    tf.addfile(*_tar_member(member, data, start))

    write_atomic(out / f"{name}.tar", write_tar)
    end = time.time()
    stats = {
        "count": len(samples),
        "successes": len(samples),
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": end - start,
        "start_time": start,
        "end_time": end,
        "status_dict": {"success": len(samples)},
    }
    (out / f"{name}_stats.json").write_text(json.dumps(stats, indent=4))
    cols = (
        "url",
        "key",
        "caption",
        "status",
        "error_message",
        "width",
        "height",
        "original_width",
        "original_height",
        "exif",
        "sha256",
    )
    table = pa.table(
        {c: [s["meta"].get(c) for s in samples] for c in cols},
        schema=pa.schema(
            [
                ("url", pa.string()),
                ("key", pa.string()),
                ("caption", pa.string()),
                ("status", pa.string()),
                ("error_message", pa.string()),
                ("width", pa.int64()),
                ("height", pa.int64()),
                ("original_width", pa.int64()),
                ("original_height", pa.int64()),
                ("exif", pa.string()),
                ("sha256", pa.string()),
            ]
        ),
    )
    pq.write_table(table, out / f"{name}.parquet")
    return stats


def export_webdataset(
    source: PairSource,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``source`` as img2dataset-style tar shards of ``shard_size`` samples (see the
    module docstring for the layout); return the shard paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    vocab = _vocab(source)
    ext = "jpg" if image_format.lower() == "jpeg" else image_format.lower()
    out = _prepare_out_dir(out_dir, overwrite)
    in_shard_digits = max(4, len(str(shard_size - 1)))
    key_width = 5 + in_shard_digits
    sizes: dict[str, int] = {}
    shards: list[Path] = []
    n = len(source)
    for shard, lo in enumerate(range(0, n, shard_size)):
        samples = []
        for i in range(lo, min(n, lo + shard_size)):
            item = source[i]
            img = item["image"]
            data = _encode_image(img, ext, quality)
            key = f"{shard * 10**in_shard_digits + (i - lo):0{key_width}d}"
            meta = {
                "url": None,
                "key": key,
                "status": "success",
                "error_message": None,
                "width": img.width,
                "height": img.height,
                "original_width": img.width,
                "original_height": img.height,
                "exif": None,
                "sha256": hashlib.sha256(data).hexdigest(),
                "caption": item["caption"],
                "tags": _tag_names(item.get("tags", ()), vocab, i),
                "label": int(item.get("label", -1)),
            }
            samples.append(
                {"key": key, "image_bytes": data, "caption": item["caption"], "meta": meta}
            )
        _write_shard(out, shard, samples, ext)
        sizes[f"{shard:05d}.tar"] = len(samples)
        shards.append(out / f"{shard:05d}.tar")
    write_text_atomic(out / "sizes.json", json.dumps(sizes, indent=1))
    vocab.save(out / "classes.json")
    log.info("exported %d pairs as %d shards to %s", n, len(shards), out)
    return shards
