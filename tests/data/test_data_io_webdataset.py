"""WebDatasetPairs and IndexedShardPairs: round trips, splitting, resampling, bad data."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from vlexp.data.bad_samples import TooManyBadSamples
from vlexp.data.readers.memory import InMemoryPairs, colour_block_pairs
from vlexp.data.readers.webdataset_reader import WebDatasetPairs
from vlexp.data.shards.export import export_webdataset
from vlexp.data.shards.index import IndexedShardPairs, ShardIndex, index_shards
from vlexp.data.types import PairSource

N = 23
SHARD = 4  # -> 6 shards, the last with 3 samples
JPEG_TOL = 6.0  # see test_data_io_export.py


@pytest.fixture(scope="module")
def source() -> InMemoryPairs:
    src = colour_block_pairs(N, image_size=24, seed=3)
    tags = [list(t) for t in src.tags]
    tags[1], tags[2] = [0, 4], []
    return InMemoryPairs(src.images, src.captions, tags, src.labels, src.class_names)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("wds")
    export_webdataset(source, out, shard_size=SHARD)
    return out


def _spec(d: Path, n: int = 6) -> str:
    return str(d / f"{{00000..{n - 1:05d}}}.tar")


def _key(i: int) -> str:
    return f"{i // SHARD:05d}{i % SHARD:04d}"


def _check_item(item, source):
    i = item["index"]
    assert item["key"] == _key(i)
    assert item["caption"] == source.captions[i]
    assert item["tags"] == source.tags[i]
    assert item["label"] == source.labels[i]
    assert item["image"].mode == "RGB" and item["image"].size == (24, 24)
    diff = np.abs(np.asarray(item["image"], float) - np.asarray(source.images[i], float))
    assert diff.mean() < JPEG_TOL


# --------------------------------------------------------------------- streaming
def test_stream_round_trip(shards, source):
    ds = WebDatasetPairs(_spec(shards), shuffle_buffer=5, seed=1)
    assert ds.class_names == source.class_names and ds.num_known_samples == N
    items = list(ds)
    assert sorted(it["index"] for it in items) == list(range(N))
    assert [it["index"] for it in items] != list(range(N))  # shuffled
    for it in items:
        _check_item(it, source)
    assert ds.bad.as_dict()["bad"] == 0


def test_epochs_reshuffle_and_are_reproducible(shards):
    def order(epoch: int) -> list[int]:
        ds = WebDatasetPairs(_spec(shards), shuffle_buffer=3, seed=7)
        ds.set_epoch(epoch)
        return [it["index"] for it in ds]

    assert order(0) == order(0)
    assert order(0) != order(1)
    ds = WebDatasetPairs(_spec(shards), shuffle_buffer=3, seed=7)
    assert [it["index"] for it in ds] == order(0)
    assert [it["index"] for it in ds] == order(1)  # a second pass advances the epoch


def test_class_names_given_explicitly_remap_tags(shards, source):
    names = list(reversed(source.class_names))
    ds = WebDatasetPairs(_spec(shards), shuffle_buffer=0, class_names=names)
    for it in ds:
        want = [names.index(source.class_names[t]) for t in source.tags[it["index"]]]
        assert it["tags"] == want


def _keys(batch):
    return [it["key"] for it in batch]


def _loader_keys(ds, workers: int, batch_size: int = 3) -> list[list[str]]:
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=_keys
    )
    return list(dl)


def test_two_ranks_two_workers_cover_every_sample_once_per_epoch(shards):
    every = sorted(_key(i) for i in range(N))
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = WebDatasetPairs(_spec(shards), rank=rank, world_size=2, shuffle_buffer=4)
            ds.set_epoch(epoch)
            seen += [k for batch in _loader_keys(ds, workers=2) for k in batch]
        assert sorted(seen) == every, Counter(seen).most_common(3)
        orders.append(seen)
    assert orders[0] != orders[1]


def test_resampled_gives_every_rank_the_same_count(shards):
    per_rank = []
    for rank in (0, 1):
        ds = WebDatasetPairs(
            _spec(shards),
            rank=rank,
            world_size=2,
            resampled=True,
            samples_per_epoch=30,
            shuffle_buffer=4,
            seed=rank,
        )
        assert len(ds) == 15
        batches = _loader_keys(ds, workers=2, batch_size=4)
        per_rank.append((len(batches), sum(len(b) for b in batches)))
    assert per_rank[0] == per_rank[1] == (4, 15)  # workers get 8 + 7 -> 2 + 2 batches
    full = []
    for rank in (0, 1):  # with batch_size: 15 -> 3 full batches per rank, split 2 + 1
        ds = WebDatasetPairs(
            _spec(shards),
            rank=rank,
            world_size=2,
            resampled=True,
            samples_per_epoch=30,
            batch_size=4,
            shuffle_buffer=0,
        )
        assert len(ds) == 12
        full.append([len(b) for b in _loader_keys(ds, workers=2, batch_size=4)])
    assert full[0] == full[1] == [4, 4, 4]


def test_resampled_default_epoch_is_the_known_size(shards):
    ds = WebDatasetPairs(_spec(shards), resampled=True, shuffle_buffer=0)
    items = list(ds)
    assert len(items) == len(ds) == N
    assert len({it["index"] for it in items}) < N  # with replacement: repeats


def test_mixing_sources_by_weight(tmp_path, shards):
    other = colour_block_pairs(8, image_size=24, seed=9)
    export_webdataset(other, tmp_path, shard_size=4)
    srcs = [_spec(shards), str(tmp_path / "{00000..00001}.tar")]
    ds = WebDatasetPairs(sources=srcs, weights=[1, 3], resampled=True, samples_per_epoch=800)
    from_b = sum(it["caption"] in other.captions and it["index"] >= N for it in ds)
    assert abs(from_b / 800 - 0.75) < 0.06  # binomial sd ~0.015
    for weights in ([1, 3], [1, 0]):  # a zero weight still ends the epoch with its share
        ds = WebDatasetPairs(sources=srcs, weights=weights, shuffle_buffer=0)
        assert sorted(it["index"] for it in ds) == list(range(N + 8))  # all, once each


def test_missing_sizes_gives_unknown_index_and_clear_errors(tmp_path, source):
    export_webdataset(source, tmp_path, shard_size=SHARD)
    (tmp_path / "sizes.json").unlink()
    for p in tmp_path.glob("*_stats.json"):
        p.unlink()
    ds = WebDatasetPairs(str(tmp_path), shuffle_buffer=0)
    assert {it["index"] for it in ds} == {-1}
    with pytest.raises(TypeError, match="resampled=True"):
        len(ds)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        WebDatasetPairs(str(tmp_path), resampled=True)
    with pytest.raises(ValueError, match="some ranks"):
        WebDatasetPairs(str(tmp_path / "00000.tar"), rank=0, world_size=2)


# --------------------------------------------------------------------- bad data
def _rewrite(path: Path, edit) -> None:
    """Rewrite a shard, passing each (name, bytes) through ``edit``."""
    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            data = edit(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, source) -> tuple[Path, set[int]]:
    """Shards with a broken JPEG (pair 1), an empty caption (pair 6) and shard 3 cut in the
    image of its third sample (pairs 14, 15 lost). Returns the dir and the expected pairs."""
    out = tmp_path_factory.mktemp("bad")
    export_webdataset(source, out, shard_size=SHARD)

    def edit0(name: str, data: bytes) -> bytes:
        return data[: len(data) // 3] if name == _key(1) + ".jpg" else data

    def edit1(name: str, data: bytes) -> bytes:
        if name == _key(6) + ".txt":
            return b"  "
        if name == _key(6) + ".json":
            return json.dumps({**json.loads(data), "caption": ""}).encode()
        return data

    _rewrite(out / "00000.tar", edit0)
    _rewrite(out / "00001.tar", edit1)
    shard3 = out / "00003.tar"
    with tarfile.open(shard3) as tf:  # reference offsets from the standard library
        cut = tf.getmember(_key(14) + ".jpg").offset_data + 10
    shard3.write_bytes(shard3.read_bytes()[:cut])
    return out, set(range(N)) - {1, 6, 14, 15}


def test_stream_skips_and_counts_bad_samples(corrupted, source):
    out, expected = corrupted
    ds = WebDatasetPairs(_spec(out), shuffle_buffer=0, max_bad_fraction=0.5, min_samples=1)
    items = list(ds)
    assert {it["index"] for it in items} == expected and len(items) == len(expected)
    for it in items:
        _check_item(it, source)
    assert ds.bad.as_dict()["by_reason"] == {
        "broken_image": 1,
        "empty_caption": 1,
        "truncated_tar": 2,  # shard 3 held 4 samples (sizes.json), 2 were read
    }


def test_stream_ceiling_aborts(corrupted):
    out, _ = corrupted
    ds = WebDatasetPairs(_spec(out), shuffle_buffer=0, max_bad_fraction=0.05, min_samples=10)
    with pytest.raises(TooManyBadSamples, match="above the ceiling"):
        list(ds)


def test_index_pass_skips_and_counts_bad_samples(corrupted, source):
    out, expected = corrupted
    index = index_shards(_spec(out), max_bad_fraction=0.5, min_samples=1)
    assert index.bad["by_reason"] == {"empty_caption": 1, "truncated_tar": 2}
    # min_samples: one broken image among the first two reads is no estimate yet
    pairs = IndexedShardPairs(index, max_bad_fraction=0.5, min_samples=10)
    assert len(pairs) == len(expected) + 1  # the broken JPEG is only found when read
    got = [pairs[i] for i in range(len(pairs))]
    # reading starts from what the index pass dropped
    assert pairs.bad.as_dict()["by_reason"] == {
        "empty_caption": 1,
        "truncated_tar": 2,
        "broken_image": 1,
    }
    assert pairs.bad.seen == N  # each sample once: 3 dropped by the pass, 20 read
    assert {it["index"] for it in got} == {
        i for i in range(len(pairs)) if pairs.index.keys[i] != _key(1)
    }
    verified = index_shards(_spec(out), verify_images=True, max_bad_fraction=0.5, min_samples=1)
    assert verified.bad["by_reason"] == {"broken_image": 1, "empty_caption": 1, "truncated_tar": 2}
    assert sorted(int(k[:5]) * SHARD + int(k[5:]) for k in verified.keys) == sorted(expected)


# --------------------------------------------------------------------- indexed
def test_indexed_round_trip_save_load_and_workers(tmp_path, shards, source):
    index = index_shards(_spec(shards))
    assert list(index.keys) == [_key(i) for i in range(N)]
    path = index.save(tmp_path / "index.npz")
    for idx in (index, ShardIndex.load(path)):
        pairs = IndexedShardPairs(idx, max_open_files=2)
        assert isinstance(pairs, PairSource)
        assert list(pairs.captions) == source.captions
        table = pairs.tag_table
        assert [table.tags_of(i).tolist() for i in range(N)] == source.tags
        assert pairs.class_names == source.class_names
        for i in range(N):
            item = pairs[i]
            assert item["index"] == i
            _check_item(item, source)
    pairs = IndexedShardPairs(path)
    pairs[0]  # open a file in the parent before forking
    dl = torch.utils.data.DataLoader(pairs, batch_size=5, num_workers=2, collate_fn=_keys)
    assert [k for b in dl for k in b] == [_key(i) for i in range(N)]


def test_index_pass_in_parallel_processes_matches(shards):
    a, b = index_shards(_spec(shards)), index_shards(_spec(shards), num_workers=2)
    assert np.array_equal(a.offset, b.offset) and list(a.captions) == list(b.captions)
