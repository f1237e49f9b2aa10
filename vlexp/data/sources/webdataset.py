"""``data.source.name=webdataset``: streaming pairs from img2dataset-style tar shards.

The stream (:class:`~vlexp.data.readers.webdataset_reader.StreamingPairs`) is batched by
a plain ``DataLoader``; the reader splits shards by rank and worker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vlexp.data.readers.webdataset_reader import StreamingPairs, shard_vocab
from vlexp.data.sources.base import DATASETS, DataSplits
from vlexp.data.sources.common import (
    SplitOptions,
    held_out_names,
    plain_list,
    shard_eval_builder,
    shards_of,
    stream_checks,
)
from vlexp.data.sources.schema import WEBDATASET_SCHEMA

log = logging.getLogger(__name__)


@DATASETS.register(
    "webdataset",
    schema=WEBDATASET_SCHEMA,
    hooks={"eval_names": held_out_names, "checks": stream_checks},
)
def webdataset_splits(
    urls: str | Sequence[str] | None = None,
    sources: Sequence[str | Sequence[str]] | None = None,
    weights: Sequence[float] | None = None,
    shuffle_buffer: int = 1000,
    shuffle_shards: bool = True,
    resampled: bool = False,
    samples_per_epoch: int | None = None,
    val_urls: str | Sequence[str] | None = None,
    test_urls: str | Sequence[str] | None = None,
    index_dir: str | None = None,
    index_workers: int = 0,
    seed: int = 0,
    build_train: bool = True,
    **options: Any,
) -> DataSplits:
    """Streaming pairs from img2dataset-style tar shards (``urls``, or several ``sources``
    mixed by ``weights``); see ``conf/data/webdataset.yaml``.

    ``resampled=true`` draws shards with replacement, ``samples_per_epoch`` (default
    ``num_train``, else all known samples) per epoch, split evenly over ranks: use it for
    multi-GPU runs. Held-out ``val_urls`` / ``test_urls`` are indexed (one pass, cached in
    ``index_dir``) and read map-style. ``build_train=False`` (evaluation) opens no stream:
    only the training shards' class list is looked up, for the held-out labels.
    """
    opts = SplitOptions.take("webdataset", webdataset_splits, options)
    if (urls is None) == (sources is None):
        raise ValueError(
            "data=webdataset needs exactly one of data.source.urls (one set of shards) or "
            "data.source.sources (a list of shard specs mixed by data.source.weights)"
        )
    names = plain_list(opts.class_names)
    if build_train:
        train = _stream(_listed(urls, sources), weights, shuffle_buffer, shuffle_shards,
                        resampled, samples_per_epoch, seed, opts)  # fmt: skip
        vocab = train.vocab
        log.info(
            "data=webdataset: %d shard(s), %s samples known, resampled=%s",
            sum(len(s) for s in train.shards),
            train.num_known_samples,
            resampled,
        )
    else:  # evaluation: the class list only (shards not even listed when class_names is set)
        train, listed = None, {} if names is not None else _listed(urls, sources)
        vocab = shard_vocab(listed.get("sources") or [listed["urls"]] if listed else [], names)
    vocab = vocab if vocab is not None else names
    temps = opts.prompt_templates()
    build = {
        k: shard_eval_builder(v, f"data.source.{k}", vocab, index_workers, index_dir, opts)
        for k, v in (("val_urls", val_urls), ("test_urls", test_urls))
    }
    return DataSplits(
        train=train,
        val=opts.held_out("val", build["val_urls"], temps),
        test=opts.held_out("test", build["test_urls"], temps),
    )


def _listed(urls: Any, sources: Any) -> dict[str, Any]:
    """``{"urls": [...]}`` (one source) or ``{"sources": [[...], ...]}``: the shard urls."""
    if urls is not None:
        return {"urls": shards_of(urls, "data.source.urls")}
    return {"sources": [shards_of(s, f"data.source.sources[{k}]") for k, s in enumerate(sources)]}


def _stream(
    shards: dict[str, Any],
    weights: Sequence[float] | None,
    shuffle_buffer: int,
    shuffle_shards: bool,
    resampled: bool,
    samples_per_epoch: int | None,
    seed: int,
    opts: SplitOptions,
) -> StreamingPairs:
    """The training stream (rank 0 of 1 until the datamodule binds it to its rank)."""
    if resampled and samples_per_epoch is None:
        samples_per_epoch = opts.cap("train")
    return StreamingPairs(
        shards.get("urls"),
        sources=shards.get("sources"),
        weights=None if weights is None else list(weights),
        rank=0,
        world_size=1,
        shuffle_buffer=shuffle_buffer,
        shuffle_shards=shuffle_shards,
        seed=seed,
        resampled=resampled,
        samples_per_epoch=samples_per_epoch,
        class_names=plain_list(opts.class_names),
        max_bad_fraction=opts.max_bad_fraction,
        min_samples=opts.min_samples,
        max_samples=None if resampled else opts.cap("train"),
    )
