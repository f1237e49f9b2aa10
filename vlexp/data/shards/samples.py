"""Raw samples of tar shards: reading one shard's samples (counting what a broken shard
lost), the caption/tags/label of a sample, and the class names the shards use.

Shared by the streaming reader (:mod:`vlexp.data.readers.webdataset_reader`) and the
random-access index (:mod:`vlexp.data.shards.index`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.records import IMAGE_EXTS, ClassVocab, clean_caption, names_found
from vlexp.data.shards.listing import is_local, local_path, open_shard
from vlexp.data.shards.tario import RawSample, TarCorrupt, TarTruncated, tar_samples

log = logging.getLogger(__name__)


# --------------------------------------------------------------------- record parsing
def parse_text_fields(
    raw: RawSample, vocab: ClassVocab | None, counter: BadSampleCounter, row: int | None = None
) -> tuple[str, list[int], int] | None:
    """Caption, tag ids and label of a raw sample; None (counted) when it has no caption.
    ``row``: the sample's global position when known (counted once, see ``bad_samples``)."""
    where = f"{raw.url}:{raw.key}"
    meta, json_encoding = _json_meta(raw, counter, where, row)
    caption = None
    txt = raw.fields.get("txt")
    if txt is not None:
        try:
            caption = clean_caption(txt.decode("utf-8"))
        except UnicodeDecodeError as e:
            detail = f"{where}.txt is not valid UTF-8 ({e}): {txt[:80]!r}"
            counter.add(R.BAD_ENCODING, detail, row=row)
            return None
    if caption is None:
        caption = clean_caption(meta.get("caption"))
    if caption is None:
        if json_encoding and txt is None:
            counter.add(R.BAD_ENCODING, f"{where}.json is not valid UTF-8", row=row)
            return None
        has_any = txt is not None or "caption" in meta
        counter.add(R.EMPTY_CAPTION if has_any else R.MISSING_CAPTION, where, row=row)
        return None
    tags_raw = meta.get("tags") or []
    if not isinstance(tags_raw, list):
        tags_raw = [tags_raw]
    if vocab is not None:
        tags = vocab.tag_ids(tags_raw, counter, where, row)
        label = vocab.label_id(meta.get("label"), counter, where, row)
    else:
        tags = [int(t) for t in tags_raw if isinstance(t, int) and not isinstance(t, bool)]
        if len(tags) != len(tags_raw):
            counter.note(
                R.UNKNOWN_TAG,
                f"{where}: tag names without a class list (pass class_names)",
                row=row,
            )
        label = meta.get("label", -1)
        if not isinstance(label, int) or isinstance(label, bool):
            if label is not None:
                detail = f"{where}: label {label!r} without a class list"
                counter.note(R.UNKNOWN_LABEL, detail, row=row)
            label = -1
    return caption, tags, label


def _json_meta(
    raw: RawSample, counter: BadSampleCounter | None, where: str, row: int | None = None
) -> tuple[dict[str, Any], bool]:
    """The sample's ``.json`` object ({} when absent or bad, noted) and whether it failed
    for not being UTF-8."""
    data = raw.fields.get("json")
    if data is None:
        return {}, False
    try:
        meta = json.loads(data)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        if counter is not None:
            counter.note(R.BAD_JSON, f"{where}: {e}", row=row)
        return {}, isinstance(e, UnicodeDecodeError)
    return meta, False


def _names_in(meta: dict[str, Any]) -> tuple[list[Any], Any]:
    tags = meta.get("tags") or []
    return (tags if isinstance(tags, list) else [tags]), meta.get("label")


def class_names_in_shards(urls: Sequence[str]) -> list[str] | None:
    """Sorted class names used by the ``.json`` ``tags``/``label`` fields of local shards,
    or None when the first shard uses none (ids only, or no tags at all).

    img2dataset writes ``<shard>.parquet`` next to each shard; its ``tags``/``label``
    columns are read when present, else the shards' ``.json`` members (image bytes are
    skipped).
    """
    local = [u for u in urls if is_local(u)]
    first = _shard_names(local[0]) if local else []
    if not first:
        return None
    found = set(first)
    for url in local[1:]:
        found.update(_shard_names(url))
    return sorted(found)


