"""``vlexp export out_dir=PATH [format=csv|tsv|wds] [...]`` (also ``python -m
vlexp.cli.export``): write any configured data source as CSV+files or tar shards.

A Hydra app (config ``conf/export.yaml``). The source is the trainer's ``data`` group
(default: the synthetic benchmark) with the same ``key=value`` overrides as for
training, and each split goes to its own folder::

    OUT/train/            the training pairs
    OUT/val/<set>/        each validation set that is one caption per image
    OUT/test/<set>/       likewise for the test sets

Examples::

    vlexp export out_dir=/data/synth_wds format=wds data.source.num_train=20000
    vlexp export out_dir=/data/synth_csv format=csv splits=[train,val]
    # convert a table to shards (any source can be exported)
    vlexp export out_dir=/data/mine_wds format=wds data=csv data.source.path=/data/mine.csv

Sets that are not plain pair lists (the synthetic ``finegrained`` set with its
distractors) are skipped with a note. The command printed at the end trains on the result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlexp.cli import CONF_DIR

log = logging.getLogger("vlexp.data.shards.export")

FORMATS = ("csv", "tsv", "wds")
FORMAT_ALIASES = {"webdataset": "wds"}
IMAGE_FORMATS = ("jpg", "png", "webp")
SPLITS = ("train", "val", "test")


def compose_data_config(overrides: Sequence[str]) -> tuple[dict[str, Any], int]:
    """The resolved ``data`` section and ``seed`` of ``conf/train.yaml`` with ``overrides``
    (Hydra syntax, as for ``python -m vlexp.run``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return data, int(cfg.seed)  # type: ignore[return-value]


def pair_source_of(eval_set: Any) -> Any | None:
    """The pair source behind an eval set when the set is exactly its pairs (one caption
    per image, in order), else None."""
    source = getattr(eval_set.images, "source", None)
    if source is None or len(eval_set.captions) != len(source):
        return None
    if list(eval_set.captions) != list(source.captions):
        return None
    if not np.array_equal(np.asarray(eval_set.caption_image), np.arange(len(source))):
        return None
    return source


def export_source(
    source: Any,
    out_dir: Path,
    fmt: str,
    shard_size: int,
    image_format: str,
    quality: int,
    overwrite: bool,
) -> Path:
    """Write one pair source in ``fmt``; return the table path or the shard folder."""
    from vlexp.data.shards.export import export_csv, export_webdataset

    if fmt == "wds":
        export_webdataset(
            source,
            out_dir,
            shard_size=shard_size,
            image_format=image_format,
            quality=quality,
            overwrite=overwrite,
        )
        return out_dir
    return export_csv(
        source,
        out_dir,
        sep="," if fmt == "csv" else "\t",
        image_format=image_format,
        quality=quality,
        overwrite=overwrite,
    )


def export_splits(
    overrides: Sequence[str],
    out: str | Path,
    fmt: str = "csv",
    splits: Sequence[str] = SPLITS,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Export the splits of the source configured by ``overrides`` under ``out``; return
    ``{"train": path, "val/<set>": path, ...}`` (tables for csv/tsv, shard folders for wds)."""
    data, seed = compose_data_config(overrides)
    return export_data(data, seed, out, fmt, splits, shard_size, image_format, quality, overwrite)


def export_data(
    data: dict[str, Any],
    seed: int,
    out: str | Path,
    fmt: str = "csv",
    splits: Sequence[str] = SPLITS,
    shard_size: int = 1000,
    image_format: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
) -> dict[str, Path]:
    """:func:`export_splits` for an already composed ``data`` config section."""
    from vlexp.data.sources import DATASETS

    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt} is not one of {list(FORMATS)} (or webdataset)")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format} is not one of {list(IMAGE_FORMATS)}")
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise ValueError(f"splits: unknown split(s) {bad}; choose from {list(SPLITS)}")
    data_splits = DATASETS.build(data["source"], seed=seed)
    out = Path(out)
    written: dict[str, Path] = {}
    args = (fmt, shard_size, image_format, quality, overwrite)
    if "train" in splits:
        written["train"] = export_source(data_splits.train, out / "train", *args)
    for stage in ("val", "test"):
        if stage not in splits:
            continue
        for s in getattr(data_splits, stage):
            source = pair_source_of(s)
            if source is None:
                log.warning(
                    "skipping %s set '%s': not one caption per image of a pair source",
                    stage,
                    s.name,
                )
                continue
            written[f"{stage}/{s.name}"] = export_source(source, out / stage / s.name, *args)
    return written


def train_command(written: dict[str, Path], fmt: str, image_size: int | None = None) -> str:
    """A ``python -m vlexp.run`` command training on an export (first val/test set each)."""
    val = next((p for k, p in written.items() if k.startswith("val/")), None)
    test = next((p for k, p in written.items() if k.startswith("test/")), None)
    if fmt == "wds":
        parts = ["data=wds_indexed", f"data.source.urls={written['train']}"]
        parts += [f"data.source.val_urls={val}"] if val else []
        parts += [f"data.source.test_urls={test}"] if test else []
    else:
        parts = ["data=csv", f"data.source.path={written['train']}"]
        parts += [f"data.source.val_path={val}"] if val else []
        parts += [f"data.source.test_path={test}"] if test else []
    parts += [f"data.source.image_size={image_size}"] if image_size else []
    return "python -m vlexp.run " + " ".join(parts)


def run(cfg: DictConfig) -> dict[str, Path]:
    """Hydra task of ``vlexp export``: export, print what was written and how to train on it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[assignment]
    fmt = FORMAT_ALIASES.get(str(cfg.format), str(cfg.format))
    splits = [cfg.splits] if isinstance(cfg.splits, str) else list(cfg.splits)
    written = export_data(
        data,
        int(cfg.seed),
        str(cfg.out_dir),
        fmt,
        splits,
        int(cfg.shard_size),
        str(cfg.image_format),
        int(cfg.quality),
        bool(cfg.overwrite),
    )
    for k, p in written.items():
        print(f"{k:>24}: {p}")
    if "train" in written:
        size = data["source"].get("image_size")
        print("train on it with:\n  " + train_command(written, fmt, size))
    return written


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> dict[str, Path]:
    """``python -m vlexp.cli.export out_dir=PATH [format=wds] [data=csv ...]``."""
    return run(cfg)


if __name__ == "__main__":
    main()
