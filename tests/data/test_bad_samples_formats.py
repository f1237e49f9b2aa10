"""Bad data in specific formats: captions that are not UTF-8 (CSV and shards), shards cut
short with and without a known size, img2dataset shards with label/tag names but no
classes.json."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.readers.webdataset_reader import WebDatasetPairs
from vlexp.data.shards.export import export_webdataset
from vlexp.data.shards.index import index_shards

LATIN1 = "caf\xe9 au lait".encode("latin-1")  # b"caf\xe9 ...": not UTF-8


def test_csv_caption_not_utf8_is_one_counted_row(tmp_path, caplog):
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "a.jpg")
    lines = [b"filepath,caption", b"a.jpg,first", b"a.jpg," + LATIN1, b"a.jpg,third \xc3\xa9"]
    (tmp_path / "p.csv").write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="vlexp.data.bad_samples"):
        pairs = CsvPairs(tmp_path / "p.csv", min_samples=100)
    assert len(pairs) == 2 and pairs.rows.tolist() == [0, 2]
    assert [pairs[i]["caption"] for i in range(2)] == ["first", "third \xe9"]
    assert pairs.bad.as_dict()["by_reason"] == {"bad_encoding": 1}
    logged = [m for r in caplog.records if "(bad_encoding)" in (m := r.getMessage())]
    assert len(logged) == 1 and "p.csv" in logged[0] and "row 1 (a.jpg)" in logged[0]


def _rewrite(path: Path, edit) -> None:
    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            data = edit(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture()
def shards(tmp_path) -> Path:
    export_webdataset(colour_block_pairs(12, image_size=16, seed=2), tmp_path, shard_size=4)
    return tmp_path


def test_shard_caption_not_utf8_is_counted_not_replaced(shards):
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("0001.txt"):
            return LATIN1
        if name.endswith("0001.json"):  # its .json caption is not UTF-8 either
            return json.dumps({"caption": "x"}).encode().replace(b'"x"', b'"' + LATIN1 + b'"')
        return data

    _rewrite(shards / "00000.tar", edit)
    ds = WebDatasetPairs(str(shards), shuffle_buffer=0, shuffle_shards=False, min_samples=100)
    items = list(ds)
    assert len(items) == 11 and all("\ufffd" not in it["caption"] for it in items)
    assert ds.bad.as_dict()["by_reason"] == {"bad_encoding": 1}


def test_truncated_shard_counts_the_samples_it_lost(shards):
    path = shards / "00001.tar"
    with tarfile.open(path) as tf:
        cut = tf.getmembers()[3].offset_data + 3  # inside the 2nd sample's image
    path.write_bytes(path.read_bytes()[:cut])
    ds = WebDatasetPairs(str(shards), shuffle_buffer=0, max_bad_fraction=1.0)
    assert len(list(ds)) == 9
    assert ds.bad.as_dict()["by_reason"] == {"truncated_tar": 3}  # sizes.json: 4, 1 read
    assert ds.bad.seen == 12
    (shards / "sizes.json").unlink()
    for stats in shards.glob("*_stats.json"):
        stats.unlink()
    ds = WebDatasetPairs(str(shards), shuffle_buffer=0, max_bad_fraction=1.0)
    list(ds)
    assert ds.bad.as_dict()["by_reason"] == {"truncated_tar": 1}  # size unknown: at least 1


NAMES = ["apple", "kiwi", "zucchini"]


@pytest.fixture()
def img2dataset_shards(shards) -> Path:
    """Shards as img2dataset writes them with ``label``/``tags`` columns: names, no
    classes.json."""
    (shards / "classes.json").unlink()

    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(".json"):
            return data
        k = int(name.split(".")[0][-4:]) + 4 * int(name[:5])
        meta = json.loads(data)
        meta["label"] = NAMES[k % 3]
        meta["tags"] = [NAMES[(k + 1) % 3], NAMES[k % 2]]
        return json.dumps(meta).encode()

    for tar in sorted(shards.glob("*.tar")):
        _rewrite(tar, edit)
    return shards


def test_img2dataset_label_names_become_classes_with_one_line(img2dataset_shards, caplog):
    with caplog.at_level(logging.INFO):
        ds = WebDatasetPairs(str(img2dataset_shards), shuffle_buffer=0, shuffle_shards=False)
        items = list(ds)
    assert ds.class_names == NAMES  # sorted names found
    for it in items:
        k = it["index"]
        assert it["label"] == k % 3
        assert it["tags"] == [(k + 1) % 3, k % 2]
    assert ds.bad.as_dict()["notes"] == {}  # no "tag names without a class list"
    lines = [r.getMessage() for r in caplog.records if "class names taken" in r.getMessage()]
    assert len(lines) == 1 and "3 class names" in lines[0]
    index = index_shards(str(img2dataset_shards))
    assert index.class_names == NAMES and index.labels.tolist() == [k % 3 for k in range(12)]


def test_img2dataset_parquet_columns_give_the_names(img2dataset_shards):
    import pandas as pd

    for tar in sorted(img2dataset_shards.glob("*.tar")):
        table = tar.with_suffix(".parquet")
        df = pd.read_parquet(table)
        df["label"] = ["pear"] * len(df)  # differs from the .json: proves the table is read
        df.loc[0, "status"] = "failed_to_download"
        df.loc[0, "label"] = "never-downloaded"  # failed rows do not add classes
        df.to_parquet(table)
    ds = WebDatasetPairs(str(img2dataset_shards), shuffle_buffer=0)
    assert ds.class_names == ["pear"]
