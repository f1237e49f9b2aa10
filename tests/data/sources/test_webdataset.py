"""`data=webdataset` (stream) and `data=wds_indexed` (map-style): the synthetic set exported
as shards reads back as the same pairs; the index is cached; streaming batches split by
rank with equal counts when resampled; unsupported samplers/filters fail at setup with
advice; `debug=tiny_run` runs on both."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.data.readers.webdataset_reader import StreamingPairs
from vlexp.data.shards.export import export_webdataset
from vlexp.data.sources import DATASETS
from vlexp.data.synthetic import build_synthetic
from vlexp.data.types import Subset
from vlexp.train.datamodule import VLDataModule

N_TRAIN, SHARD = 44, 8  # 6 shards, the last with 4 pairs


@pytest.fixture(scope="module")
def synth():
    return build_synthetic(
        seed=5, num_train=N_TRAIN, num_val=12, num_test=10, num_test_compositional=0, image_size=24
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory, synth) -> Path:
    out = tmp_path_factory.mktemp("wds")
    for split in ("train", "val", "test"):
        export_webdataset(synth[split], out / split, shard_size=SHARD)
    return out


def _cfg(kind: str, shards: Path, cache: Path, extra: list[str] = ()) -> OmegaConf:
    return compose_cfg(
        [
            f"data={kind}",
            f"data.source.urls='{shards}/train/{{00000..00005}}.tar'",
            f"data.source.val_urls={shards}/val",
            f"data.source.test_urls={shards}/test",
            f"paths.cache_dir={cache}",
            "data.num_workers=0",
            *extra,
        ]
    )


def _build(cfg):
    return DATASETS.build(OmegaConf.to_container(cfg.data.source, resolve=True), seed=0)


def _pairs(source, indices=None) -> list[tuple[str, tuple[str, ...], int]]:
    """(caption, tag names, label) of each pair, with tag names via the source's classes."""
    names = source.class_names
    idx = range(len(source)) if indices is None else indices
    out = []
    for i in idx:
        it = source[i]
        out.append((it["caption"], tuple(names[t] for t in it["tags"]), it["label"]))
    return out


def _item_pairs(items, names) -> list[tuple[str, tuple[str, ...], int]]:
    return [(it["caption"], tuple(names[t] for t in it["tags"]), it["label"]) for it in items]


def test_stream_round_trip_same_pairs(shards, synth, tmp_path):
    splits = _build(_cfg("webdataset", shards, tmp_path))
    stream = splits.train
    assert isinstance(stream, StreamingPairs) and stream.tag_table is None
    items = list(stream)
    want = _pairs(synth["train"])
    assert Counter(_item_pairs(items, stream.class_names)) == Counter(want)
    assert sorted(it["index"] for it in items) == list(range(N_TRAIN))  # global positions
    for it in items[:5]:  # index = position in the export = position in the source
        assert it["caption"] == synth["train"].captions[it["index"]]
    (val,), (test,) = splits.val, splits.test
    assert val.captions == list(synth["val"].captions)
    assert test.captions == list(synth["test"].captions)
    assert val.class_names == synth["train"].class_names
    assert [val.images[i]["label"] for i in range(4)] == [
        synth["val"][i]["label"] for i in range(4)
    ]


def test_stream_num_train_caps_the_epoch(shards, tmp_path):
    stream = _build(_cfg("webdataset", shards, tmp_path, ["data.source.num_train=20"])).train
    assert len(list(stream)) == 20
    resampled = _build(
        _cfg(
            "webdataset",
            shards,
            tmp_path,
            ["data.source.num_train=30", "data.source.resampled=true"],
        )
    ).train
    assert len(resampled) == 30 and len(list(resampled)) == 30


def test_indexed_round_trip_and_cached_index(shards, synth, tmp_path):
    cfg = _cfg("wds_indexed", shards, tmp_path)
    splits = _build(cfg)
    train = splits.train
    assert len(train) == N_TRAIN
    assert list(train.captions) == list(synth["train"].captions)
    table, ref = train.tag_table, synth["train"].tag_table
    assert train.class_names == synth["train"].class_names
    assert np.array_equal(table.offsets, ref.offsets) and np.array_equal(table.values, ref.values)
    assert _pairs(train) == _pairs(synth["train"])
    cached = sorted((tmp_path / "shard_index").glob("index-*.npz"))
    assert len(cached) == 3  # train, val and test shards, each indexed once
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = _build(cfg)  # loads the cached indexes, no new pass
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert list(again.train.captions) == list(train.captions)
    capped = _build(_cfg("wds_indexed", shards, tmp_path, ["data.source.num_train=9"])).train
    assert isinstance(capped, Subset) and list(capped.captions) == list(train.captions)[:9]


def test_explicit_index_path_for_other_shards_is_refused(shards, tmp_path):
    path = tmp_path / "idx.npz"
    _build(_cfg("wds_indexed", shards, tmp_path, [f"data.source.index_path={path}"]))
    assert path.is_file()
    other = compose_cfg(
        ["data=wds_indexed", f"data.source.urls={shards}/val", f"data.source.index_path={path}"]
    )
    with pytest.raises(ValueError, match="indexes other shards.*rebuild_index=true"):
        _build(other)
    rebuilt = _build(
        compose_cfg(
            [
                "data=wds_indexed",
                f"data.source.urls={shards}/val",
                f"data.source.index_path={path}",
                "data.source.rebuild_index=true",
            ]
        )
    )
    assert len(rebuilt.train) == 12


