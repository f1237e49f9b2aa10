"""Bad-sample counts reach the main process through the batches: the same counts, the
same abort (batch and message) for data.num_workers 0, 1, 2 and 4; every row counted
once; the ceiling judged on the samples actually looked at."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import compose_cfg
from vlexp.data.bad_samples import _STRIDE, TooManyBadSamples
from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.shards.export import export_webdataset
from vlexp.train.datamodule import VLDataModule

WORKERS = [0, 1, 2, 4]


def _table(tmp: Path, n: int, bad_rows: set[int]) -> Path:
    """A CSV of ``n`` rows; rows in ``bad_rows`` point at a cut JPEG."""
    Image.new("RGB", (16, 16), (200, 40, 40)).save(tmp / "ok.jpg", quality=95)
    data = (tmp / "ok.jpg").read_bytes()
    (tmp / "bad.jpg").write_bytes(data[: len(data) // 3])
    files = ["bad.jpg" if r in bad_rows else "ok.jpg" for r in range(n)]
    path = tmp / f"pairs{n}.csv"
    pd.DataFrame({"filepath": files, "caption": [f"pair {r}" for r in range(n)]}).to_csv(
        path, index=False
    )
    return path


def _datamodule(overrides: list[str], total_steps: int | None = None) -> VLDataModule:
    cfg = compose_cfg(overrides)
    return VLDataModule(
        cfg.data,
        cfg.sampler,
        cfg.filter,
        tokenize=lambda t: {},
        image_size=16,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
        total_steps=total_steps,
        aug=cfg.get("aug"),
    )


def _csv_dm(path: Path, workers: int, batch: int, extra: list[str]) -> VLDataModule:
    dm = _datamodule(
        [
            "data=csv",
            f"data.source.path={path}",
            f"data.batch_size={batch}",
            f"data.num_workers={workers}",
            "sampler=random",
            "filter=none",
            *extra,
        ]
    )
    dm.setup("fit")
    return dm


def _train(dm: VLDataModule, epochs: int = 1) -> tuple[int, str | None]:
    """Batches consumed as Lightning does (hook per batch); the abort message if any."""
    loader = dm.train_dataloader()
    done = 0
    try:
        for epoch in range(epochs):
            if epoch:  # (streams: one pass)
                loader.batch_sampler.sampler.set_epoch(epoch)
            for batch in loader:
                dm.on_before_batch_transfer(batch, 0)
                done += 1
    except TooManyBadSamples as e:
        return done, str(e)
    return done, None


def _looked_at(batch: list[int], n: int, bad: set[int]) -> set[int]:
    """Brute force: the rows a batch looks at (draws, plus the substitute chain of a bad
    draw: rows ``(i + k * stride) % n`` until a good one)."""
    rows: set[int] = set()
    stride = _STRIDE % n
    for i in batch:
        k = 0
        while True:
            j = (i + k * stride) % n
            rows.add(j)
            if j not in bad:
                break
            k += 1
    return rows


BAD_600 = set(np.random.default_rng(0).choice(600, size=11, replace=False).tolist())


@pytest.fixture(scope="module")
def table600(tmp_path_factory) -> Path:
    return _table(tmp_path_factory.mktemp("t600"), 600, BAD_600)


@pytest.mark.slow
def test_csv_counts_are_the_same_for_any_number_of_workers(table600):
    reports = []
    for workers in WORKERS:
        dm = _csv_dm(table600, workers, 50, ["data.source.max_bad_fraction=0.05"])
        assert _train(dm, epochs=2) == (24, None)
        reports.append(dm.bad_samples["train"]["read"])
    for rep in reports:
        # two passes over 600 rows: each row counted once, the 11 bad ones as bad
        assert rep["seen"] == rep["rows"] == 600
        assert rep["bad"] == 11 and rep["good"] == 589
        assert rep["by_reason"] == {"broken_image": 11}
    assert all(rep == reports[0] for rep in reports)


@pytest.mark.slow
def test_csv_ceiling_aborts_at_the_same_batch_for_any_number_of_workers(table600):
    # reference by brute force: the first batch after which >= 200 rows were looked at
    # and more than 1% of them were bad
    probe = _csv_dm(table600, 0, 50, [])
    probe.train_dataloader()
    seen: set[int] = set()
    expected = None
    for k, batch in enumerate(probe.train_sampler):
        seen |= _looked_at(list(batch), 600, BAD_600)
        nbad = len(seen & BAD_600)
        if len(seen) >= 200 and nbad / len(seen) > 0.01:
            expected = (k, nbad, len(seen))
            break
    assert expected is not None
    results = []
    for workers in WORKERS:
        dm = _csv_dm(table600, workers, 50, ["data.source.min_samples=200"])
        done, message = _train(dm)
        results.append((done, message))
        assert done == expected[0]  # batches completed before the one that aborted
        assert f": {expected[1]} of {expected[2]} samples" in message
    assert all(r == results[0] for r in results)


@pytest.mark.slow
def test_ceiling_is_judged_on_the_rows_looked_at(tmp_path):
    bad = set(range(7, 1200, 20))  # 60 of 1200 rows (5%) point at a broken JPEG
    path = _table(tmp_path, 1200, bad)
    dm = _csv_dm(path, 2, 100, [])  # the defaults: 1% ceiling after 1000 samples
    done, message = _train(dm)
    m = re.search(r"(\d+) of (\d+) samples \((\d+\.\d+)%", message)
    nbad, nseen, pct = int(m.group(1)), int(m.group(2)), float(m.group(3))
    assert 1000 <= nseen <= 1200 and 4.0 <= pct <= 6.0  # not diluted by unread rows
    assert pct == pytest.approx(100 * nbad / nseen, abs=0.01)
    # judged only once every row was looked at: exactly the table's share
    dm = _csv_dm(path, 2, 100, ["data.source.min_samples=1200"])
    assert "60 of 1200 samples (5.00%)" in _train(dm, epochs=2)[1]


def test_table_check_and_reads_share_one_estimate(tmp_path):
    # 1 of 100 rows has no file (table check) and 10 of the 99 kept rows are broken:
    # the estimate is 1/100 + 99/100 * 10/99 = 11%, not 11 / (1 + rows read so far)
    bad = set(range(0, 99, 10))
    path = _table(tmp_path, 100, bad)
    df = pd.read_csv(path)
    df.loc[99, "filepath"] = "nope.jpg"
    df.to_csv(path, index=False)
    dm = _csv_dm(path, 0, 11, ["data.source.max_bad_fraction=0.5", "data.source.min_samples=1"])
    assert _train(dm, epochs=3) == (27, None)
    rep = dm.bad_samples["train"]["read"]
    assert rep["seen"] == rep["rows"] == 100 and rep["bad"] == 11
    assert rep["by_reason"] == {"missing_image": 1, "broken_image": 10}
    assert rep["bad_fraction"] == pytest.approx(0.01 + 0.99 * 10 / 99)


@pytest.fixture(scope="module")
def cut_shards(tmp_path_factory) -> tuple[Path, int, int]:
    """120 pairs in 12 shards of 10; shard 3 cut in its 5th sample (6 lost), shard 8 cut
    in its header region (all 10 lost), 2 broken JPEGs. Returns (dir, N, bad)."""
    out = tmp_path_factory.mktemp("cut")
    export_webdataset(colour_block_pairs(120, image_size=16, seed=1), out, shard_size=10)
    import tarfile

    for shard, keep in ((3, 4), (8, 0)):
        path = out / f"{shard:05d}.tar"
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            cut = members[3 * keep].offset_data + 5 if keep else 700
        path.write_bytes(path.read_bytes()[:cut])
    for shard, pos in ((1, 2), (10, 7)):
        path = out / f"{shard:05d}.tar"
        with tarfile.open(path) as tf:
            jpg = tf.getmembers()[3 * pos]
            assert jpg.name.endswith(".jpg")
            at = jpg.offset_data
        data = bytearray(path.read_bytes())
        data[at + 2 : at + jpg.size] = bytes(jpg.size - 2)  # keep the size, wipe the JPEG
        path.write_bytes(bytes(data))
    return out, 120, 6 + 10 + 2


@pytest.mark.slow
def test_stream_counts_are_the_same_for_any_number_of_workers(cut_shards, tmp_path):
    out, n, nbad = cut_shards
    reports = []
    for workers in WORKERS:
        dm = _datamodule(
            [
                "data=webdataset",
                f"data.source.urls={out}",
                "data.source.shuffle_buffer=4",
                "data.source.max_bad_fraction=0.5",
                "data.batch_size=8",
                f"data.num_workers={workers}",
                "sampler=random",
                "filter=none",
                f"paths.cache_dir={tmp_path}",
            ],
            total_steps=100,
        )
        dm.setup("fit")
        _train(dm)
        reports.append(dm.bad_samples["train"]["read"])
    for rep in reports:
        # every sample of the pass, the dropped partial batches' included
        assert rep["seen"] == n and rep["bad"] == nbad
        assert rep["by_reason"] == {"truncated_tar": 16, "broken_image": 2}
    assert all(rep == reports[0] for rep in reports)


@pytest.mark.slow
def test_training_run_reports_and_enforces_worker_counts(table600, tmp_path):
    import json

    from vlexp.train.run import train

    base = [
        "debug=tiny_run",
        "data=csv",
        f"data.source.path={table600}",
        "data.source.num_train=null",
        "data.source.image_size=16",
        "data.batch_size=50",
        "data.num_workers=2",
        "trainer.max_steps=24",  # two passes over the 600 rows
        "test_after_fit=false",
    ]
    cfg = compose_cfg([*base, "data.source.max_bad_fraction=0.05"], output_dir=tmp_path / "ok")
    train(cfg)
    read = json.loads((tmp_path / "ok" / "metrics.json").read_text())["bad_samples"]["train"]
    assert read["read"]["seen"] == 600 and read["read"]["bad"] == 11
    cfg = compose_cfg([*base, "data.source.min_samples=200"], output_dir=tmp_path / "strict")
    with pytest.raises(TooManyBadSamples, match="above the ceiling"):
        train(cfg)
