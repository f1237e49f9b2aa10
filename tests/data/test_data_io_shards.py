"""Shard specs, splitting helpers and the strict tar reader (checked against references)."""

from __future__ import annotations

import io
import json
import tarfile

import braceexpand
import pytest

from vlexp.data.shards.listing import (
    brace_expand,
    expand_urls,
    list_shards,
    open_shard,
    quota,
    read_sizes,
    split_by_node_and_worker,
)
from vlexp.data.shards.tario import TarCorrupt, TarTruncated, split_name, tar_members, tar_samples

PATTERNS = [
    "/data/{00000..00012}.tar",
    "s3/{cc3m,cc12m}/{0000..0003}.tar",
    "a{1,2}b{x,y}",
    "{a,b{1..3}}c",
    "x{a}y{1,2}",
    "{9..11}",
    "{01..3}",
    "{5..1}",
    "p{0..10..5}",
    "{a..e..2}",
    "n{-2..2}",
    "no-braces.tar",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_brace_expand_matches_braceexpand_library(pattern):
    assert brace_expand(pattern) == list(braceexpand.braceexpand(pattern))


def test_expand_urls_joins_specs():
    assert expand_urls("a{0..1}.tar::b.tar") == ["a0.tar", "a1.tar", "b.tar"]
    assert expand_urls(["x{1,2}", "y"]) == ["x1", "x2", "y"]


def test_list_shards_dir_glob_and_missing(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"")
    (tmp_path / "other.txt").write_text("x")
    want = [str(tmp_path / f"{i:05d}.tar") for i in range(3)]
    assert list_shards(str(tmp_path)) == want
    assert list_shards(str(tmp_path / "*.tar")) == want
    assert list_shards(str(tmp_path / "{00000..00002}.tar")) == want
    with pytest.raises(FileNotFoundError, match=r"2 of 5 shards .* do not exist"):
        list_shards(str(tmp_path / "{00000..00004}.tar"))
    with pytest.raises(ValueError, match="matches no shard"):
        list_shards(str(tmp_path / "*.zip"))


def test_read_sizes_from_sizes_json_and_stats(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"00000.tar": 7}))
    (tmp_path / "b" / "00003_stats.json").write_text(json.dumps({"successes": 5, "count": 6}))
    urls = [
        str(tmp_path / "a" / "00000.tar"),
        str(tmp_path / "b" / "00003.tar"),
        str(tmp_path / "c.tar"),
    ]
    assert read_sizes(urls) == {urls[0]: 7, urls[1]: 5}


@pytest.mark.parametrize("n,world,workers", [(10, 2, 2), (7, 2, 3), (5, 3, 1), (3, 2, 4)])
def test_node_worker_split_is_a_partition(n, world, workers):
    items = list(range(n))
    parts = [
        split_by_node_and_worker(items, r, world, w, workers)
        for r in range(world)
        for w in range(workers)
    ]
    flat = sorted(x for p in parts for x in p)
    assert flat == items
    per_rank = [sum(len(p) for p in parts[r * workers : (r + 1) * workers]) for r in range(world)]
    assert max(per_rank) - min(per_rank) <= 1  # node split first: ranks balanced
    assert all(c > 0 for c in per_rank) or n < world


def test_quota_sums_to_total():
    assert [quota(10, 3, i) for i in range(3)] == [4, 3, 3]
    assert sum(quota(101, 7, i) for i in range(7)) == 101


# --------------------------------------------------------------------- tar reader
def _tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_members_agree_with_tarfile(fmt):
    long_dir = "d" * 60 + "/" + "e" * 60 if fmt != tarfile.USTAR_FORMAT else "d" * 60
    members = [
        (f"{long_dir}/000000000.jpg", b"\xff\xd8" + bytes(range(256)) * 3),
        (f"{long_dir}/000000000.txt", "caption é".encode()),
        ("000000001.txt", b""),
        ("x" * 120 + ".json" if fmt != tarfile.USTAR_FORMAT else "y.json", b"{}"),
    ]
    raw = _tar_bytes(members, fmt)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        ref = [(m.name, m.offset_data, m.size, tf.extractfile(m).read()) for m in tf if m.isfile()]
    got = [(m.name, m.offset, m.size, m.data) for m in tar_members(io.BytesIO(raw))]
    assert got == ref
    # skipped members keep their spans, and the data really sits at that offset
    skipped = list(tar_members(io.BytesIO(raw), want=lambda n: not n.endswith(".jpg")))
    assert skipped[0].data is None
    assert raw[skipped[0].offset : skipped[0].offset + skipped[0].size] == members[0][1]


def test_tar_truncation_and_corruption_are_detected():
    raw = _tar_bytes([("000000000.jpg", b"a" * 1000), ("000000000.txt", b"cap")])
    for cut in (100, 700, 1536, 2048):  # in a header, in data, at a member boundary
        with pytest.raises(TarTruncated):
            list(tar_members(io.BytesIO(raw[:cut])))
        with pytest.raises(TarTruncated):  # also without seeking (a pipe)
            list(tar_members(_Unseekable(raw[:cut])))
    bad = bytearray(raw)
    bad[10] ^= 0xFF  # name byte changes, checksum no longer matches
    with pytest.raises(TarCorrupt):
        list(tar_members(io.BytesIO(bytes(bad))))


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._buf.read(len(b))
        b[: len(data)] = data
        return len(data)


def test_tar_samples_group_consecutive_keys():
    raw = _tar_bytes(
        [("a/001.jpg", b"1"), ("a/001.txt", b"t1"), ("a/002.seg.png", b"2"), ("a/002.TXT", b"t2")]
    )
    samples = list(tar_samples(io.BytesIO(raw), "u"))
    assert [(s.key, s.position, sorted(s.fields)) for s in samples] == [
        ("a/001", 0, ["jpg", "txt"]),
        ("a/002", 1, ["seg.png", "txt"]),
    ]
    assert split_name("dir.v1/x.tar.gz") == ("dir.v1/x", "tar.gz")


def test_open_shard_pipe(tmp_path):
    raw = _tar_bytes([("000.txt", b"hello")])
    (tmp_path / "s.tar").write_bytes(raw)
    with open_shard(f"pipe:cat {tmp_path / 's.tar'}") as f:
        assert [m.data for m in tar_members(f)] == [b"hello"]
    with pytest.raises(OSError, match="exited with status"):
        with open_shard(f"pipe:cat {tmp_path / 'missing.tar'}") as f:
            f.read()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (1 << 22))
    gen = _first_bytes(f"pipe:cat {big}")
    assert next(gen) == b"\0" * 10
    gen.close()  # stopping early kills the command quietly


def _first_bytes(url):
    with open_shard(url) as f:
        yield f.read(10)
        yield f.read(10)
