"""Map-style access to tar shards: a one-off index pass, then reads by seeking.

Batch-planning samplers (``random``, ``tonics``) need ``len``, random access and the
tag table up front, which a stream cannot give. :func:`index_shards` reads every shard
once, skipping the image bytes (``seek``), and records per sample the shard, the byte
offset and size of the image in the tar, the key, caption, tags and label in flat arrays
(a :class:`ShardIndex`, saved/loaded as one ``.npz``). :class:`IndexedShardPairs` is then a
:class:`~vlexp.data.types.PairSource` that reads sample ``i`` with one ``pread`` from its
shard. Shards must be local files (random access); the index pass is I/O-bound and can
run shards in parallel processes (``num_workers``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter, attach_log, first_good
from vlexp.data.records import (
    IMAGE_ERRORS,
    IMAGE_EXTS,
    ClassVocab,
    ImageDecoder,
    PackedStrings,
    decode_image,
    image_error_reason,
)
from vlexp.data.shards.listing import is_local, list_shards, local_path, read_sizes
from vlexp.data.shards.samples import image_field, iter_shard, parse_text_fields, vocab_from_shards
from vlexp.data.types import TagTable
from vlexp.io import write_atomic

log = logging.getLogger(__name__)


@dataclass
class ShardIndex:
    """Where every sample of a set of shards lives, plus its text fields, in flat arrays."""

    shards: list[str]
    shard: np.ndarray  # (N,) int32 position in ``shards``
    offset: np.ndarray  # (N,) int64 byte offset of the image data in the tar
    size: np.ndarray  # (N,) int64 image size in bytes
    keys: PackedStrings
    captions: PackedStrings
    labels: np.ndarray  # (N,) int64, -1 unknown
    tags: TagTable | None
    class_names: list[str] = field(default_factory=list)
    bad: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.shard)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index as one ``.npz`` file (returned path)."""
        path = Path(path)
        arrays: dict[str, Any] = {
            "shards": np.asarray(self.shards, dtype=np.str_),
            "shard": self.shard,
            "offset": self.offset,
            "size": self.size,
            "labels": self.labels,
            "keys_data": self.keys.data,
            "keys_offsets": self.keys.offsets,
            "captions_data": self.captions.data,
            "captions_offsets": self.captions.offsets,
            "meta": np.asarray(
                json.dumps(
                    {
                        "class_names": self.class_names,
                        "bad": self.bad,
                        "has_tags": self.tags is not None,
                    }
                )
            ),
        }
        if self.tags is not None:
            arrays.update(
                tags_offsets=self.tags.offsets,
                tags_values=self.tags.values,
                tags_parents=self.tags.parents,
            )
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShardIndex:
        """Read an index written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            tags = None
            if meta["has_tags"]:
                tags = TagTable(
                    z["tags_offsets"], z["tags_values"], meta["class_names"], z["tags_parents"]
                )
            return cls(
                shards=[str(s) for s in z["shards"]],
                shard=z["shard"],
                offset=z["offset"],
                size=z["size"],
                keys=PackedStrings(z["keys_data"], z["keys_offsets"]),
                captions=PackedStrings(z["captions_data"], z["captions_offsets"]),
                labels=z["labels"],
                tags=tags,
                class_names=meta["class_names"],
                bad=meta["bad"],
            )


def _index_one(
    url: str,
    class_names: list[str] | None,
    parents: list[int] | None,
    expected: int | None,
    verify_images: bool,
) -> tuple[dict[str, Any], BadSampleCounter]:
    """Index one shard (a top-level function so worker processes can run it)."""
    vocab = None if class_names is None else ClassVocab(class_names, parents)
    counter = BadSampleCounter(1.0, name=url)  # the ceiling is checked on the merged counts
    out: dict[str, list[Any]] = {
        k: [] for k in ("offset", "size", "key", "caption", "tags", "label")
    }
    want = None if verify_images else (lambda f: f not in IMAGE_EXTS)
    for raw in iter_shard(url, counter, expected, want):
        ext = image_field(raw)
        if ext is None:
            counter.add(R.MISSING_IMAGE, f"{url}:{raw.key} has fields {sorted(raw.fields)}")
            continue
        text = parse_text_fields(raw, vocab, counter)
        if text is None:
            continue
        if verify_images:
            try:
                decode_image(raw.fields[ext])  # type: ignore[arg-type]
            except IMAGE_ERRORS as e:
                counter.add(image_error_reason(e), f"{url}:{raw.key}: {type(e).__name__}: {e}")
                continue
        counter.ok()
        off, size = raw.spans[ext]
        out["offset"].append(off)
        out["size"].append(size)
        out["key"].append(raw.key)
        out["caption"].append(text[0])
        out["tags"].append(text[1])
        out["label"].append(text[2])
    return out, counter


def index_shards(
    urls: str | Sequence[str],
    *,
    class_names: Sequence[str] | str | os.PathLike | None = None,
    num_workers: int = 0,
    verify_images: bool = False,
    max_bad_fraction: float = 0.01,
    min_samples: int = 1000,
) -> ShardIndex:
    """Index local tar shards for map-style reading (see the module docstring).

    ``verify_images`` decodes every image during the pass (slow; otherwise broken images
    are found, skipped and counted when read). Bad records are skipped and counted;
    ``max_bad_fraction`` is enforced on the whole pass.
    """
    shards = list_shards(urls)
    remote = [u for u in shards if not is_local(u)]
    if remote:
        raise ValueError(
            f"index_shards needs local shard files for random access, got e.g. {remote[:2]}; "
            "copy the shards to local disk or use the streaming WebDatasetPairs"
        )
    vocab = ClassVocab.resolve(class_names, Path(local_path(shards[0])).parent)
    if vocab is None:
        vocab = vocab_from_shards(shards)
    names = None if vocab is None else vocab.class_names
    parents = None if vocab is None else vocab.parents.tolist()
    sizes = read_sizes(shards)
    args = [(u, names, parents, sizes.get(u), verify_images) for u in shards]
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers) as pool:
            results = list(pool.map(_index_one, *zip(*args)))
    else:
        results = [_index_one(*a) for a in args]

    counter = BadSampleCounter(max_bad_fraction, min_samples, name=f"index of {len(shards)} shards")
    for _, c in results:
        counter.merge(c)
    counter.log_summary()
    counter.check()
    counts = [len(r["offset"]) for r, _ in results]
    if sum(counts) == 0:
        raise ValueError(f"no readable sample in {len(shards)} shards ({counter.as_dict()})")

    def cat(k: str, dtype: Any) -> np.ndarray:
        return np.asarray([v for r, _ in results for v in r[k]], dtype=dtype)

    tag_lists = [t for r, _ in results for t in r["tags"]]
    return ShardIndex(
        shards=shards,
        shard=np.repeat(np.arange(len(shards), dtype=np.int32), counts),
        offset=cat("offset", np.int64),
        size=cat("size", np.int64),
        keys=PackedStrings.from_strings(k for r, _ in results for k in r["key"]),
        captions=PackedStrings.from_strings(c for r, _ in results for c in r["caption"]),
        labels=cat("label", np.int64),
        tags=None if vocab is None else vocab.table(tag_lists),
        class_names=[] if names is None else list(names),
        bad=counter.as_dict(),
    )


class IndexedShardPairs:
    """A map-style :class:`PairSource` over indexed tar shards (reads by ``pread``).

    Args:
        index: a :class:`ShardIndex` or the path of a saved one.
        max_open_files: open shard files kept per process (least recently used closed).
        max_bad_fraction, min_samples: the ceiling for images found broken when read.

    ``self.bad`` starts from the samples the index pass dropped and counts every indexed
    sample once, at its first read (as the CSV reader counts rows).
    """

    def __init__(
        self,
        index: ShardIndex | str | os.PathLike,
        max_open_files: int = 64,
        max_bad_fraction: float = 0.01,
        min_samples: int = 1000,
    ) -> None:
        self.index = index if isinstance(index, ShardIndex) else ShardIndex.load(index)
        self.max_open_files = int(max_open_files)
        self.bad = BadSampleCounter(
            max_bad_fraction, min_samples, name="indexed shards", num_rows=len(self.index)
        )
        index_pass = self.index.bad or {}
        if index_pass.get("seen"):
            dropped = Counter({k: int(v) for k, v in index_pass.get("by_reason", {}).items()})
            notes = Counter({k: int(v) for k, v in index_pass.get("notes", {}).items()})
            self.bad.start_up(int(index_pass["seen"]), dropped, {}, notes)
        self._known_bad: set[int] = set()
        self.decoder = ImageDecoder()  # pixel cap and JPEG draft (set by the datamodule)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = OrderedDict()  # file descriptors do not travel to worker processes
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to use
            self._fds, self._pid = OrderedDict(), os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(local_path(self.index.shards[shard]), os.O_RDONLY)
            self._fds[shard] = fd
            while len(self._fds) > self.max_open_files:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(shard)
        return fd

    def read_image_bytes(self, i: int) -> bytes:
        """The encoded image of pair ``i`` as stored in its shard."""
        idx = self.index
        size = int(idx.size[i])
        data = os.pread(self._fd(int(idx.shard[i])), size, int(idx.offset[i]))
        if len(data) != size:
            raise OSError(
                f"short read of pair {i} from {idx.shards[int(idx.shard[i])]}: shard changed?"
            )
        return data

    # ---------------------------------------------------------------- PairSource
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} pairs")
        j, image = first_good(
            int(i) % n,
            n,
            lambda k: self.decoder(self.read_image_bytes(k)),
            self.bad,
            self._known_bad,
            image_error_reason,
            IMAGE_ERRORS,
            where=lambda k: f"{self.index.shards[int(self.index.shard[k])]}:{self.index.keys[k]}",
        )
        tags = self.index.tags
        item = {
            "image": image,
            "caption": self.index.captions[j],
            "tags": [] if tags is None else tags.tags_of(j).tolist(),
            "label": int(self.index.labels[j]),
            "index": j,
            "key": self.index.keys[j],
        }
        return attach_log(item, self.bad)

    @property
    def captions(self) -> PackedStrings:
        return self.index.captions

    @property
    def tag_table(self) -> TagTable | None:
        return self.index.tags

    @property
    def class_names(self) -> list[str]:
        return list(self.index.class_names)


# --------------------------------------------------------------------- index cache
def index_fingerprint(shards: Sequence[str], class_names: Any, verify_images: bool) -> str:
    """A name for the cached index of ``shards``: changes when a shard's size or
    modification time, the class list or ``verify_images`` changes."""
    h = hashlib.sha1()
    for url in shards:
        st = os.stat(local_path(url))
        h.update(f"{os.path.abspath(local_path(url))}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    names = class_names.class_names if isinstance(class_names, ClassVocab) else class_names
    h.update(json.dumps(names if names is None or isinstance(names, str) else list(names)).encode())
    h.update(b"verify" if verify_images else b"")
    return h.hexdigest()[:16]


def cached_index(
    shards: list[str],
    class_names: Any,
    index_dir: str | None,
    index_path: str | None,
    rebuild: bool,
    workers: int,
    verify_images: bool,
    max_bad_fraction: float,
    min_samples: int,
) -> ShardIndex:
    """The :class:`ShardIndex` of ``shards``: loaded from ``index_path`` (or the cache file
    ``index_dir/<fingerprint>.npz``) when present and built for these shards, else built
    with one pass over the shards and saved there (kept in memory when neither is set)."""
    path: Path | None = None
    if index_path is not None:
        path = Path(str(index_path)).expanduser()
    elif index_dir is not None:
        path = Path(str(index_dir)).expanduser() / (
            f"index-{index_fingerprint(shards, class_names, verify_images)}.npz"
        )
    if path is not None and path.is_file() and not rebuild:
        index = ShardIndex.load(path)
        if index.shards != list(shards):
            raise ValueError(
                f"data.source.index_path={path} indexes other shards ({len(index.shards)}, e.g. "
                f"{index.shards[:2]}) than data.source.urls ({len(shards)}, e.g. {shards[:2]}); "
                "point index_path elsewhere or set data.source.rebuild_index=true"
            )
        log.info("loaded shard index %s (%d pairs)", path, len(index))
        BadSampleCounter(max_bad_fraction, min_samples, name=f"index {path}").merge(
            _counter_from(index.bad)
        ).check()
        return index
    log.info("indexing %d shard(s) (one pass, image bytes skipped)...", len(shards))
    index = index_shards(
        shards,
        class_names=class_names,
        num_workers=workers,
        verify_images=verify_images,
        max_bad_fraction=max_bad_fraction,
        min_samples=min_samples,
    )
    if path is not None:
        write_atomic(path, index.save)
        log.info("saved shard index %s (%d pairs)", path, len(index))
    return index


def _counter_from(report: Mapping[str, Any]) -> BadSampleCounter:
    c = BadSampleCounter(1.0)
    c.good = int(report.get("good", 0))
    c.bad.update(report.get("by_reason", {}))
    c.notes.update(report.get("notes", {}))
    return c