def test_missing_shards_name_the_config_key(shards, tmp_path):
    for kind in ("webdataset", "wds_indexed"):
        with pytest.raises(ValueError, match=r"data.source.urls (is not set|\(one set)"):
            _build(compose_cfg([f"data={kind}"]))
        with pytest.raises(FileNotFoundError, match=r"data.source.urls: .*do not exist"):
            _build(
                compose_cfg(
                    [f"data={kind}", f"data.source.urls='{shards}/train/{{00000..00009}}.tar'"]
                )
            )
        with pytest.raises(FileNotFoundError, match="data.source.val_urls"):
            _build(
                compose_cfg(
                    [
                        f"data={kind}",
                        f"data.source.urls={shards}/train",
                        f"data.source.val_urls='{tmp_path}/none/{{0..1}}.tar'",
                    ]
                )
            )


def _datamodule(cfg, rank: int = 0, world: int = 1) -> VLDataModule:
    dm = VLDataModule(
        cfg.data,
        cfg.sampler,
        cfg.filter,
        tokenize=_fake_tokenize,
        image_size=16,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
        total_steps=int(cfg.trainer.max_steps),
    )
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, current_epoch=0)  # type: ignore[assignment]
    return dm


def _fake_tokenize(texts):
    import torch

    return {
        "input_ids": torch.zeros(len(texts), 2, dtype=torch.long),
        "attention_mask": torch.ones(len(texts), 2, dtype=torch.long),
    }


def test_streaming_rejects_planned_samplers_and_filters(shards, tmp_path):
    with pytest.raises(ValueError, match="sampler=tonics.*only sampler=random.*data=wds_indexed"):
        _datamodule(_cfg("webdataset", shards, tmp_path, ["sampler=tonics"])).setup("fit")
    with pytest.raises(ValueError, match="filter=cat.*python -m vlexp.cli.filter"):
        _datamodule(_cfg("webdataset", shards, tmp_path, ["filter=cat"])).setup("fit")
    dm = _datamodule(_cfg("wds_indexed", shards, tmp_path, ["sampler=tonics", "data.batch_size=8"]))
    dm.setup("fit")  # map-style shards: TOnICS gets its tag table
    assert dm.build_train_sampler() is not None


def test_streaming_loader_batches_and_rank_split(shards, tmp_path):
    dm = _datamodule(_cfg("webdataset", shards, tmp_path, ["data.batch_size=5"]))
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [b["image"].shape for b in batches] == [(5, 3, 16, 16)] * (N_TRAIN // 5)  # drop_last
    seen = [i for b in batches for i in b["index"].tolist()]
    assert len(set(seen)) == len(seen)  # one epoch: no pair twice
    dm = _datamodule(_cfg("webdataset", shards, tmp_path), rank=1, world=2)
    dm.setup("fit")
    with pytest.raises(ValueError, match="2 ranks read a non-resampled stream.*resampled=true"):
        dm.train_dataloader()
    counts = []
    for rank in (0, 1):  # resampled: every rank the same number of full batches
        dm = _datamodule(
            _cfg(
                "webdataset",
                shards,
                tmp_path,
                [
                    "data.batch_size=4",
                    "data.source.resampled=true",
                    "data.source.samples_per_epoch=30",
                    "data.num_workers=2",
                ],
            ),
            rank=rank,
            world=2,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        sizes = [len(b["index"]) for b in loader]
        counts.append((len(loader), sizes))
    assert counts[0] == counts[1] == (3, [4, 4, 4])  # 30 // 2 = 15 -> 3 full batches of 4


def test_bad_sample_counts_reach_the_datamodule(tmp_path, synth):
    out = tmp_path / "bad"
    export_webdataset(synth["train"], out, shard_size=SHARD)
    (out / "00005.tar").write_bytes((out / "00005.tar").read_bytes()[:1500])  # cut the last shard
    cfg = _cfg(
        "wds_indexed",
        out.parent,
        tmp_path,
        [
            f"data.source.urls={out}",
            "~data.source.val_urls",
            "~data.source.test_urls",
            "data.source.max_bad_fraction=0.5",
            "data.source.min_samples=1",
        ],
    )
    dm = _datamodule(cfg)
    dm.setup("fit")
    report = dm.bad_samples["train"]
    # the cut shard held 4 samples (sizes.json) and none is readable: 4 lost, not "1 shard"
    assert report["index_pass"]["by_reason"] == {"truncated_tar": 4}
    assert report["read"]["by_reason"] == {"truncated_tar": 4}  # reading starts from these
    assert report["read"]["rows"] == N_TRAIN
    json.dumps(dm.bad_samples)
    stream_cfg = _cfg(
        "webdataset",
        out.parent,
        tmp_path,
        [
            f"data.source.urls={out}",
            "~data.source.val_urls",
            "~data.source.test_urls",
            "data.source.max_bad_fraction=0.5",
            "data.source.min_samples=10",
            "data.batch_size=4",
        ],
    )
    dm = _datamodule(stream_cfg)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        dm.on_before_batch_transfer(batch, 0)  # what Lightning does with every batch
    read = dm.bad_samples["train"]["read"]
    assert read["by_reason"] == {"truncated_tar": 4}
    assert read["seen"] == N_TRAIN and read["good"] == N_TRAIN - 4


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wds_indexed", "webdataset"])
def test_tiny_run_on_shards_completes(kind, shards, tmp_path):
    from vlexp.train.run import train

    cfg = compose_cfg(
        [
            "debug=tiny_run",
            f"data={kind}",
            f"data.source.urls={shards}/train",
            f"data.source.val_urls={shards}/val",
            f"data.source.test_urls={shards}/test",
            f"paths.cache_dir={tmp_path}/cache",
            "data.source.image_size=24",
            "data.batch_size=8",
            "trainer.max_steps=8",
            "trainer.val_check_interval=4",
            "viz.enabled=false",
        ],
        output_dir=tmp_path / "run",
    )
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 8
    assert "test/heldout/t2i_R@1" in metrics["test"]
