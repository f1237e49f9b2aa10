"""Units of work of the pass: which input, which output, which part a job runs.

A unit is one tar shard, or one chunk of ``chunk_rows`` consecutive rows of a table. Units
are listed in a fixed order (shards sorted as :func:`vlexp.data.shards.listing.list_shards` gives
them, chunks by row), so ``shard_range=START:END`` and ``array_index``/``array_count``
pick the same units in every job.

Output layout: a shard ``<root>/<rel>.tar`` (``root`` the deepest folder holding all input
shards) becomes ``<output_dir>/<rel>.tar``; table chunks become parts under
``<output_dir>/_parts/`` that the merge step joins into ``<output_dir>/<table name>``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlexp.data.shards.listing import is_local, list_shards, local_path, quota

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")
UNITS_DIR = "_units"
PARTS_DIR = "_parts"


@dataclass(frozen=True)
class Unit:
    """One unit: ``name`` is unique and file-name safe; ``rel`` is the output path of a
    shard relative to the output folder; ``lo``/``hi`` the row range of a table chunk."""

    index: int
    name: str
    source: str
    rel: str = ""
    lo: int = 0
    hi: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(**d)


def report_path(output_dir: str | os.PathLike, unit: Unit) -> Path:
    """Where a finished unit's report lives (its presence marks the unit done)."""
    return Path(output_dir) / UNITS_DIR / f"{unit.name}.json"


def guess_kind(spec: str) -> str:
    """``"table"`` for a .csv/.tsv/.parquet file, else ``"webdataset"``."""
    suffixes = [s.lower() for s in Path(spec).suffixes]
    return "table" if any(s in TABLE_SUFFIXES for s in suffixes) else "webdataset"


def shard_units(spec: str) -> tuple[list[Unit], list[Path]]:
    """Units of a shard spec (folder, glob, brace list) and the folders holding the shards."""
    shards = list_shards(spec)
    remote = [u for u in shards if not is_local(u)]
    if remote:
        raise ValueError(
            f"the filter pass reads local shard files, got e.g. {remote[:2]}; copy the "
            "shards to a local or network file system first"
        )
    paths = [os.path.abspath(local_path(u)) for u in shards]
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    if dupes:
        raise ValueError(f"the shard spec lists these shards twice: {dupes[:5]}")
    dirs = sorted({os.path.dirname(p) for p in paths})
    root = os.path.commonpath(dirs)
    units = []
    for i, p in enumerate(paths):
        rel = os.path.relpath(p, root)
        stem = rel[:-4] if rel.endswith(".tar") else rel
        units.append(Unit(i, stem.replace(os.sep, "__"), p, rel=rel))
    return units, [Path(d) for d in dirs]


def table_units(path: str, n_rows: int, chunk_rows: int) -> list[Unit]:
    """Units of ``n_rows`` table rows in chunks of ``chunk_rows``."""
    src = os.path.abspath(path)
    width = max(9, len(str(n_rows)))
    return [
        Unit(
            i,
            f"rows_{lo:0{width}d}_{min(n_rows, lo + chunk_rows):0{width}d}",
            src,
            lo=lo,
            hi=min(n_rows, lo + chunk_rows),
        )
        for i, lo in enumerate(range(0, n_rows, chunk_rows))
    ]


def parse_range(text: str, n: int) -> tuple[int, int]:
    """``"START:END"`` (either end may be empty) as a clipped ``(start, end)``."""
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else n
    except ValueError:
        raise ValueError(
            f"shard_range must look like START:END (e.g. 0:100, or 100: for the rest), got {text!r}"
        ) from None
    if start < 0 or end < start:
        raise ValueError(f"shard_range {text!r} needs 0 <= START <= END")
    if start >= n and n > 0:
        raise ValueError(f"shard_range {text!r} starts past the last of the {n} units")
    return start, min(end, n)


def select_units(
    units: list[Unit],
    shard_range: str | None = None,
    array_index: int | None = None,
    array_count: int | None = None,
) -> list[Unit]:
    """The units of this job: a ``shard_range`` slice, or block ``array_index`` of
    ``array_count`` near-equal contiguous blocks, or all units."""
    n = len(units)
    if shard_range is not None:
        start, end = parse_range(shard_range, n)
        return units[start:end]
    if array_count is not None:
        if not 0 <= int(array_index) < int(array_count):  # type: ignore[arg-type]
            raise ValueError(f"array_index {array_index} outside [0, array_count={array_count})")
        start = sum(quota(n, array_count, k) for k in range(array_index))  # type: ignore[arg-type]
        return units[start : start + quota(n, array_count, array_index)]  # type: ignore[arg-type]
    return list(units)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_dir(output_dir: str | os.PathLike, input_dirs: list[Path]) -> Path:
    """The resolved output folder; a ValueError if it is, holds or lies inside an input folder."""
    out = Path(output_dir).resolve()
    for d in input_dirs:
        d = d.resolve()
        if _inside(out, d):
            raise ValueError(
                f"output_dir {out} is inside the input folder {d}; the filter pass never "
                "writes into its input. Choose an output folder outside it."
            )
        if _inside(d, out):
            raise ValueError(
                f"the input folder {d} lies inside output_dir {out}; choose an output folder "
                "that does not contain the input"
            )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output_dir {out} exists and is not a folder")
    return out
