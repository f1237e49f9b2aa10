"""CsvPairs: round trips from an exported fixture, column checks, bad rows skipped and counted."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlexp.data.bad_samples import TooManyBadSamples
from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.readers.memory import InMemoryPairs, colour_block_pairs
from vlexp.data.shards.export import export_csv
from vlexp.data.types import PairSource

N = 20
JPEG_TOL = 6.0  # see test_data_io_export.py


@pytest.fixture(scope="module")
def source() -> InMemoryPairs:
    src = colour_block_pairs(N, image_size=32, seed=2)
    tags = [list(t) for t in src.tags]
    tags[5] = [1, 3]
    tags[6] = []
    return InMemoryPairs(
        src.images, src.captions, tags, src.labels, src.class_names, [-1, 0, 0, -1, -1, -1]
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("csv")
    export_csv(source, out)
    return out


def _check_same(pairs, source, rows=None):
    rows = list(range(len(source))) if rows is None else rows
    assert len(pairs) == len(rows)
    assert list(pairs.captions) == [source.captions[r] for r in rows]
    table = pairs.tag_table
    assert [table.tags_of(i).tolist() for i in range(len(rows))] == [source.tags[r] for r in rows]
    for i, r in enumerate(rows):
        item = pairs[i]
        assert item["index"] == i
        assert item["caption"] == source.captions[r]
        assert item["tags"] == source.tags[r]
        assert item["label"] == source.labels[r]
        assert item["image"].mode == "RGB"
        diff = np.abs(np.asarray(item["image"], float) - np.asarray(source.images[r], float))
        assert diff.mean() < JPEG_TOL


def test_csv_round_trip(exported, source):
    pairs = CsvPairs(exported / "pairs.csv", tags_col="tags", label_col="label")
    assert isinstance(pairs, PairSource)
    assert pairs.class_names == source.class_names
    assert pairs.tag_table.parents.tolist() == [-1, 0, 0, -1, -1, -1]  # from classes.json
    _check_same(pairs, source)
    assert pairs.bad.as_dict()["bad"] == 0


def test_tsv_and_parquet_round_trip(tmp_path, exported, source):
    df = pd.read_csv(exported / "pairs.csv", keep_default_na=False)
    df = df.rename(columns={"filepath": "path", "caption": "text"})
    df["path"] = [str(exported / p) for p in df["path"]]  # absolute paths work too
    df.to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    for f in ("p.tsv", "p.parquet"):
        pairs = CsvPairs(
            tmp_path / f,
            image_col="path",
            caption_col="text",
            tags_col="tags",
            label_col="label",
            class_names=exported / "classes.json",
        )
        _check_same(pairs, source)


def test_class_names_derived_from_column_without_classes_json(tmp_path, exported, source):
    df = pd.read_csv(exported / "pairs.csv", keep_default_na=False)
    df.to_csv(tmp_path / "p.csv", index=False)
    pairs = CsvPairs(tmp_path / "p.csv", root=exported, tags_col="tags")
    used = sorted({source.class_names[t] for ts in source.tags for t in ts})
    assert pairs.class_names == used
    assert pairs[5]["tags"] == [used.index(source.class_names[t]) for t in source.tags[5]]
    assert pairs[5]["label"] == -1  # no label column


def test_missing_column_message_lists_columns(exported):
    with pytest.raises(ValueError) as err:
        CsvPairs(exported / "pairs.csv", image_col="image", tags_col="objects")
    msg = str(err.value)
    assert "image_col='image'" in msg and "tags_col='objects'" in msg
    assert "['filepath', 'caption', 'tags', 'label']" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CsvPairs(exported / "nope.csv")
    with pytest.raises(ValueError, match="extension"):
        CsvPairs(exported / "classes.json")


def test_bad_rows_skipped_and_counted(tmp_path, exported, source):
    df = pd.read_csv(exported / "pairs.csv", keep_default_na=False)
    df.loc[2, "caption"] = "   "  # empty caption
    df.loc[4, "filepath"] = "images/missing.jpg"  # missing file
    broken = tmp_path / "broken.jpg"
    data = (exported / df.loc[7, "filepath"]).read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated JPEG
    df.loc[7, "filepath"] = str(broken)
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    df.loc[9, "filepath"] = str(tmp_path / "garbage.jpg")
    df.to_csv(tmp_path / "p.csv", index=False)

    pairs = CsvPairs(
        tmp_path / "p.csv",
        root=exported,
        tags_col="tags",
        label_col="label",
        max_bad_fraction=0.5,
        min_samples=1,
    )
    rows = [r for r in range(N) if r not in (2, 4)]
    assert len(pairs) == N - 2 and pairs.rows.tolist() == rows
    assert pairs.bad.as_dict()["by_reason"] == {"empty_caption": 1, "missing_image": 1}
    pos7, pos9 = rows.index(7), rows.index(9)
    items = [pairs[i] for i in range(len(pairs))]
    assert pairs.bad.as_dict()["by_reason"] == {
        "empty_caption": 1,
        "missing_image": 1,
        "broken_image": 2,
    }
    for pos in (pos7, pos9):  # a good substitute row, reported under its own index
        sub = items[pos]
        assert sub["index"] not in (pos7, pos9)
        assert sub["caption"] == source.captions[rows[sub["index"]]]
    assert pairs[pos7]["index"] == items[pos7]["index"]  # deterministic, counted once
    assert pairs.bad.as_dict()["by_reason"]["broken_image"] == 2


def test_ceiling_aborts_with_counts(tmp_path, exported):
    df = pd.read_csv(exported / "pairs.csv", keep_default_na=False)
    df.loc[:3, "caption"] = ""
    df.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(TooManyBadSamples, match=r"4 of 20 samples \(20.00%\).*empty_caption"):
        CsvPairs(tmp_path / "p.csv", root=exported, min_samples=10)
    pairs = CsvPairs(tmp_path / "p.csv", root=exported, min_samples=100)  # too few seen to judge
    assert len(pairs) == N - 4


def test_classes_json_unknown_tag_is_a_note(tmp_path, exported):
    df = pd.read_csv(exported / "pairs.csv", keep_default_na=False)
    df.loc[0, "tags"] = "red;unicorn"
    df.to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "classes.json").write_text(json.dumps({"class_names": ["red", "blue"]}))
    pairs = CsvPairs(tmp_path / "p.csv", root=exported, tags_col="tags")
    assert pairs[0]["tags"] == [0]
    assert pairs.bad.as_dict()["notes"]["unknown_tag"] >= 1
    assert pairs.bad.as_dict()["bad"] == 0


def test_grayscale_and_png_images_come_back_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(tmp_path / "a.png")
    pd.DataFrame({"filepath": ["g.png", "a.png"], "caption": ["grey", "alpha"]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    pairs = CsvPairs(tmp_path / "p.csv")
    assert pairs.tag_table is None and pairs.class_names == []
    assert np.asarray(pairs[0]["image"]).tolist()[0][0] == [77, 77, 77]
    assert np.asarray(pairs[1]["image"]).tolist()[0][0] == [1, 2, 3]