def _shard_names(url: str) -> list[str]:
    """Class names used by one shard (its img2dataset parquet when it has the columns)."""
    table = Path(local_path(url)).with_suffix(".parquet")
    if table.is_file():
        names = _parquet_names(table)
        if names is not None:
            return names
    tags: list[list[Any]] = []
    labels: list[Any] = []
    dummy = BadSampleCounter(1.0, log_first=0)
    for raw in iter_shard(url, dummy, want=lambda f: f == "json"):
        meta, _ = _json_meta(raw, None, "")
        t, label = _names_in(meta)
        tags.append(t)
        labels.append(label)
    return names_found(tags, labels)


def _parquet_names(path: Path) -> list[str] | None:
    """Names in an img2dataset parquet's ``tags``/``label`` columns (successful rows
    only); None when it has neither column or cannot be read."""
    import pyarrow.parquet as pq

    try:
        columns = set(pq.read_schema(path).names)
        wanted = [c for c in ("tags", "label", "status") if c in columns]
        if "tags" not in wanted and "label" not in wanted:
            return None
        df = pq.read_table(path, columns=wanted).to_pandas()
    except (OSError, ValueError):
        return None
    if "status" in df:
        df = df[df["status"] == "success"]
    tags = [_as_list(t) for t in df["tags"]] if "tags" in df else []
    labels = df["label"].tolist() if "label" in df else []
    return names_found(tags, labels)


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, float):
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def image_field(raw: RawSample) -> str | None:
    """The field holding the sample's image (first of jpg/jpeg/png/webp), or None."""
    for ext in IMAGE_EXTS:
        if ext in raw.fields:
            return ext
    return None


def iter_shard(
    url: str,
    counter: BadSampleCounter,
    expected: int | None = None,
    want: Callable[[str], bool] | None = None,
    first_row: int | None = None,
) -> Iterator[RawSample]:
    """Raw samples of one shard; a shard that cannot be opened or read to its end is
    counted after yielding what it had: ``truncated_tar`` / ``unreadable_shard`` once per
    sample lost (``expected - read`` when the shard's size is known, else at least one;
    rows from ``first_row``, the shard's first global position, when known).
    ``want(field)`` False skips a field's bytes (its span is still recorded)."""
    lost = functools.partial(_count_lost, counter, url=url, expected=expected, first=first_row)
    n = 0
    try:
        with open_shard(url) as stream:
            for raw in tar_samples(stream, url, want):
                n += 1
                yield raw
    except TarTruncated as e:
        lost(R.TRUNCATED_TAR, f"{e}", n)
        return
    except (TarCorrupt, OSError, ValueError) as e:
        lost(R.UNREADABLE_SHARD, f"{type(e).__name__}: {e}", n)
        return
    if expected is not None and n < expected:
        lost(R.TRUNCATED_TAR, "the archive ends early", n)


def _count_lost(
    counter: BadSampleCounter,
    reason: str,
    why: str,
    n: int,
    *,
    url: str,
    expected: int | None,
    first: int | None,
) -> None:
    """Count the samples a broken shard lost (what its known size says, else one)."""
    if expected is None:
        counter.add(reason, f"{url}: {why}; read {n} samples, size unknown: at least 1 lost")
        return
    lost = expected - n
    detail = f"{url}: {why}; read {n} of {expected} samples, {max(lost, 0)} lost"
    if lost > 0:
        counter.lost(reason, lost, detail, first_row=None if first is None else first + n)
    else:
        counter.note(reason, detail)


def vocab_from_shards(urls: list[str]) -> ClassVocab | None:
    """Class names found in the shards (one summary line), None when they use none."""
    names = class_names_in_shards(urls)
    if not names:
        return None
    log.info(
        "no classes.json next to the shards: %d class names taken from the tags/labels found "
        "in %d shard(s) (e.g. %s); write a classes.json to fix the order and skip this scan",
        len(names),
        len(urls),
        names[:5],
    )
    return ClassVocab(names)
