"""`WebDatasetPairs`: streaming image-caption pairs from img2dataset-style tar shards.

An :class:`~torch.utils.data.IterableDataset` of pair items. Not resampled, each epoch
deals a seeded shard permutation to ranks, then to workers (every sample once);
resampled, every rank draws a fixed quota so all ranks have the same batch count.
Several sources interleave by ``weights``; a shuffle buffer holds raw records. Bad
records are skipped and counted once per sample like the indexed reader's. A stream has
no random access, so only the random sampler applies. Field rules, ordering and
counting: docs/DESIGN.md ("Streamed shards").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BAD_SAMPLES_KEY, BadSampleCounter, attach_log, merge_logs
from vlexp.data.records import IMAGE_ERRORS, ClassVocab, ImageDecoder, image_error_reason
from vlexp.data.shards.listing import (
    distributed_rank_world,
    is_local,
    list_shards,
    local_path,
    quota,
    read_sizes,
    split_by_node_and_worker,
    worker_id_count,
)
from vlexp.data.shards.samples import image_field, iter_shard, parse_text_fields, vocab_from_shards
from vlexp.data.shards.tario import RawSample

log = logging.getLogger(__name__)


def _shuffle_buffer(stream: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Approximate shuffle: a buffer of ``size`` items, a random one out per item in."""
    if size <= 1:
        yield from stream
        return
    buf: list[Any] = []
    for x in stream:
        if len(buf) < size:
            buf.append(x)
            continue
        k = int(rng.integers(len(buf)))
        buf[k], x = x, buf[k]
        yield x
    rng.shuffle(buf)  # type: ignore[arg-type]
    yield from buf


def _mix(
    streams: list[Iterator[Any]], weights: np.ndarray, rng: np.random.Generator
) -> Iterator[Any]:
    """Interleave streams, picking the next one with probability ~ weight until all end."""
    live = list(range(len(streams)))
    while live:
        w = weights[live]
        p = w / w.sum() if w.sum() > 0 else None  # only zero-weight streams left: uniform
        k = live[int(rng.choice(len(live), p=p))] if len(live) > 1 else live[0]
        try:
            yield next(streams[k])
        except StopIteration:
            live.remove(k)


def shard_vocab(sources: Sequence[Sequence[str]], class_names: Any) -> ClassVocab | None:
    """The class list of shard ``sources`` (one url list each): ``class_names`` when
    given, else the ``classes.json`` by each source's first (local) shard, which must
    agree, else the names found in the shards (a scan); None when they have none."""
    if class_names is not None:
        return ClassVocab.resolve(class_names, None)
    found: list[ClassVocab] = []
    for shards in sources:
        first = shards[0]
        if is_local(first):
            v = ClassVocab.resolve(None, Path(local_path(first)).parent)
            if v is not None:
                found.append(v)
    if not found:
        return vocab_from_shards([u for s in sources for u in s])
    if any(v.class_names != found[0].class_names for v in found[1:]):
        raise ValueError(
            "the sources' classes.json files list different classes; pass class_names "
            "(a shared list) so tags map to the same ids"
        )
    return found[0]


