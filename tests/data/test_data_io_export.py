"""Export layouts: CSV + files and img2dataset-style shards, checked with independent readers."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from vlexp.data.readers.memory import InMemoryPairs, colour_block_pairs
from vlexp.data.shards.export import export_csv, export_webdataset


@pytest.fixture(scope="module")
def source() -> InMemoryPairs:
    src = colour_block_pairs(23, image_size=32, seed=1)
    src.tags[3] = [0, 2]  # a pair with two tags
    src._captions[4] = 'quotes "x", commas, a\ttab and\na newline'
    return InMemoryPairs(src.images, src.captions, src.tags, src.labels, src.class_names)


# JPEG tolerance: the fixtures carry Gaussian texture (std 20), so two unrelated fixture
# images differ by ~23 grey levels on average; a faithful JPEG copy stays below 6.
JPEG_TOL = 6.0


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


@pytest.mark.parametrize("sep,name", [(",", "pairs.csv"), ("\t", "pairs.tsv")])
def test_export_csv_layout(tmp_path, source, sep, name):
    table = export_csv(source, tmp_path / "out", sep=sep)
    assert table == tmp_path / "out" / name
    df = pd.read_csv(table, sep=sep, keep_default_na=False)
    assert list(df.columns) == ["filepath", "caption", "tags", "label"]
    assert df["filepath"].tolist() == [f"images/{i:08d}.jpg" for i in range(len(source))]
    assert df["caption"].tolist() == source.captions
    names = source.class_names
    assert df["tags"].tolist() == [";".join(names[t] for t in tags) for tags in source.tags]
    assert df["label"].tolist() == source.labels
    for i in (0, 7):
        img = Image.open(tmp_path / "out" / df["filepath"][i])
        assert img.format == "JPEG" and img.size == (32, 32)
        assert _mad(img.convert("RGB"), source.images[i]) < JPEG_TOL
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert classes == {"class_names": names, "parents": [-1] * len(names)}


def test_export_refuses_non_empty_dir(tmp_path, source):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        export_csv(source, out)
    with pytest.raises(FileExistsError, match="not empty"):
        export_webdataset(source, out)
    export_webdataset(source, out, shard_size=10, overwrite=True)
    assert len(list(out.glob("*.tar"))) == 3
    export_webdataset(source, out, shard_size=100, overwrite=True)  # stale shards removed
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar"]
    assert (out / "notes.md").read_text() == "mine"  # unrelated files untouched


def test_export_webdataset_layout(tmp_path, source):
    shards = export_webdataset(source, tmp_path, shard_size=10)
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert json.loads((tmp_path / "sizes.json").read_text()) == {
        "00000.tar": 10,
        "00001.tar": 10,
        "00002.tar": 3,
    }
    with tarfile.open(shards[1]) as tf:
        names = tf.getnames()
        assert names[:3] == ["000010000.jpg", "000010000.txt", "000010000.json"]
        assert len(names) == 30
        meta = json.loads(tf.extractfile("000010004.json").read())
        caption = tf.extractfile("000010004.txt").read().decode()
        img = Image.open(tf.extractfile("000010004.jpg"))
        img.load()
    i = 14
    assert caption == source.captions[i]
    assert meta["key"] == "000010004" and meta["status"] == "success" and meta["url"] is None
    assert (meta["width"], meta["height"]) == (32, 32)
    assert meta["caption"] == source.captions[i]
    assert meta["tags"] == [source.class_names[t] for t in source.tags[i]]
    assert meta["label"] == source.labels[i]
    assert _mad(img.convert("RGB"), source.images[i]) < JPEG_TOL
    stats = json.loads((tmp_path / "00002_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 3
    parquet = pq.read_table(tmp_path / "00002.parquet").to_pandas()
    assert parquet["key"].tolist() == ["000020000", "000020001", "000020002"]
    assert parquet["caption"].tolist() == source.captions[20:]
    assert set(parquet["status"]) == {"success"}


def test_webdataset_library_reads_the_shards(tmp_path, source):
    """The webdataset library (an independent reader) sees the same samples."""
    export_webdataset(source, tmp_path, shard_size=10)
    ds = wds.WebDataset(str(tmp_path / "{00000..00002}.tar"), shardshuffle=False)
    ds = ds.decode("pil").to_tuple("__key__", "jpg", "txt", "json")
    seen = list(ds)
    assert [k for k, *_ in seen] == [f"{i // 10:05d}{i % 10:04d}" for i in range(len(source))]
    assert [t for _, _, t, _ in seen] == source.captions
    assert all(
        _mad(img.convert("RGB"), source.images[i]) < JPEG_TOL
        for i, (_, img, _, _) in enumerate(seen)
    )


def test_key_width_grows_for_big_shards(tmp_path):
    src = colour_block_pairs(3, image_size=8)
    export_webdataset(src, tmp_path, shard_size=20000)
    with tarfile.open(tmp_path / "00000.tar") as tf:
        assert tf.getnames()[0] == "0000000000.jpg"  # 5 + 5 digits
