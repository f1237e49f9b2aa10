"""The streamed and the indexed shard readers count the same bad samples on the same
shards, each sample once however often it is read, for every kind of damage."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.data.test_bad_samples_workers import _datamodule
from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.shards.export import export_webdataset

SHARD, N = 8, 48  # 6 shards

# what each damage costs (the reference, counted by hand from the edits below)
EXPECTED_BAD = {
    "broken_image": 2,  # text bytes stored as .jpg (shard 0), a JPEG cut to a third
    "too_large": 1,  # a PNG header declaring 12000 x 12000 pixels
    "empty_caption": 1,
    "missing_caption": 1,
    "bad_encoding": 1,  # a .txt caption that is not UTF-8
    "missing_image": 1,  # no image member
    "truncated_tar": SHARD - 2,  # shard 4 cut inside its 3rd sample: 2 read, 6 lost
    "unreadable_shard": SHARD,  # shard 5: a header checksum broken before any sample
}
EXPECTED_NOTES = {"bad_json": 1, "unknown_tag": 1}


def _png_header(w: int, h: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))


def _rewrite(path: Path, edit) -> None:
    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            data = edit(name, data)
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _damage0(name: str, data: bytes) -> bytes | None:
    key, field = name.split(".", 1)
    pos = int(key[-4:])
    if pos == 1 and field == "jpg":
        return b"a red square left of a blue circle"  # text stored as .jpg
    if pos == 2 and field == "jpg":
        return data[: len(data) // 3]
    if pos == 3 and field == "txt":
        return b"   "
    if pos == 3 and field == "json":
        return json.dumps({**json.loads(data), "caption": ""}).encode()
    if pos == 4 and field == "txt":
        return None
    if pos == 4 and field == "json":
        return json.dumps({k: v for k, v in json.loads(data).items() if k != "caption"}).encode()
    if pos == 5 and field == "txt":
        return "caf\xe9 au lait".encode("latin-1")
    if pos == 6 and field == "jpg":
        return None
    if pos == 7 and field == "json":
        return b"{not json"  # a note: the .txt caption is used
    return data


def _damage1(name: str, data: bytes) -> bytes | None:
    key, field = name.split(".", 1)
    pos = int(key[-4:])
    if pos == 0 and field == "jpg":
        return _png_header(12000, 12000)
    if pos == 1 and field == "json":
        return json.dumps({**json.loads(data), "tags": ["unicorn"]}).encode()  # a note
    return data


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged")
    export_webdataset(colour_block_pairs(N, image_size=16, seed=4), out, shard_size=SHARD)
    _rewrite(out / "00000.tar", _damage0)
    _rewrite(out / "00001.tar", _damage1)
    shard4 = out / "00004.tar"
    with tarfile.open(shard4) as tf:
        cut = [m for m in tf.getmembers() if m.name.endswith(".jpg")][2].offset_data + 10
    shard4.write_bytes(shard4.read_bytes()[:cut])
    shard5 = out / "00005.tar"
    data = bytearray(shard5.read_bytes())
    data[148] ^= 0x01  # the first header's checksum
    shard5.write_bytes(bytes(data))
    return out


def _read(kind: str, shards: Path, workers: int, tmp: Path, epochs: int) -> dict:
    dm = _datamodule(
        [
            f"data={kind}",
            f"data.source.urls={shards}",
            "data.source.max_bad_fraction=0.9",
            "data.source.min_samples=1",
            "data.batch_size=5",  # the index keeps 30 rows: every epoch reads them all
            f"data.num_workers={workers}",
            "sampler=random",
            "filter=none",
            f"paths.cache_dir={tmp}",
            *(["data.source.shuffle_buffer=5"] if kind == "webdataset" else []),
        ],
        total_steps=1000,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    for epoch in range(epochs):  # a stream's next pass is its next epoch
        if kind == "wds_indexed":
            loader.batch_sampler.sampler.set_epoch(epoch)
        for batch in loader:
            dm.on_before_batch_transfer(batch, 0)  # what Lightning does with every batch
    return dm.bad_samples["train"]["read"]


@pytest.mark.slow
def test_stream_and_index_count_the_same_bad_samples(damaged, tmp_path):
    indexed = _read("wds_indexed", damaged, 0, tmp_path, epochs=2)
    reports = [_read("webdataset", damaged, w, tmp_path, epochs=2) for w in (0, 2)]
    total_bad = sum(EXPECTED_BAD.values())
    for rep in [indexed, *reports]:
        assert rep["by_reason"] == EXPECTED_BAD
        assert rep["notes"] == EXPECTED_NOTES
        assert rep["seen"] == N and rep["bad"] == total_bad and rep["good"] == N - total_bad


def test_a_second_pass_over_a_stream_counts_nothing_new(damaged):
    from vlexp.data.readers.webdataset_reader import WebDatasetPairs

    ds = WebDatasetPairs(str(damaged), shuffle_buffer=0, max_bad_fraction=1.0)
    first = len(list(ds))
    once = ds.bad.as_dict()
    assert once["by_reason"] == EXPECTED_BAD and once["notes"] == EXPECTED_NOTES
    assert len(list(ds)) == first  # the same samples again ...
    assert ds.bad.as_dict() == once  # ... counted once
