"""A small, strict tar reader for sample shards: members, their byte offsets, samples.

Why not :mod:`tarfile`: in streaming mode it ends *silently* when an archive is cut at
a header (it treats a short read as the end), and it does not hand out data offsets
cheaply. This reader parses ustar/GNU/pax headers (checksums verified), yields every
regular member with the offset of its data in the archive, and raises
:class:`TarTruncated` / :class:`TarCorrupt` so callers can count a broken shard.
Unwanted members are skipped with ``seek`` when the stream allows it.

Samples follow the WebDataset convention: consecutive members sharing a *key* (the
path up to the first ``.`` of the file name) form one sample; the rest of the name is
the field (``000000012.jpg`` -> key ``000000012``, field ``jpg``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

BLOCK = 512


class TarError(Exception):
    """A shard that cannot be read to its end. ``member`` names the member whose data
    were cut (when the break came after its header)."""

    member: str | None = None


class TarTruncated(TarError):
    """The archive ends before its end-of-archive marker (cut file or interrupted copy)."""


class TarCorrupt(TarError):
    """A header with a bad checksum or malformed fields."""


@dataclass
class TarMember:
    """One regular file of an archive: ``data`` is None when it was skipped."""

    name: str
    offset: int  # byte offset of the data in the archive
    size: int
    data: bytes | None


@dataclass
class RawSample:
    """The members of one sample: ``fields`` maps field (``jpg``, ``txt``, ...) to bytes
    (or None when skipped) and ``spans`` to ``(offset, size)`` in the archive."""

    key: str
    position: int  # 0-based sample number within its shard
    fields: dict[str, bytes | None] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    url: str = ""


def _octal(field_bytes: bytes, what: str) -> int:
    if field_bytes[:1] and field_bytes[0] & 0x80:  # GNU base-256
        return int.from_bytes(bytes([field_bytes[0] & 0x7F]) + field_bytes[1:], "big")
    text = field_bytes.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarCorrupt(f"malformed {what} field {field_bytes!r}") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        length = int(data[pos:sp])
        record = data[sp + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


class _Reader:
    """Reads and skips bytes of a stream, tracking the position."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.pos = 0
        self.end: int | None = None
        try:
            self.seekable = bool(stream.seekable())
        except (AttributeError, OSError):
            self.seekable = False

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.pos += len(data)
        return data

    def read_exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise TarTruncated(
                f"archive ends inside a member ({len(data)} of {n} bytes at {self.pos})"
            )
        return data

    def skip(self, n: int) -> None:
        if n <= 0:
            return
        if self.seekable:
            if self.end is None:
                start = self.stream.tell()
                self.end = self.stream.seek(0, 2) - start + self.pos
                self.stream.seek(start)
            if self.pos + n > self.end:
                raise TarTruncated(
                    f"archive ends inside a member (needs {self.pos + n}, has {self.end})"
                )
            self.stream.seek(n, 1)
            self.pos += n
        else:
            self.read_exact(n)


def tar_members(
    stream: IO[bytes], want: Callable[[str], bool] | None = None
) -> Iterator[TarMember]:
    """Regular files of a tar stream in order; ``want(name)`` False skips the data.

    Raises:
        TarTruncated: the stream ends before the end-of-archive marker.
        TarCorrupt: a header fails its checksum or has malformed fields.
    """
    r = _Reader(stream)
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = r.read(BLOCK)
        if len(header) == 0:
            raise TarTruncated(f"archive ends at byte {r.pos} without an end-of-archive marker")
        if len(header) < BLOCK:
            raise TarTruncated(f"archive ends inside a header at byte {r.pos}")
        if header == b"\0" * BLOCK:
            return
        stored = _octal(header[148:156], "checksum")
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != computed:
            raise TarCorrupt(f"header checksum mismatch at byte {r.pos - BLOCK}")
        size = _octal(header[124:136], "size")
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        if long_name is not None:
            name, long_name = long_name, None
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            size = int(pax["size"])
        pax = {}
        padded = -(-size // BLOCK) * BLOCK
        if kind in (b"L", b"x", b"g"):
            data = r.read_exact(size)
            r.skip(padded - size)
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"x":
                pax = _parse_pax(data)
            continue
        if kind not in (b"0", b"\0", b"7"):
            r.skip(padded)  # directories, links, devices: nothing to yield
            continue
        offset = r.pos
        try:
            if want is None or want(name):
                data = r.read_exact(size)
                r.skip(padded - size)
            else:
                data = None
                r.skip(padded)
        except TarTruncated as e:
            e.member = name
            raise
        yield TarMember(name, offset, size, data)


def split_name(name: str) -> tuple[str, str]:
    """``dir/000012.seg.png`` -> (``dir/000012``, ``seg.png``): key and field of a member."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


def tar_samples(
    stream: IO[bytes], url: str = "", want: Callable[[str], bool] | None = None
) -> Iterator[RawSample]:
    """Samples of a shard (consecutive members with one key). Hidden/meta members
    (``__*__``, ``._*``) are ignored. ``want(field)`` False skips a field's bytes.

    The raise of :func:`tar_members` propagates *after* every complete sample before
    the break was yielded (a sample is complete once a member of the next key is seen);
    the sample in progress when the archive broke is dropped.
    """
    current: RawSample | None = None
    position = 0
    member_want = None if want is None else (lambda n: want(split_name(n)[1]))
    try:
        for m in tar_members(stream, member_want):
            base = m.name.rsplit("/", 1)[-1]
            if base.startswith("__") or base.startswith("._"):
                continue
            key, fld = split_name(m.name)
            if current is not None and key != current.key:
                yield current
                position += 1
                current = None
            if current is None:
                current = RawSample(key, position, url=url)
            current.fields[fld] = m.data
            current.spans[fld] = (m.offset, m.size)
    except TarError as e:
        if current is not None and e.member is not None and split_name(e.member)[0] != current.key:
            yield current
        raise
    if current is not None:
        yield current
