"""`data=csv`: the synthetic set exported as a table reads back as the same pairs; errors
name the config key; bad rows are skipped, counted and reach the datamodule's report;
a `debug=tiny_run data=csv` training run completes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.data.bad_samples import CollateReadLogs
from vlexp.data.shards.export import export_csv
from vlexp.data.sources import DATASETS
from vlexp.data.synthetic import build_synthetic
from vlexp.train.datamodule import VLDataModule

JPEG_TOL = 8.0  # mean absolute pixel difference after a JPEG round trip (q=95, 4:4:4)


@pytest.fixture(scope="module")
def synth():
    return build_synthetic(
        seed=3, num_train=48, num_val=16, num_test=12, num_test_compositional=0, image_size=24
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synth) -> Path:
    out = tmp_path_factory.mktemp("csv")
    for split in ("train", "val", "test"):
        export_csv(synth[split], out / split)
    return out


def _source_cfg(overrides: list[str]) -> dict:
    cfg = compose_cfg(["data=csv", *overrides])
    return OmegaConf.to_container(cfg.data.source, resolve=True)


def _tags(source, i: int) -> list[str]:
    return [source.class_names[t] for t in source.tag_table.tags_of(i)]


def test_round_trip_same_pairs_tags_labels(exported, synth):
    splits = DATASETS.build(
        _source_cfg(
            [
                f"data.source.path={exported}/train/pairs.csv",
                f"data.source.val_path={exported}/val/pairs.csv",
                f"data.source.test_path={exported}/test/pairs.csv",
            ]
        )
    )
    src, got = synth["train"], splits.train
    assert len(got) == len(src)
    assert list(got.captions) == list(src.captions)
    assert got.class_names == src.class_names  # classes.json written by the export
    for i in range(len(src)):
        assert _tags(got, i) == _tags(src, i)
    for i in (0, 7, len(src) - 1):
        a, b = got[i], src[i]
        assert (a["caption"], a["tags"], a["label"]) == (b["caption"], b["tags"], b["label"])
        diff = np.abs(np.asarray(a["image"], float) - np.asarray(b["image"], float)).mean()
        assert diff < JPEG_TOL
    assert [s.name for s in splits.val] == ["heldout"] and [s.name for s in splits.test] == [
        "heldout"
    ]
    val = splits.val[0]
    assert val.captions == list(synth["val"].captions)
    assert np.array_equal(val.caption_image, np.arange(len(synth["val"])))
    # labels + class names -> zero-shot classification over the exported classes
    assert val.class_names == src.class_names and val.templates == ["a photo of a {}."]
    assert [val.images[i]["label"] for i in range(3)] == [
        synth["val"][i]["label"] for i in range(3)
    ]


def test_caps_auto_columns_and_synthetic_knobs(exported, synth):
    base = [
        f"data.source.path={exported}/train/pairs.csv",
        f"data.source.val_path={exported}/val/pairs.csv",
        "data.source.num_train=10",
        "data.source.num_val=5",
        "data.source.tags_col=null",
    ]
    knob = DATASETS.config_errors(
        _source_cfg([*base, "+data.source.num_test_compositional=64"]), "data.source"
    )
    assert knob and "data.source.num_test_compositional: unknown option" in knob[0]
    cfg = _source_cfg(base)
    splits = DATASETS.build(cfg)
    assert list(splits.train.captions) == list(synth["train"].captions)[:10]
    assert splits.train.tag_table is None
    assert len(splits.val[0].captions) == 5
    df = pd.read_csv(exported / "train" / "pairs.csv")[["filepath", "caption"]]
    df.to_csv(exported / "plain.csv", index=False)  # no tags / label columns: auto finds none
    plain = DATASETS.build(
        _source_cfg(
            [f"data.source.path={exported}/plain.csv", f"data.source.root={exported}/train"]
        )
    )
    assert plain.train.tag_table is None and len(plain.train) == len(synth["train"])
    with pytest.raises(TypeError, match="unknown option.*'nmu_train'"):
        DATASETS.build({**cfg, "nmu_train": 3})


def test_missing_paths_name_the_config_key(exported, tmp_path):
    with pytest.raises(ValueError, match="data.source.path is not set"):
        DATASETS.build(_source_cfg([]))
    with pytest.raises(FileNotFoundError, match=r"data.source.path=.*nope.csv.*does not exist"):
        DATASETS.build(_source_cfg([f"data.source.path={tmp_path}/nope.csv"]))
    with pytest.raises(FileNotFoundError, match="data.source.val_path="):
        DATASETS.build(
            _source_cfg(
                [
                    f"data.source.path={exported}/train/pairs.csv",
                    f"data.source.val_path={tmp_path}/val.csv",
                ]
            )
        )
    with pytest.raises(ValueError, match="tags_col='objects'"):
        DATASETS.build(
            _source_cfg(
                [f"data.source.path={exported}/train/pairs.csv", "data.source.tags_col=objects"]
            )
        )


def test_bad_rows_are_skipped_counted_and_reported(exported, tmp_path):
    df = pd.read_csv(exported / "train" / "pairs.csv", keep_default_na=False)
    df["filepath"] = [str(exported / "train" / f) for f in df["filepath"]]
    df.loc[2, "caption"] = "  "
    df.loc[5, "filepath"] = str(tmp_path / "gone.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((exported / "train" / "images" / "00000009.jpg").read_bytes()[:200])
    df.loc[9, "filepath"] = str(broken)
    df.to_csv(tmp_path / "bad.csv", index=False)
    (tmp_path / "classes.json").write_text((exported / "train" / "classes.json").read_text())
    cfg = compose_cfg(
        [
            "data=csv",
            f"data.source.path={tmp_path}/bad.csv",
            "data.source.max_bad_fraction=0.2",
            "data.source.min_samples=1",
            "data.batch_size=8",
            "data.num_workers=0",
        ]
    )
    dm = VLDataModule(
        cfg.data,
        cfg.sampler,
        cfg.filter,
        tokenize=lambda t: {},
        image_size=24,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
    )
    dm.setup("fit")
    assert len(dm.train_set) == len(df) - 2  # empty caption and missing file dropped up front
    items = [dm.train_set[i] for i in range(len(dm.train_set))]
    assert sum(it["index"] != i for i, it in enumerate(items)) == 1  # broken JPEG substituted
    # the records ride on the batch to the main process (as from a loader worker)
    batch = CollateReadLogs(lambda its: {"n": len(its)})(items + [dm.train_set[0]])
    assert dm.on_before_batch_transfer(batch, 0) == {"n": len(items) + 1}
    report = dm.bad_samples["train"]["read"]
    assert report["by_reason"] == {"empty_caption": 1, "missing_image": 1, "broken_image": 1}
    # every row counted once: the table check's 2 drops, then each kept row at its first read
    assert report["seen"] == report["rows"] == len(df)
    assert report["bad"] == 3 and report["good"] == len(df) - 3
    json.dumps(dm.bad_samples)  # plain data, ready for metrics.json
    strict = compose_cfg(
        ["data=csv", f"data.source.path={tmp_path}/bad.csv", "data.source.min_samples=1"]
    )
    with pytest.raises(RuntimeError, match="above the ceiling"):
        DATASETS.build(OmegaConf.to_container(strict.data.source, resolve=True))


@pytest.mark.slow
def test_tiny_run_on_csv_completes(exported, tmp_path):
    from vlexp.train.run import train

    cfg = compose_cfg(
        [
            "debug=tiny_run",
            "data=csv",
            f"data.source.path={exported}/train/pairs.csv",
            f"data.source.val_path={exported}/val/pairs.csv",
            f"data.source.test_path={exported}/test/pairs.csv",
            "data.source.image_size=24",
            "data.batch_size=8",
            "trainer.max_steps=8",
            "trainer.val_check_interval=4",
        ],
        output_dir=tmp_path / "run",
    )
    value = train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and value == metrics["monitor_value"]
    assert "test/heldout/i2t_R@1" in metrics["test"]
    assert "test/heldout/zeroshot_top1" in metrics["test"]
    assert any((tmp_path / "run" / "viz").glob("*.png"))  # the viz callback reads file sets
