"""Shard lists: brace expansion, listing and checking, sample counts, node/worker splits.

Shard specs follow the WebDataset conventions: ``/data/{00000..00099}.tar`` (numeric
ranges keep the zero padding), ``/data/{cc3m,cc12m}/{0000..0009}.tar`` (alternatives,
nested), several specs joined by ``::``. A directory stands for all ``*.tar`` in it and a
spec with ``*``/``?`` is globbed. ``pipe:CMD`` urls stream a shard from a command's stdout.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$")


# --------------------------------------------------------------------- brace expansion
def _matching_brace(s: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (or -1)."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top_level(s: str) -> list[str]:
    """Split on commas that are not inside nested braces."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _range_items(body: str) -> list[str] | None:
    """Items of a ``{a..b[..step]}`` body, or None when it is not a range."""
    m = _RANGE.match(body)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        a, b = m.group(1).lstrip("-"), m.group(2).lstrip("-")
        padded = (len(a) > 1 and a.startswith("0")) or (len(b) > 1 and b.startswith("0"))
        width = max(len(m.group(1)), len(m.group(2))) if padded else 0
        values = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        return [f"{v:0{width}d}" if width else str(v) for v in values]
    m = _CHAR_RANGE.match(body)
    if m:
        lo, hi = ord(m.group(1)), ord(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        values = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        return [chr(v) for v in values]
    return None


def brace_expand(pattern: str) -> list[str]:
    """Expand shell-style braces: ``{a,b}`` alternatives, ``{000..123}`` padded ranges.

    A brace group that is neither (``{x}``) or is unbalanced is kept literally.
    """
    start = pattern.find("{")
    while start != -1:
        end = _matching_brace(pattern, start)
        if end == -1:
            return [pattern]
        body = pattern[start + 1 : end]
        items = _range_items(body)
        if items is None:
            alts = _split_top_level(body)
            if len(alts) > 1:
                items = [x for alt in alts for x in brace_expand(alt)]
        if items is not None:
            head, tails = pattern[:start], brace_expand(pattern[end + 1 :])
            return [head + item + tail for item in items for tail in tails]
        # literal group: keep it, expand what follows
        start = pattern.find("{", start + 1)
    return [pattern]


def expand_urls(spec: str | Sequence[str]) -> list[str]:
    """Expand one spec (``::``-separated parts allowed) or a list of specs into urls."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    urls: list[str] = []
    for s in specs:
        for part in str(s).split("::"):
            if part.strip():
                urls.extend(brace_expand(part.strip()))
    return urls


# --------------------------------------------------------------------- listing
def is_local(url: str) -> bool:
    """True for plain filesystem paths (and ``file://`` urls)."""
    return not url.startswith("pipe:") and "://" not in url.replace("file://", "", 1)


def local_path(url: str) -> str:
    """The filesystem path of a local url."""
    return url[len("file://") :] if url.startswith("file://") else url


def list_shards(spec: str | Sequence[str], check: bool = True) -> list[str]:
    """Shard urls of a spec: braces expanded, directories and globs listed, existence checked.

    Raises:
        FileNotFoundError: naming the missing local shards (first five) and how many.
        ValueError: when the spec yields no shard at all.
    """
    urls: list[str] = []
    for url in expand_urls(spec):
        path = local_path(url)
        if is_local(url) and os.path.isdir(path):
            urls.extend(sorted(glob.glob(os.path.join(path, "*.tar"))))
        elif is_local(url) and any(c in path for c in "*?["):
            urls.extend(sorted(glob.glob(path)))
        else:
            urls.append(url)
    if not urls:
        raise ValueError(f"the shard spec {spec!r} matches no shard; check the path and pattern")
    if check:
        missing = [u for u in urls if is_local(u) and not os.path.isfile(local_path(u))]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(urls)} shards of {spec!r} do not exist, e.g. "
                f"{missing[:5]}; check the path and the brace range"
            )
    return urls


def read_sizes(urls: Sequence[str]) -> dict[str, int]:
    """Known sample counts per shard url, from ``sizes.json`` next to the shards or
    img2dataset's ``<shard>_stats.json`` (``successes``). Unknown shards are absent."""
    sizes: dict[str, int] = {}
    by_dir: dict[str, dict[str, int] | None] = {}
    for url in urls:
        if not is_local(url):
            continue
        path = Path(local_path(url))
        d = str(path.parent)
        if d not in by_dir:
            f = path.parent / "sizes.json"
            try:
                by_dir[d] = {str(k): int(v) for k, v in json.loads(f.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                by_dir[d] = None
        table = by_dir[d]
        if table is not None and path.name in table:
            sizes[url] = table[path.name]
            continue
        stats = path.with_name(path.name.rsplit(".", 1)[0] + "_stats.json")
        try:
            sizes[url] = int(json.loads(stats.read_text())["successes"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return sizes


@contextmanager
def open_shard(url: str, buffering: int = 1 << 20) -> Iterator[IO[bytes]]:
    """Open a shard for sequential reading: a local file or ``pipe:CMD`` (its stdout)."""
    if url.startswith("pipe:"):
        proc = subprocess.Popen(
            url[len("pipe:") :], shell=True, stdout=subprocess.PIPE, bufsize=buffering
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout
        except BaseException:  # the reader stopped early (or failed): not the command's fault
            proc.kill()
            proc.stdout.close()
            proc.wait()
            raise
        proc.stdout.read()  # drain what the reader did not need (tar padding)
        proc.stdout.close()
        rc = proc.wait()
        if rc != 0:
            raise OSError(f"shard command {url!r} exited with status {rc}")
    elif is_local(url):
        with open(local_path(url), "rb", buffering=buffering) as f:
            yield f
    else:
        raise ValueError(
            f"cannot open {url!r}: use a local path or 'pipe:COMMAND' (e.g. 'pipe:aws s3 cp {url} -')"
        )


# --------------------------------------------------------------------- splitting
def distributed_rank_world() -> tuple[int, int]:
    """(rank, world_size) from an initialised torch.distributed group, else the
    ``RANK``/``WORLD_SIZE`` environment variables, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_id_count() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker, (0, 1) outside one."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def split_items(items: Sequence[T], part: int, num_parts: int) -> list[T]:
    """Items of part ``part`` of ``num_parts`` (strided: ``items[part::num_parts]``)."""
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} outside [0, {num_parts})")
    return list(items[part::num_parts])


def split_by_node_and_worker(
    items: Sequence[T], rank: int, world_size: int, worker: int, num_workers: int
) -> list[T]:
    """Items of one (rank, worker): first by node (``items[rank::world_size]``), then by
    worker within the node. All readers together cover every item exactly once, and every
    rank gets an item whenever ``len(items) >= world_size``."""
    return split_items(split_items(items, rank, world_size), worker, num_workers)


def quota(total: int, num_parts: int, part: int) -> int:
    """Size of part ``part`` when ``total`` is divided into ``num_parts`` near-equal parts."""
    return total // num_parts + (1 if part < total % num_parts else 0)
