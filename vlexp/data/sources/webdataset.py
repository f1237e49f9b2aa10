"""``data.source.name=webdataset``: streaming pairs from img2dataset-style tar shards.

The stream (:class:`~vlexp.data.readers.webdataset_reader.StreamingPairs`) is batched by
a plain ``DataLoader``; the reader splits shards by rank and worker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vlexp.data.readers.webdataset_reader import StreamingPairs
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
    **options: Any,
) -> DataSplits:
    """Streaming pairs from img2dataset-style tar shards (``urls``, or several ``sources``
    mixed by ``weights``); see ``conf/data/webdataset.yaml``.

    ``resampled=true`` draws shards with replacement, ``samples_per_epoch`` (default
    ``num_train``, else all known samples) per epoch, split evenly over ranks: use it for
    multi-GPU runs. Held-out ``val_urls`` / ``test_urls`` are indexed (one pass, cached in
    ``index_dir``) and read map-style.
    """
    opts = SplitOptions.take("webdataset", webdataset_splits, options)
    if (urls is None) == (sources is None):
        raise ValueError(
            "data=webdataset needs exactly one of data.source.urls (one set of shards) or "
            "data.source.sources (a list of shard specs mixed by data.source.weights)"
        )
    if urls is not None:
        shard_arg: dict[str, Any] = {"urls": shards_of(urls, "data.source.urls")}
    else:
        shard_arg = {
            "sources": [shards_of(s, f"data.source.sources[{k}]") for k, s in enumerate(sources)]
        }  # type: ignore[arg-type]
    if resampled and samples_per_epoch is None:
        samples_per_epoch = opts.cap("train")
    train = StreamingPairs(
        shard_arg.get("urls"),
        sources=shard_arg.get("sources"),
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
    temps = opts.prompt_templates()
    vocab = train.vocab if train.vocab is not None else plain_list(opts.class_names)
    build = {
        k: shard_eval_builder(v, f"data.source.{k}", vocab, index_workers, index_dir, opts)
        for k, v in (("val_urls", val_urls), ("test_urls", test_urls))
    }
    log.info(
        "data=webdataset: %d shard(s), %s samples known, resampled=%s",
        sum(len(s) for s in train.shards),
        train.num_known_samples,
        resampled,
    )
    return DataSplits(
        train=train,
        val=opts.held_out("val", build["val_urls"], temps),
        test=opts.held_out("test", build["test_urls"], temps),
    )