class WebDatasetPairs(torch.utils.data.IterableDataset):
    """Streaming pairs from tar shards (see the module docstring).

    Args:
        urls: one source: a shard spec (``/data/{00000..00099}.tar``, a directory, a
            glob, ``::``-joined specs) or a list of shard urls.
        sources: several sources instead (each a spec or a list of urls).
        weights: mixing weights of ``sources``.
        rank, world_size: this process's place among the ranks (default: from
            torch.distributed, else the RANK/WORLD_SIZE environment variables).
        shuffle_buffer: size of the shuffle buffer of raw records (0/1: none).
        shuffle_shards: permute the shard order every epoch.
        seed: base seed; the order depends on (seed, epoch) only.
        resampled: draw shards with replacement, ``samples_per_epoch`` per epoch.
        samples_per_epoch: global samples per epoch when resampled (default: all known).
        batch_size: every worker yields whole batches only (a loader with
            ``drop_last`` would drop the rest): when resampled, every worker's share is a
            multiple of it, so each rank yields ``samples_per_rank() // batch_size``
            batches; under a deferred counter the records of a worker's dropped partial
            batch ride on its last full batch.
        class_names: list or ``classes.json`` path (default: ``classes.json`` by the shards).
        max_bad_fraction, min_samples: the bad-sample ceiling (see ``bad_samples``).
    """

    def __init__(
        self,
        urls: str | Sequence[str] | None = None,
        *,
        sources: Sequence[str | Sequence[str]] | None = None,
        weights: Sequence[float] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        seed: int = 0,
        resampled: bool = False,
        samples_per_epoch: int | None = None,
        batch_size: int | None = None,
        class_names: Sequence[str] | str | os.PathLike | None = None,
        max_bad_fraction: float = 0.01,
        min_samples: int = 1000,
    ) -> None:
        super().__init__()
        if (urls is None) == (sources is None):
            raise ValueError("give exactly one of urls (one source) or sources (several)")
        specs = [urls] if urls is not None else list(sources)  # type: ignore[arg-type]
        self.shards: list[list[str]] = [list_shards(s) for s in specs]
        if weights is not None and len(weights) != len(self.shards):
            raise ValueError(f"{len(weights)} weights for {len(self.shards)} sources")
        if rank is None or world_size is None:
            rank_env, world_env = distributed_rank_world()
            rank = rank_env if rank is None else rank
            world_size = world_env if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        if not resampled:
            fewest = min(len(s) for s in self.shards)
            if fewest < self.world_size:
                raise ValueError(
                    f"a source has {fewest} shards for {self.world_size} ranks: some ranks would "
                    "get no data; use resampled=True or write more, smaller shards"
                )
        self.shuffle_buffer = int(shuffle_buffer)
        self.shuffle_shards = shuffle_shards
        self.seed = int(seed)
        self.resampled = resampled
        self.max_bad_fraction, self.min_samples = max_bad_fraction, min_samples

        all_urls = [u for s in self.shards for u in s]
        self.sizes = read_sizes(all_urls)
        self.offsets: dict[str, int] | None = None
        if all(u in self.sizes for u in all_urls):
            starts = np.cumsum([0] + [self.sizes[u] for u in all_urls])
            self.offsets = dict(zip(all_urls, starts[:-1].tolist()))
        totals = [sum(self.sizes.get(u, 0) for u in s) for s in self.shards]
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
        elif all(t > 0 for t in totals) and self.offsets is not None:
            w = np.asarray(totals, dtype=np.float64)
        else:
            w = np.ones(len(self.shards))
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixing weights must be >= 0 with a positive sum, got {w.tolist()}")
        self.weights = w / w.sum()
        self.num_known_samples = sum(totals) if self.offsets is not None else None
        if resampled:
            if samples_per_epoch is None:
                if self.num_known_samples is None:
                    raise ValueError(
                        "resampled=True needs samples_per_epoch (no sizes.json/_stats.json "
                        "next to the shards to count them)"
                    )
                samples_per_epoch = self.num_known_samples
            if samples_per_epoch < self.world_size:
                raise ValueError(
                    f"samples_per_epoch {samples_per_epoch} < world_size {self.world_size}"
                )
        self.samples_per_epoch = samples_per_epoch
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        if resampled and batch_size and self.samples_per_rank() == 0:
            raise ValueError(
                f"samples_per_epoch {samples_per_epoch} gives each of {self.world_size} ranks "
                f"less than one batch of {batch_size}"
            )
        self.vocab = self._resolve_vocab(class_names)
        self.bad = BadSampleCounter(
            max_bad_fraction,
            min_samples,
            name=f"webdataset rank {self.rank}",
            num_rows=self.num_known_samples,  # count each sample once when sizes are known
        )
        self.decoder = ImageDecoder()  # pixel cap and JPEG draft (set by the datamodule)
        self.epoch = 0
        self._iters_since_set = 0

    def _resolve_vocab(self, class_names: Any) -> ClassVocab | None:
        return shard_vocab(self.shards, class_names)

    # ---------------------------------------------------------------- views
    @property
    def class_names(self) -> list[str]:
        return [] if self.vocab is None else list(self.vocab.class_names)

    @property
    def tag_table(self) -> None:
        """Streams have no tag table; see ``vlexp.data.shards.index`` for a map-style one."""
        return None

    def samples_per_rank(self) -> int | None:
        """Samples this rank yields per epoch when resampled (None otherwise): the same
        on every rank (rounded down to whole batches when ``batch_size`` is set)."""
        if not self.resampled:
            return None
        per_rank = self.samples_per_epoch // self.world_size  # type: ignore[operator]
        return per_rank - per_rank % self.batch_size if self.batch_size else per_rank

    def _worker_budget(self, worker: int, num_workers: int) -> int:
        per_rank = int(self.samples_per_rank())  # type: ignore[arg-type]
        if not self.batch_size:
            return quota(per_rank, num_workers, worker)
        return quota(per_rank // self.batch_size, num_workers, worker) * self.batch_size

    def __len__(self) -> int:
        if not self.resampled:
            raise TypeError(
                "a non-resampled WebDatasetPairs has no fixed per-rank length (shards are dealt "
                "out per epoch); use resampled=True with samples_per_epoch for a fixed length"
            )
        return int(self.samples_per_rank())  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order, shuffles). Without calls, each new iteration of
        the same object (e.g. in a persistent DataLoader worker) advances by one."""
        self.epoch = int(epoch)
        self._iters_since_set = 0

    # ---------------------------------------------------------------- iteration
    def _item_budget(self, worker: int, num_workers: int) -> int | None:
        """Items this worker yields per epoch (None: until its shards end)."""
        return self._worker_budget(worker, num_workers) if self.resampled else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = worker_id_count()
        items = self._items(worker, num_workers)
        if self.batch_size and self.bad.is_deferred:
            yield from _whole_batches(items, self.batch_size, self.bad, worker)
        else:
            yield from items
        if not self.bad.is_deferred:
            self.bad.log_summary()

    def _items(self, worker: int, num_workers: int) -> Iterator[dict[str, Any]]:
        epoch = self.epoch + self._iters_since_set
        self._iters_since_set += 1
        if not self.bad.is_deferred:
            self.bad.name = f"webdataset rank {self.rank} worker {worker}"
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        budget = self._item_budget(worker, num_workers)
        if self.resampled:
            raw = self._resampled_stream(rng)
        else:
            raw = self._epoch_stream(epoch, worker, num_workers, rng)
        n = 0
        if budget == 0:
            return
        for sample in _shuffle_buffer(raw, self.shuffle_buffer, rng):
            item = self._decode(sample)
            if item is None:
                continue
            yield attach_log(item, self.bad)
            n += 1
            if budget is not None and n >= budget:
                break

    def _epoch_stream(
        self, epoch: int, worker: int, num_workers: int, rng: np.random.Generator
    ) -> Iterator[RawSample]:
        streams = []
        for s, shards in enumerate(self.shards):
            order = list(shards)
            if self.shuffle_shards:
                perm = np.random.default_rng([self.seed, epoch, s, 2]).permutation(len(order))
                order = [order[k] for k in perm]
            mine = split_by_node_and_worker(order, self.rank, self.world_size, worker, num_workers)
            streams.append(self._read_shards(mine))
        return _mix(streams, self.weights.copy(), rng)

    def _read_shard(self, url: str) -> Iterator[RawSample]:
        first = None if self.offsets is None else self.offsets[url]
        return iter_shard(url, self.bad, self.sizes.get(url), first_row=first)

    def _read_shards(self, urls: Iterable[str]) -> Iterator[RawSample]:
        for url in urls:
            yield from self._read_shard(url)

    def _resampled_stream(self, rng: np.random.Generator) -> Iterator[RawSample]:
        def endless(shards: list[str]) -> Iterator[RawSample]:
            empty_in_a_row = 0
            while True:
                url = shards[int(rng.integers(len(shards)))]
                got = 0
                for raw in self._read_shard(url):
                    got += 1
                    yield raw
                empty_in_a_row = 0 if got else empty_in_a_row + 1
                if empty_in_a_row >= max(10, 2 * len(shards)):
                    raise RuntimeError(
                        f"{empty_in_a_row} shards in a row yielded no sample (e.g. {url}); "
                        f"bad samples: {self.bad.as_dict()}"
                    )

        return _mix([endless(s) for s in self.shards], self.weights.copy(), rng)

    def _decode(self, raw: RawSample) -> dict[str, Any] | None:
        row = None if self.offsets is None else self.offsets[raw.url] + raw.position
        ext = image_field(raw)
        if ext is None:
            detail = f"{raw.url}:{raw.key} has fields {sorted(raw.fields)}"
            self.bad.add(R.MISSING_IMAGE, detail, row=row)
            return None
        text = parse_text_fields(raw, self.vocab, self.bad, row)
        if text is None:
            return None
        try:
            image = self.decoder(raw.fields[ext])  # type: ignore[arg-type]
        except IMAGE_ERRORS as e:
            detail = f"{raw.url}:{raw.key}: {type(e).__name__}: {e}"
            self.bad.add(image_error_reason(e), detail, row=row)
            return None
        self.bad.ok(row=row)
        caption, tags, label = text
        index = -1 if row is None else row
        return {
            "image": image,
            "caption": caption,
            "tags": tags,
            "label": label,
            "index": index,
            "key": raw.key,
        }


def _whole_batches(
    items: Iterator[dict[str, Any]], batch_size: int, counter: BadSampleCounter, worker: int
) -> Iterator[dict[str, Any]]:
    """``items`` in whole batches only; one full batch is held back so that the records of
    what follows it (a partial batch the loader would drop, skips at the end) can ride on
    its last item."""
    held: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield from held
            held, batch = batch, []
    tail = merge_logs([*(it.pop(BAD_SAMPLES_KEY, None) for it in batch), counter.take()])
    if not held:
        if tail:
            log.warning(
                "webdataset worker %d read %d sample(s) but no full batch of %d: they are not "
                "trained on and their bad-sample records are not reported",
                worker,
                len(batch),
                batch_size,
            )
        return
    if tail:
        last = held[-1]
        last[BAD_SAMPLES_KEY] = merge_logs([last.get(BAD_SAMPLES_KEY), *tail])[0]
    yield from held


STREAMING_SAMPLERS = ("random",)
"""Samplers a streaming source supports (shard shuffling + shuffle buffer = ``random``)."""


class StreamingPairs(WebDatasetPairs):
    """:class:`WebDatasetPairs` that can be re-bound to a rank (:meth:`for_rank`) once the
    trainer knows it, and that stops after ``max_samples`` per epoch when not resampled."""

    def __init__(self, urls: Any = None, *, max_samples: int | None = None, **kwargs: Any):
        super().__init__(urls, **kwargs)
        self._urls, self._kwargs = urls, dict(kwargs)
        self.max_samples = max_samples

    def for_rank(self, rank: int, world_size: int, batch_size: int | None = None) -> StreamingPairs:
        """The same stream for ``rank`` of ``world_size``, yielding whole batches of
        ``batch_size`` per worker; when resampled every rank yields the same batches.
        The class list is carried over (not looked up again)."""
        kwargs = dict(
            self._kwargs,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            class_names=self.vocab,
        )
        stream = StreamingPairs(self._urls, max_samples=self.max_samples, **kwargs)
        stream.decoder = self.decoder
        return stream

    def _item_budget(self, worker: int, num_workers: int) -> int | None:
        if self.max_samples is None or self.resampled:
            return super()._item_budget(worker, num_workers)
        return quota(self.max_samples // self.world_size, num_workers, worker)
