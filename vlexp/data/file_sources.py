"""Data sources over files: ``data=csv``, ``data=webdataset`` (streaming), ``data=wds_indexed``.

Registered in :data:`vlexp.data.sources.DATASETS`; the readers themselves live in
:mod:`vlexp.data.csv_source`, :mod:`vlexp.data.webdataset_source` and
:mod:`vlexp.data.shard_index`. Every source builds:

* ``train``: the training pairs. ``csv`` and ``wds_indexed`` are map-style (every
  sampler works, TOnICS included, with tags from the ``tags`` column / ``.json`` field);
  ``webdataset`` is a stream (:class:`StreamingPairs`): the datamodule batches it with a
  plain ``DataLoader`` and the reader splits shards by rank and worker itself.
* ``val`` / ``test``: optional held-out sets from separate files (``val_path`` /
  ``test_path`` tables, ``val_urls`` / ``test_urls`` shards), one caption per image,
  named ``eval_name``; zero-shot classification runs on them when the pairs carry labels
  and class names exist (``classes.json`` or ``class_names``). COCO / Flickr30k /
  ImageNet sets are added to any source with ``eval.extra_sets`` (:mod:`vlexp.eval.datasets`).

``num_train`` / ``num_val`` / ``num_test`` keep at most the first N pairs of each split
(``null``: all), so the size presets written for the synthetic source (``debug=tiny_run``)
also shrink file data. Other knobs of the synthetic generator that such presets set
(``num_test_compositional``, ``noisy_caption_frac``, ...) mean nothing for files: they are
accepted and ignored with a log line. ``image_size`` is read by the tiny encoders
(``encoder.image_size: ${data.source.image_size}``): the side images are resized to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.csv_source import CsvPairs, table_columns, table_format
from vlexp.data.records import ClassVocab
from vlexp.data.shard_index import IndexedShardPairs, ShardIndex, index_shards
from vlexp.data.shards import list_shards, local_path, quota
from vlexp.data.sources import DATASETS, DataSplits
from vlexp.data.types import Subset
from vlexp.data.webdataset_source import WebDatasetPairs
from vlexp.eval.datasets import load_templates
from vlexp.eval.sets import EvalSet

log = logging.getLogger(__name__)

STREAMING_SAMPLERS = ("random",)
"""Samplers a streaming source supports (shard shuffling + shuffle buffer = ``random``)."""

# Knobs of the synthetic generator that presets (debug/experiment) may set on data.source;
# file sources accept and ignore them.
SYNTHETIC_ONLY_KNOBS = frozenset(
    {
        "num_test_compositional",
        "min_objects",
        "max_objects",
        "noisy_caption_frac",
        "low_complexity_frac",
        "text_in_image_frac",
        "action_frac",
        "random_text_frac",
        "finegrained_k",
    }
)


# --------------------------------------------------------------------- shared helpers
def _ignore_synthetic_knobs(source: str, knobs: Mapping[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(knobs) - SYNTHETIC_ONLY_KNOBS)
    if unknown:
        raise TypeError(
            f"data.source '{source}' got unknown option(s) {unknown}; accepted options: "
            f"{sorted(accepted)}"
        )
    if knobs:
        log.info(
            "data.source '%s': ignoring synthetic-generator option(s) %s (no meaning for files)",
            source,
            sorted(knobs),
        )


def _accepted(func: Any) -> list[str]:
    import inspect

    return [
        n
        for n, p in inspect.signature(func).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD and n != "seed"
    ]


def _need_file(value: Any, key: str, what: str) -> Path:
    if value is None or str(value) == "":
        raise ValueError(f"{key} is not set: give the path of the {what} ({key}=/path/...)")
    p = Path(str(value)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{key}={value}: the {what} does not exist (no such file)")
    return p


def _need_dir(value: Any, key: str, what: str) -> Path:
    p = Path(str(value)).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{key}={value}: the {what} does not exist (no such folder)")
    return p


def _shards(spec: Any, key: str) -> list[str]:
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise ValueError(
            f"{key} is not set: give the shards, e.g. {key}='/data/cc3m/{{00000..00331}}.tar' "
            "(brace ranges, a folder, a glob, or several specs joined by '::')"
        )
    try:
        return list_shards(spec if isinstance(spec, str) else [str(s) for s in spec])
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{key}: {e}") from None


def _check_cap(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: expected a positive integer or null (all pairs)")
    return int(value)


def capped(source: Any, n: int | None) -> Any:
    """The first ``n`` pairs of a map-style source (the source itself when ``n`` is None
    or not smaller)."""
    if n is None or n >= len(source):
        return source
    return Subset(source, np.arange(n))


def _labels_of(source: Any) -> np.ndarray | None:
    """Per-pair class ids of a reader (through :class:`Subset` views), None when unknown."""
    if isinstance(source, Subset):
        inner = _labels_of(source.source)
        return None if inner is None else inner[source.indices]
    labels = getattr(source, "labels", None)
    if labels is None and isinstance(getattr(source, "index", None), ShardIndex):
        labels = source.index.labels
    return None if labels is None else np.asarray(labels)


def pairs_eval_set(name: str, source: Any, templates: list[str]) -> EvalSet:
    """A held-out :class:`EvalSet` of a pair source: retrieval (one caption per image) plus
    zero-shot classification when the pairs carry labels and class names exist."""
    labels = _labels_of(source)
    names = list(source.class_names or [])
    zeroshot = bool(names) and labels is not None and bool((labels >= 0).any())
    top = int(labels.max()) if zeroshot else -1  # type: ignore[union-attr]
    if top >= len(names):
        log.warning(
            "eval set %s: labels go up to %d but only %d class names exist; zero-shot "
            "classification is off",
            name,
            top,
            len(names),
        )
        zeroshot = False
    return EvalSet.from_pairs(name, source, names if zeroshot else (), templates)


def _held_out(
    name: str, stage: str, build: Any, cap: int | None, templates: list[str]
) -> list[EvalSet]:
    if build is None:
        return []
    source = capped(build(), cap)
    log.info("%s set '%s': %d pairs", stage, name, len(source))
    return [pairs_eval_set(name, source, templates)]


# --------------------------------------------------------------------- csv
@DATASETS.register("csv")
def csv_splits(
    path: str | None = None,
    root: str | None = None,
    image_col: str = "filepath",
    caption_col: str = "caption",
    tags_col: str | None = "auto",
    label_col: str | None = "auto",
    sep: str | None = None,
    class_names: str | Sequence[str] | None = None,
    check_files: bool = True,
    val_path: str | None = None,
    test_path: str | None = None,
    eval_name: str = "heldout",
    templates: str | Sequence[str] | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    max_bad_fraction: float = 0.01,
    min_samples: int = 1000,
    image_size: int | None = None,
    **synthetic_knobs: Any,
) -> DataSplits:
    """Pairs listed in a CSV/TSV/parquet table of image paths (relative to ``root``, default
    the table's folder) and captions; see the module docstring and ``conf/data/csv.yaml``.

    ``tags_col`` / ``label_col``: a column name, ``"auto"`` (``tags`` / ``label`` when the
    table has such a column) or ``None``. Tags are class names joined by ``;``.
    """
    _ignore_synthetic_knobs("csv", synthetic_knobs, _accepted(csv_splits))
    table = _need_file(path, "data.source.path", "pairs table (.csv/.tsv/.parquet)")
    if root is not None:
        _need_dir(root, "data.source.root", "image root folder")
    caps = {
        k: _check_cap(v, f"data.source.{k}")
        for k, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test))
    }
    temps = load_templates(templates, "data.source.templates")

    def read(p: Path, vocab: Any) -> CsvPairs:
        cols = table_columns(p, table_format(p, sep))
        return CsvPairs(
            p,
            root=root,
            image_col=image_col,
            caption_col=caption_col,
            tags_col=_auto_col(tags_col, "tags", cols),
            label_col=_auto_col(label_col, "label", cols),
            sep=sep,
            class_names=vocab,
            check_files=check_files,
            max_bad_fraction=max_bad_fraction,
            min_samples=min_samples,
        )

    train = read(table, class_names)
    vocab = train.vocab if train.vocab is not None else class_names

    def held(key: str, value: Any) -> Any:
        if value is None:
            return None
        p = _need_file(value, f"data.source.{key}", "held-out pairs table")
        return lambda: read(p, vocab)

    log.info(
        "data=csv: %d training pairs from %s (tags: %s)",
        len(train),
        table,
        "yes" if train.tag_table is not None else "no",
    )
    return DataSplits(
        train=capped(train, caps["num_train"]),
        val=_held_out(eval_name, "val", held("val_path", val_path), caps["num_val"], temps),
        test=_held_out(eval_name, "test", held("test_path", test_path), caps["num_test"], temps),
    )


def _auto_col(value: str | None, default: str, columns: list[str]) -> str | None:
    if value == "auto":
        return default if default in columns else None
    return value


# --------------------------------------------------------------------- shards: eval helper
def _shard_eval_builder(
    spec: Any,
    key: str,
    class_names: Any,
    index_workers: int,
    index_dir: str | None,
    max_bad_fraction: float,
    min_samples: int,
) -> Any:
    if spec is None:
        return None
    shards = _shards(spec, key)
    return lambda: IndexedShardPairs(
        cached_index(
            shards,
            class_names,
            index_dir,
            None,
            False,
            index_workers,
            False,
            max_bad_fraction,
            min_samples,
        ),
        max_bad_fraction=max_bad_fraction,
        min_samples=min_samples,
    )


# --------------------------------------------------------------------- webdataset (stream)
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
        return StreamingPairs(self._urls, max_samples=self.max_samples, **kwargs)

    def _item_budget(self, worker: int, num_workers: int) -> int | None:
        if self.max_samples is None or self.resampled:
            return super()._item_budget(worker, num_workers)
        return quota(self.max_samples // self.world_size, num_workers, worker)


@DATASETS.register("webdataset")
def webdataset_splits(
    urls: str | Sequence[str] | None = None,
    sources: Sequence[str | Sequence[str]] | None = None,
    weights: Sequence[float] | None = None,
    shuffle_buffer: int = 1000,
    shuffle_shards: bool = True,
    resampled: bool = False,
    samples_per_epoch: int | None = None,
    class_names: str | Sequence[str] | None = None,
    val_urls: str | Sequence[str] | None = None,
    test_urls: str | Sequence[str] | None = None,
    eval_name: str = "heldout",
    templates: str | Sequence[str] | None = None,
    index_dir: str | None = None,
    index_workers: int = 0,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    max_bad_fraction: float = 0.01,
    min_samples: int = 1000,
    image_size: int | None = None,
    seed: int = 0,
    **synthetic_knobs: Any,
) -> DataSplits:
    """Streaming pairs from img2dataset-style tar shards (``urls``, or several ``sources``
    mixed by ``weights``); see ``conf/data/webdataset.yaml``.

    ``resampled=true`` draws shards with replacement, ``samples_per_epoch`` (default
    ``num_train``, else all known samples) per epoch, split evenly over ranks: use it for
    multi-GPU runs. Held-out ``val_urls`` / ``test_urls`` are indexed (one pass, cached in
    ``index_dir``) and read map-style.
    """
    _ignore_synthetic_knobs("webdataset", synthetic_knobs, _accepted(webdataset_splits))
    caps = {
        k: _check_cap(v, f"data.source.{k}")
        for k, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test))
    }
    if (urls is None) == (sources is None):
        raise ValueError(
            "data=webdataset needs exactly one of data.source.urls (one set of shards) or "
            "data.source.sources (a list of shard specs mixed by data.source.weights)"
        )
    if urls is not None:
        shard_arg: dict[str, Any] = {"urls": _shards(urls, "data.source.urls")}
    else:
        shard_arg = {
            "sources": [_shards(s, f"data.source.sources[{k}]") for k, s in enumerate(sources)]
        }  # type: ignore[arg-type]
    if resampled and samples_per_epoch is None:
        samples_per_epoch = caps["num_train"]
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
        class_names=_plain_list(class_names),
        max_bad_fraction=max_bad_fraction,
        min_samples=min_samples,
        max_samples=None if resampled else caps["num_train"],
    )
    temps = load_templates(templates, "data.source.templates")
    vocab = train.vocab if train.vocab is not None else _plain_list(class_names)
    build = {
        k: _shard_eval_builder(
            v, f"data.source.{k}", vocab, index_workers, index_dir, max_bad_fraction, min_samples
        )
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
        val=_held_out(eval_name, "val", build["val_urls"], caps["num_val"], temps),
        test=_held_out(eval_name, "test", build["test_urls"], caps["num_test"], temps),
    )


def _plain_list(value: Any) -> Any:
    if value is None or isinstance(value, str | os.PathLike | ClassVocab):
        return value
    return [str(v) for v in value]


# --------------------------------------------------------------------- wds_indexed
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        index.save(tmp)
        os.replace(tmp, path)
        log.info("saved shard index %s (%d pairs)", path, len(index))
    return index


def _counter_from(report: Mapping[str, Any]) -> BadSampleCounter:
    c = BadSampleCounter(1.0)
    c.good = int(report.get("good", 0))
    c.bad.update(report.get("by_reason", {}))
    c.notes.update(report.get("notes", {}))
    return c


@DATASETS.register("wds_indexed")
def wds_indexed_splits(
    urls: str | Sequence[str] | None = None,
    index_path: str | None = None,
    index_dir: str | None = None,
    rebuild_index: bool = False,
    index_workers: int = 0,
    verify_images: bool = False,
    max_open_files: int = 64,
    class_names: str | Sequence[str] | None = None,
    val_urls: str | Sequence[str] | None = None,
    test_urls: str | Sequence[str] | None = None,
    eval_name: str = "heldout",
    templates: str | Sequence[str] | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    max_bad_fraction: float = 0.01,
    min_samples: int = 1000,
    image_size: int | None = None,
    **synthetic_knobs: Any,
) -> DataSplits:
    """Map-style pairs from local tar shards through a one-off index pass (every sampler
    works, TOnICS included; tags from the ``.json`` ``tags`` field); see
    ``conf/data/wds_indexed.yaml`` and :mod:`vlexp.data.shard_index`."""
    _ignore_synthetic_knobs("wds_indexed", synthetic_knobs, _accepted(wds_indexed_splits))
    caps = {
        k: _check_cap(v, f"data.source.{k}")
        for k, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test))
    }
    shards = _shards(urls, "data.source.urls")
    names = _plain_list(class_names)
    index = cached_index(
        shards,
        names,
        index_dir,
        index_path,
        rebuild_index,
        index_workers,
        verify_images,
        max_bad_fraction,
        min_samples,
    )
    train = IndexedShardPairs(
        index,
        max_open_files=max_open_files,
        max_bad_fraction=max_bad_fraction,
        min_samples=min_samples,
    )
    temps = load_templates(templates, "data.source.templates")
    vocab = (
        ClassVocab(index.class_names, index.tags.parents if index.tags is not None else None)
        if index.class_names
        else names
    )
    build = {
        k: _shard_eval_builder(
            v, f"data.source.{k}", vocab, index_workers, index_dir, max_bad_fraction, min_samples
        )
        for k, v in (("val_urls", val_urls), ("test_urls", test_urls))
    }
    log.info(
        "data=wds_indexed: %d training pairs in %d shard(s) (tags: %s)",
        len(train),
        len(shards),
        "yes" if train.tag_table is not None else "no",
    )
    return DataSplits(
        train=capped(train, caps["num_train"]),
        val=_held_out(eval_name, "val", build["val_urls"], caps["num_val"], temps),
        test=_held_out(eval_name, "test", build["test_urls"], caps["num_test"], temps),
    )


# --------------------------------------------------------------------- datamodule support
def is_streaming(source: Any) -> bool:
    """True for sources read as a stream (no random access; batched by a plain DataLoader)."""
    return isinstance(source, torch.utils.data.IterableDataset)


def check_streaming_setup(
    source: Any,
    sampler_cfg: Mapping[str, Any],
    filter_cfg: Mapping[str, Any],
    total_steps: int | None,
) -> None:
    """Raise a clear error when the config asks a streaming source for something it cannot do."""
    name = getattr(source, "__class__", type(source)).__name__
    sampler = str(sampler_cfg.get("name"))
    if sampler not in STREAMING_SAMPLERS:
        raise ValueError(
            f"sampler={sampler} needs random access to the training pairs, but the data source "
            f"streams them ({name}, data=webdataset). A stream supports only sampler="
            f"{'|'.join(STREAMING_SAMPLERS)} (shards shuffled per epoch + a shuffle buffer of "
            "data.source.shuffle_buffer samples). For TOnICS and other batch-planning samplers "
            "use data=wds_indexed on the same shards (a one-off index pass, then random access)."
        )
    flt = str(filter_cfg.get("name", "none"))
    if flt != "none":
        raise ValueError(
            f"filter={flt} scans every training caption before training, which a stream "
            "(data=webdataset) cannot offer. Run the standalone pass (python -m vlexp.filter "
            "input=... output_dir=..., see docs/FILTER_PASS.md) and stream its output with "
            "filter=none, or use data=wds_indexed."
        )
    if total_steps is None and not getattr(source, "resampled", False):
        raise ValueError(
            "a non-resampled stream has no known length, so the run needs trainer.max_steps "
            "(> 0), or set data.source.resampled=true with data.source.samples_per_epoch"
        )


def bad_sample_report(source: Any) -> dict[str, Any] | None:
    """Skipped/altered record counts of a reader (``None`` for sources that keep none):
    ``read`` (this process's counter) and, for indexed shards, ``index_pass``."""
    while isinstance(source, Subset):
        source = source.source
    out: dict[str, Any] = {}
    index = getattr(source, "index", None)
    if isinstance(index, ShardIndex) and index.bad:
        out["index_pass"] = dict(index.bad)
    counter = getattr(source, "bad", None)
    if isinstance(counter, BadSampleCounter):
        out["read"] = counter.as_dict()
    return out or None
