"""VLDataModule: source -> filter -> sampler -> loader, for any registered source."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from vlexp.data.augment import Augment
from vlexp.data.bad_samples import BadSampleTally, CollateReadLogs
from vlexp.data.eval_set import EvalSet
from vlexp.data.pipeline import (
    ImageCollator,
    KeyedBatches,
    KeyedPairs,
    PairCollator,
    PlannedLoader,
    image_transform,
)
from vlexp.data.records import DEFAULT_MAX_IMAGE_PIXELS, ImageDecoder
from vlexp.data.sources import DATASETS, DataSplits
from vlexp.data.sources.common import bad_sample_report, check_streaming_setup, is_streaming
from vlexp.data.types import Subset
from vlexp.eval.extra_sets import build_extra_eval_sets
from vlexp.filters import FILTERS, FilterReport
from vlexp.samplers import SAMPLERS, PlannedBatchSampler
from vlexp.samplers.tagging import TrainTags, resolve_train_tags

log = logging.getLogger(__name__)

RANK_READS_KEY = "bad_samples/rank_reads"
"""``trainer.callback_metrics`` key carrying every rank's read counts (JSON bytes as a
uint8 tensor) from spawned rank 0 to the launching process."""


class _RankShard(torch.utils.data.Sampler[int]):
    """Evaluation indices of one rank: ``rank::world``, padded to equal length."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        idx = list(range(rank, n, world))
        per_rank = -(-n // world)
        self.indices = idx + idx[: per_rank - len(idx)] if idx else [0] * per_rank

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class VLDataModule(L.LightningDataModule):
    """Builds the configured data source, filters the training pairs, plans batches.

    ``tokenize`` and the image preprocessing come from the model (its tokenizer and
    image size/mean/std), so any encoder works with any source. ``extra_eval_sets``
    (``cfg.eval.extra_sets``) adds COCO / Flickr30k / ImageNet-folder sets to the
    source's val/test sets (:func:`vlexp.eval.extra_sets.build_extra_eval_sets`).

    A streaming source (an ``IterableDataset``, ``data=webdataset``) is batched by a plain
    ``DataLoader``: the reader splits shards by rank and worker itself, only
    ``sampler=random`` and ``filter=none`` apply (checked in :meth:`setup`).
    """

    def __init__(
        self,
        data: DictConfig | dict,
        sampler: DictConfig | dict,
        filter: DictConfig | dict,
        tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
        image_size: int,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        seed: int = 0,
        total_steps: int | None = None,
        extra_eval_sets: Any = None,
        aug: DictConfig | dict | None = None,
    ) -> None:
        super().__init__()
        self.data_cfg = _plain(data)
        self.sampler_cfg = _plain(sampler)
        self.filter_cfg = _plain(filter)
        self.seed = seed
        self.image_size = int(image_size)
        self.total_steps = total_steps
        self.extra_eval_sets = _plain(extra_eval_sets) if extra_eval_sets else None
        self.aug = Augment.from_config(_plain(aug) if aug is not None else None)
        self.train_collate = PairCollator(
            image_transform(image_size, image_mean, image_std, True, aug=self.aug),
            tokenize,
        )
        self.eval_collate = ImageCollator(image_transform(image_size, image_mean, image_std, False))
        self.splits: DataSplits | None = None
        self.train_set: Any = None
        self.filter_report: FilterReport | None = None
        self.train_sampler: PlannedBatchSampler | None = None
        self._pending_sampler_state: dict[str, Any] | None = None
        self._stream: Any = None  # the rank-bound stream of a streaming source
        self.tally = BadSampleTally()  # bad-sample counts of every reader, main process
        self._rank_reads: list[dict[str, Any]] | None = None  # every rank's, under DDP
        self._train_tags: TrainTags | None = None

    @classmethod
    def for_model(
        cls,
        cfg: DictConfig,
        model: Any,
        total_steps: int | None = None,
        extra_eval_sets: Any = None,
    ) -> VLDataModule:
        """The datamodule of a composed run config, with ``model``'s tokenizer and
        image preprocessing (``model``: a :class:`~vlexp.encoders.base.TwoTower`)."""
        return cls(
            cfg.data, cfg.sampler, cfg.filter, tokenize=model.tokenize,
            image_size=model.image_size, image_mean=model.image_mean,
            image_std=model.image_std, seed=int(cfg.seed), total_steps=total_steps,
            extra_eval_sets=extra_eval_sets, aug=cfg.get("aug"),
        )  # fmt: skip

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Build the data: for ``fit`` (or None) everything; for any other stage
        (``validate``, ``test``: evaluating a checkpoint) only the evaluation sets, so no
        training pair is read, filtered or planned and no stream opened."""
        with_train = stage in (None, "fit")
        if self.splits is not None and (self.splits.train is not None or not with_train):
            return
        extra = build_extra_eval_sets(self.extra_eval_sets)  # paths checked before training
        splits = DATASETS.build(self.data_cfg["source"], seed=self.seed, build_train=with_train)
        splits.val, splits.test = splits.val + extra["val"], splits.test + extra["test"]
        if splits.train is not None:
            _set_decoder(splits.train, self._decoder(None))  # a filter sees full images
        if splits.train is None:
            self.train_set = None
        elif is_streaming(splits.train):
            check_streaming_setup(splits.train, self.sampler_cfg, self.filter_cfg, self.total_steps)
            self.train_set = splits.train
        else:
            self.train_set = self._filtered(splits.train)
        self.splits = splits
        crop = self.aug.scale
        # the smallest expected crop keeps the training resolution: side / sqrt(area share)
        _set_decoder(
            splits.train, self._decoder(self.image_size / math.sqrt(crop[0] if crop else 1))
        )
        for s in splits.val + splits.test:
            _set_decoder(getattr(s.images, "source", None), self._decoder(self.image_size))
        self._track_readers()

    def _decoder(self, draft_side: float | None) -> ImageDecoder:
        """The image decoding of the readers: ``data.max_image_pixels`` and, with
        ``data.jpeg_draft``, JPEGs decoded reduced to no less than ``draft_side``."""
        cap = self.data_cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
        draft = self.data_cfg.get("jpeg_draft", True) and draft_side is not None
        return ImageDecoder(cap, math.ceil(draft_side) if draft else None)  # type: ignore[arg-type]

    def _track_readers(self) -> None:
        """Count the readers' bad samples here, from records the batches carry, so counts
        and the ceiling do not depend on ``data.num_workers`` (:mod:`vlexp.data.bad_samples`)."""
        assert self.splits is not None
        if self.train_set is not None and not is_streaming(self.train_set):
            self.tally.track("train", _reader(self.train_set))
        for stage, sets in (("val", self.splits.val), ("test", self.splits.test)):
            for s in sets:
                self.tally.track(f"{stage}/{s.name}", _reader(getattr(s.images, "source", None)))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the bad-sample records a batch carries (and check the ceiling)."""
        return self.tally.absorb(batch)

    def teardown(self, stage: str) -> None:
        """Log the counts; under DDP share every rank's (see :meth:`share_rank_reads`)."""
        self.tally.log_summary()
        self.share_rank_reads()

    def share_rank_reads(self) -> None:
        """Under DDP, gather every rank's read counts on every rank (a collective: each
        rank tears down). Rank 0 also leaves them in ``trainer.callback_metrics``, which
        a spawn launcher (``ddp_spawn``) hands to the launching process, where
        :meth:`collect_rank_reads` takes them: its own datamodule never read a batch."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.tally.read_report())
        self._merge_rank_reads(gathered)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.global_rank == 0:
            blob = json.dumps(self._rank_reads).encode()
            trainer.callback_metrics[RANK_READS_KEY] = torch.frombuffer(
                bytearray(blob), dtype=torch.uint8
            )

    def collect_rank_reads(self, trainer: Any) -> None:
        """After ``trainer.fit``/``trainer.test``: take the ranks' counts that
        :meth:`share_rank_reads` left in ``trainer.callback_metrics`` (spawned ranks)."""
        blob = trainer.callback_metrics.pop(RANK_READS_KEY, None)
        if blob is not None:
            self._merge_rank_reads(json.loads(bytes(blob.to(torch.uint8).tolist())))

    def _merge_rank_reads(self, reads: list[dict[str, Any]]) -> None:
        """Each rank's newer read counts replace its older ones per reader (a spawned
        test run reads the test sets only, the fit run's counts of the rest stay)."""
        if self._rank_reads is None or len(self._rank_reads) != len(reads):
            self._rank_reads = [{} for _ in reads]
        for mine, new in zip(self._rank_reads, reads):
            mine.update(new)

    def _filtered(self, source: Any) -> Any:
        flt = FILTERS.build(self.filter_cfg)
        report = FilterReport()
        captions = list(source.captions)
        chunk = (
            int(self.filter_cfg.get("chunk_size", 4096))
            if isinstance(self.filter_cfg, dict)
            else 4096
        )
        keep = np.ones(len(captions), dtype=bool)
        for s in range(0, len(captions), chunk):
            caps = captions[s : s + chunk]
            imgs = (
                [source[i]["image"] for i in range(s, s + len(caps))] if flt.needs_images else None
            )
            k, reasons = flt.decide(caps, imgs)
            keep[s : s + len(caps)] = k
            report.add(caps, k, reasons)
        self.filter_report = report
        if report.kept == report.total:
            return source
        log.info(
            "filter %s kept %d of %d pairs (%s)",
            self.filter_cfg.get("name"),
            report.kept,
            report.total,
            dict(report.dropped),
        )
        if report.kept == 0:
            raise RuntimeError(
                f"filter '{self.filter_cfg.get('name')}' dropped every training pair "
                f"({dict(report.dropped)}); loosen its thresholds"
            )
        return Subset(source, np.flatnonzero(keep))

    # ---------------------------------------------------------------- loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = int(self.data_cfg.get("num_workers", 0))
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def build_train_sampler(self) -> PlannedBatchSampler:
        rank, world = self._rank_world()
        tags = self.train_tags()
        return SAMPLERS.build(
            tags.sampler_options,
            num_samples=len(self.train_set),
            batch_size=int(self.data_cfg["batch_size"]),
            seed=self.seed,
            rank=rank,
            world_size=world,
            tags=tags.table,
            total_steps=self.total_steps,
        )

    def train_tags(self) -> TrainTags:
        """The training pairs' object tags for the sampler (``sampler.tagging``), resolved
        once: the data's own, or caption tags (:mod:`vlexp.samplers.tagging`)."""
        if self._train_tags is None:
            assert self.splits is not None, "call setup() first"
            base = self.splits.train
            kept = None if self.train_set is base else self.train_set.indices
            self._train_tags = resolve_train_tags(base, kept, self.sampler_cfg)
        return self._train_tags

    @property
    def tag_report(self) -> dict[str, Any] | None:
        """Coverage and pairs per class of the sampler's tags (``None``: not resolved)."""
        tags = self._train_tags
        return tags.report.as_dict() if tags is not None and tags.report else None

    def _stream_loader(self) -> DataLoader:
        rank, world = self._rank_world()
        if world > 1 and not self.train_set.resampled:
            raise ValueError(
                f"{world} ranks read a non-resampled stream: ranks would get different numbers "
                "of batches and DDP would hang. Set data.source.resampled=true (and "
                "data.source.samples_per_epoch) so every rank yields the same batches."
            )
        bs = int(self.data_cfg["batch_size"])
        self._stream = self.train_set.for_rank(rank, world, bs)
        self.tally.track("train", self._stream)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self._stream.set_epoch(trainer.current_epoch)
        return DataLoader(
            self._stream,
            batch_size=bs,
            collate_fn=CollateReadLogs(self.train_collate),
            drop_last=True,
            **self._loader_kwargs(),
        )

    def train_dataloader(self) -> DataLoader:
        if is_streaming(self.train_set):
            return self._stream_loader()
        self.train_sampler = self.build_train_sampler()
        if self._pending_sampler_state is not None:
            self.train_sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.train_sampler.set_epoch(trainer.current_epoch)
        # (epoch, index) keys seed each sample's crop: exact resume with any worker count
        return PlannedLoader(
            KeyedPairs(self.train_set, self.seed),
            batch_sampler=KeyedBatches(self.train_sampler),
            collate_fn=CollateReadLogs(self.train_collate),
            **self._loader_kwargs(),
        )

    def _eval_loaders(self, sets: list[EvalSet]) -> list[DataLoader]:
        rank, world = self._rank_world()
        bs = int(self.data_cfg.get("eval_batch_size", 256))
        return [
            DataLoader(
                s.images,
                batch_size=bs,
                sampler=_RankShard(len(s.images), rank, world),
                collate_fn=CollateReadLogs(self.eval_collate),
                **self._loader_kwargs(),
            )
            for s in sets
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)

    @property
    def val_sets(self) -> list[EvalSet]:
        assert self.splits is not None, "call setup() first"
        return self.splits.val

    @property
    def test_sets(self) -> list[EvalSet]:
        assert self.splits is not None, "call setup() first"
        return self.splits.test

    @property
    def bad_samples(self) -> dict[str, Any]:
        """Skipped/altered record counts per split, e.g. ``{"train": {"read": {...},
        "index_pass": {...}}, "val/heldout": {...}}`` (readers that keep counts only).

        ``read`` holds the counts of the batches this process consumed, whatever
        ``data.num_workers`` (the records travel with the batches); with several ranks,
        each rank's own share (all of them: :meth:`bad_samples_per_rank`); in the process
        that launched spawned ranks, rank 0's.
        """
        return self._report(self._rank_reads[0] if self._rank_reads else {})

    def _report(self, reads: dict[str, Any]) -> dict[str, Any]:
        """:attr:`bad_samples` with the ``read`` counts of ``reads`` (one rank's) where
        given, this process's own elsewhere."""
        if self.splits is None:
            return {}
        out: dict[str, Any] = {}
        readers = {"train": self._stream if self._stream is not None else self.train_set}
        for stage, sets in (("val", self.splits.val), ("test", self.splits.test)):
            for s in sets:
                readers[f"{stage}/{s.name}"] = getattr(s.images, "source", None)
        counts = {**self.tally.report(), **reads}
        for key, reader in readers.items():
            rep = bad_sample_report(reader) or {}
            if key in counts:
                rep["read"] = counts[key]
            if rep:
                out[key] = rep
        return out

    def bad_samples_per_rank(self) -> list[dict[str, Any]] | None:
        """Every rank's :attr:`bad_samples`, in rank order, under DDP (each rank reads
        its own part of the data, so no rank's counts are the whole), as gathered at the
        end of the last fit/test (:meth:`share_rank_reads`); ``None`` in one process."""
        if self._rank_reads is None:
            return None
        return [self._report(reads) for reads in self._rank_reads]

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Sampler position for exact resume: epoch and batches *trained* (not prefetched).

        ``processed`` counts batches whose optimizer step has run; it is the right count
        wherever a checkpoint is written: in ``on_train_batch_end`` (ModelCheckpoint), in
        a SLURM signal handler between steps, or at the end of an epoch.
        ``completed`` lags by one inside ``on_train_batch_end`` and would replay a batch.
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.train_sampler is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"sampler": {"epoch": trainer.current_epoch, "batches_done": int(done)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_sampler_state = state.get("sampler")


def _set_decoder(source: Any, decoder: ImageDecoder) -> None:
    """Give the reader under ``source`` (when it decodes files) ``decoder``."""
    reader = _reader(source)
    if isinstance(getattr(reader, "decoder", None), ImageDecoder):
        reader.decoder = decoder


def _reader(source: Any) -> Any:
    """The reader under :class:`Subset` views."""
    while isinstance(source, Subset):
        source = source.source
    return source


def _plain(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
