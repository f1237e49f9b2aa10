"""Filtering one tar shard into a new shard that holds only the kept samples.

The input shard is streamed once. Samples are grouped by key (WebDataset convention:
consecutive members sharing the name up to the first dot), judged in batches of
``batch_size``, and every member of a kept sample is copied byte for byte, under its
original name and in its original order, into the output shard. Next to it go
``<stem>_stats.json`` (img2dataset's counts, so readers know the shard's size) and, when
the input has one, ``<stem>.parquet`` restricted to the kept keys. Every file is written
under a temporary name and renamed when complete.

Records that cannot be judged (no caption, no image, an undecodable image when the filter
needs pixels, a shard cut short) are skipped, counted per reason, and not written; more
than ``max_bad_fraction`` of them in a shard (after ``min_samples``) fails the unit.
With a caption-only filter images are not decoded: their bytes are copied as they are.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.records import IMAGE_ERRORS, IMAGE_EXTS, clean_caption, decode_image
from vlexp.data.shards.listing import read_sizes
from vlexp.data.shards.tario import (
    TarCorrupt,
    TarError,
    TarMember,
    TarTruncated,
    split_name,
    tar_members,
)
from vlexp.filters.base import PairFilter
from vlexp.filters.filter_pass.judge import judge
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import UnitReport
from vlexp.filters.filter_pass.units import Unit
from vlexp.io import write_atomic, write_json_atomic


@dataclass
class ShardSample:
    """The members of one sample, in archive order."""

    key: str
    members: list[TarMember] = field(default_factory=list)

    def fields(self) -> dict[str, bytes]:
        """Field (lower-cased extension, e.g. ``jpg``) -> bytes; the first member wins."""
        out: dict[str, bytes] = {}
        for m in self.members:
            fld = split_name(m.name)[1]
            if fld not in out and m.data is not None:
                out[fld] = m.data
        return out


def iter_samples(stream: IO[bytes]) -> Iterator[ShardSample]:
    """Samples of a tar stream with all their members' bytes.

    Hidden/meta members (``__*__``, ``._*``) are left out. On a broken archive the
    :class:`~vlexp.data.shards.tario.TarError` propagates after every complete sample before
    the break was yielded (as :func:`vlexp.data.shards.tario.tar_samples` does).
    """
    current: ShardSample | None = None
    try:
        for m in tar_members(stream):
            base = m.name.rsplit("/", 1)[-1]
            if base.startswith("__") or base.startswith("._"):
                continue
            key = split_name(m.name)[0]
            if current is not None and key != current.key:
                yield current
                current = None
            if current is None:
                current = ShardSample(key)
            current.members.append(m)
    except TarError as e:
        if current is not None and e.member is not None and split_name(e.member)[0] != current.key:
            yield current
        raise
    if current is not None:
        yield current


def read_shard(url: str, counter: BadSampleCounter, expected: int | None) -> Iterator[ShardSample]:
    """Samples of a local shard; a shard that cannot be read to its end is counted
    (``truncated_tar``/``unreadable_shard``) after yielding what it had."""
    n = 0
    try:
        with open(url, "rb", buffering=1 << 20) as f:
            for s in iter_samples(f):
                n += 1
                yield s
    except TarTruncated as e:
        counter.add(R.TRUNCATED_TAR, f"{url}: {e} (after {n} samples)")
        return
    except (TarCorrupt, OSError, ValueError) as e:
        counter.add(R.UNREADABLE_SHARD, f"{url}: {type(e).__name__}: {e} (after {n} samples)")
        return
    if expected is not None and n < expected:
        counter.add(R.TRUNCATED_TAR, f"{url}: {n} samples, its sizes file says {expected}")


def sample_caption(fields: dict[str, bytes], counter: BadSampleCounter, where: str) -> str | None:
    """The caption: the ``.txt`` member, else the ``.json`` member's ``caption`` (as the
    WebDataset reader takes it); None when there is none."""
    if "txt" in fields:
        caption = clean_caption(fields["txt"].decode("utf-8", "replace"))
        if caption is not None:
            return caption
    if "json" in fields:
        try:
            meta = json.loads(fields["json"])
        except (ValueError, UnicodeDecodeError) as e:
            counter.note(R.BAD_JSON, f"{where}: {e}")
            meta = None
        if isinstance(meta, dict):
            caption = clean_caption(meta.get("caption"))
            if caption is not None:
                return caption
    return None


class _ShardWriter:
    """Appends the members of kept samples to an open output tar."""

    def __init__(self, tf: tarfile.TarFile, mtime: int, keys: list[str]) -> None:
        self.tf = tf
        self.mtime = mtime
        self.keys = keys

    def add(self, sample: ShardSample) -> None:
        for m in sample.members:
            info = tarfile.TarInfo(m.name)
            info.size = m.size
            info.mtime = self.mtime
            info.mode = 0o444
            self.tf.addfile(info, io.BytesIO(m.data or b""))
        self.keys.append(sample.key)


def _filter_parquet(src: Path, dst: Path, keys: list[str]) -> bool:
    """Write the rows of img2dataset's per-shard parquet whose key was kept; False if
    ``src`` is missing or has no ``key`` column."""
    if not src.is_file():
        return False
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if "key" not in table.column_names:
        return False
    mask = pc.is_in(table["key"].cast(pa.string()), value_set=pa.array(keys, type=pa.string()))
    write_atomic(dst, lambda p: pq.write_table(table.filter(mask), p))
    return True


def process_shard(unit: Unit, flt: PairFilter, opts: PassOptions) -> UnitReport:
    """Filter one shard into ``output_dir/<unit.rel>`` (plus side files); the unit report."""
    rep = UnitReport(unit.name, unit.index)
    t0 = time.perf_counter()
    out = Path(opts.output_dir)
    src = Path(unit.source)
    dst = out / unit.rel
    counter = BadSampleCounter(opts.max_bad_fraction, opts.min_samples, name=str(src), log_first=1)
    expected = read_sizes([str(src)]).get(str(src))
    needs_images = bool(getattr(flt, "needs_images", False))
    kept_keys: list[str] = []

    def judge_batch(
        batch: list[tuple[ShardSample, str, Image.Image | None]], w: _ShardWriter
    ) -> None:
        if not batch:
            return
        captions = [c for _, c, _ in batch]
        images = [im for _, _, im in batch] if needs_images else None
        v = judge(flt, captions, images)  # type: ignore[arg-type]
        rep.ocr_images += v.ocr_images
        rep.add(
            [s.key for s, _, _ in batch], captions, v.keep, v.reasons, v.details, opts.max_examples
        )
        for (sample, _, _), k in zip(batch, v.keep):
            if k:
                w.add(sample)
        batch.clear()

    def produce(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            writer = _ShardWriter(tf, int(src.stat().st_mtime), kept_keys)
            batch: list[tuple[ShardSample, str, Image.Image | None]] = []
            for sample in read_shard(str(src), counter, expected):
                rep.read += 1
                where = f"{src}:{sample.key}"
                fields = sample.fields()
                caption = sample_caption(fields, counter, where)
                if caption is None:
                    has_text = "txt" in fields or "json" in fields
                    counter.add(R.EMPTY_CAPTION if has_text else R.MISSING_CAPTION, where)
                    continue
                ext = next((e for e in IMAGE_EXTS if e in fields), None)
                if ext is None:
                    counter.add(R.MISSING_IMAGE, f"{where} has fields {sorted(fields)}")
                    continue
                image = None
                if needs_images:
                    try:
                        image = decode_image(fields[ext])
                    except IMAGE_ERRORS as e:
                        counter.add(R.BROKEN_IMAGE, f"{where}: {type(e).__name__}: {e}")
                        continue
                counter.ok()
                batch.append((sample, caption, image))
                if len(batch) >= opts.batch_size:
                    judge_batch(batch, writer)
            judge_batch(batch, writer)

    write_atomic(dst, produce)
    stem = dst.name[:-4] if dst.name.endswith(".tar") else dst.name
    rep.outputs.append(unit.rel)
    src_stem = src.name[:-4] if src.name.endswith(".tar") else src.name
    parquet = dst.with_name(stem + ".parquet")
    if _filter_parquet(src.with_name(src_stem + ".parquet"), parquet, kept_keys):
        rep.outputs.append(os.path.relpath(parquet, out))
    stats = dst.with_name(stem + "_stats.json")
    write_json_atomic(stats, _stats(rep, len(kept_keys), time.time() - rep.started))
    rep.outputs.append(os.path.relpath(stats, out))
    rep.skipped.update(counter.bad)
    rep.notes.update(counter.notes)
    rep.seconds = time.perf_counter() - t0
    rep.finished = time.time()
    return rep


def _stats(rep: UnitReport, kept: int, duration: float) -> dict[str, Any]:
    """img2dataset-style ``_stats.json`` of an output shard (``successes`` = its samples)."""
    return {
        "count": kept,
        "successes": kept,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": duration,
        "start_time": rep.started,
        "end_time": rep.started + duration,
        "status_dict": {"success": kept},
        "filter_pass": {"read": rep.read, "judged": rep.total, "kept": rep.kept},
    }
