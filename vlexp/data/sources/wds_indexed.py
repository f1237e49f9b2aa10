"""``data.source.name=wds_indexed``: map-style pairs from local tar shards via an index."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vlexp.data.eval_set import EvalSet
from vlexp.data.readers.webdataset_reader import shard_vocab
from vlexp.data.records import ClassVocab
from vlexp.data.shards.index import IndexedShardPairs, cached_index
from vlexp.data.sources.base import DATASETS, DataSplits
from vlexp.data.sources.common import (
    SplitOptions,
    capped,
    held_out_names,
    plain_list,
    shard_eval_builder,
    shards_of,
)
from vlexp.data.sources.schema import WDS_INDEXED_SCHEMA

log = logging.getLogger(__name__)


@DATASETS.register("wds_indexed", schema=WDS_INDEXED_SCHEMA, hooks={"eval_names": held_out_names})
def wds_indexed_splits(
    urls: str | Sequence[str] | None = None,
    index_path: str | None = None,
    index_dir: str | None = None,
    rebuild_index: bool = False,
    index_workers: int = 0,
    verify_images: bool = False,
    max_open_files: int = 64,
    val_urls: str | Sequence[str] | None = None,
    test_urls: str | Sequence[str] | None = None,
    build_train: bool = True,
    **options: Any,
) -> DataSplits:
    """Map-style pairs from local tar shards through a one-off index pass (every sampler
    works, TOnICS included; tags from the ``.json`` ``tags`` field); see
    ``conf/data/wds_indexed.yaml`` and :mod:`vlexp.data.shards.index`.
    ``build_train=False`` (evaluation) indexes no training shard: only their class list
    is looked up (as the index pass would), for the held-out labels."""
    opts = SplitOptions.take("wds_indexed", wds_indexed_splits, options)
    names = plain_list(opts.class_names)
    if not build_train:
        lists = [] if names is not None else [shards_of(urls, "data.source.urls")]
        vocab = shard_vocab(lists, names)
        held = _held_out_sets(val_urls, test_urls, vocab or names, index_workers, index_dir, opts)
        return DataSplits(train=None, val=held["val"], test=held["test"])
    shards = shards_of(urls, "data.source.urls")
    index = cached_index(
        shards,
        names,
        index_dir,
        index_path,
        rebuild_index,
        index_workers,
        verify_images,
        opts.max_bad_fraction,
        opts.min_samples,
    )
    train = IndexedShardPairs(
        index,
        max_open_files=max_open_files,
        max_bad_fraction=opts.max_bad_fraction,
        min_samples=opts.min_samples,
    )
    vocab = (
        ClassVocab(index.class_names, index.tags.parents if index.tags is not None else None)
        if index.class_names
        else names
    )
    held = _held_out_sets(val_urls, test_urls, vocab, index_workers, index_dir, opts)
    log.info(
        "data=wds_indexed: %d training pairs in %d shard(s) (tags: %s)",
        len(train),
        len(shards),
        "yes" if train.tag_table is not None else "no",
    )
    return DataSplits(train=capped(train, opts.cap("train")), val=held["val"], test=held["test"])


def _held_out_sets(
    val_urls: Any,
    test_urls: Any,
    vocab: Any,
    index_workers: int,
    index_dir: str | None,
    opts: SplitOptions,
) -> dict[str, list[EvalSet]]:
    """The ``val`` and ``test`` sets of held-out shards, labelled through ``vocab``."""
    temps = opts.prompt_templates()
    build = {
        k: shard_eval_builder(v, f"data.source.{k}_urls", vocab, index_workers, index_dir, opts)
        for k, v in (("val", val_urls), ("test", test_urls))
    }
    return {k: opts.held_out(k, build[k], temps) for k in ("val", "test")}
