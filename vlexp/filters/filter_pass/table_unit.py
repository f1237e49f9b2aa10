"""Filtering a CSV/TSV/parquet table of image paths and captions, chunk by chunk.

The table is read once by the job's main process (every column, CSV cells as text so
they are written back unchanged). Each chunk of rows is judged by a worker
(:func:`judge_rows`, which gets only the chunk's captions and image paths); the main
process then writes the kept rows, all columns, as a part file under ``_parts/`` in the
input's own format (:meth:`PairTable.write_part`). The merge step joins the parts in
row order into ``<output_dir>/<input file name>`` (:func:`join_parts`).

Kept rows reference the original image files (nothing is copied): their image column is
rewritten to absolute paths (``image_paths=absolute``) or to paths relative to the output
folder (``image_paths=relative``), so the new table can be read from where it is.

Rows with an empty caption, a missing image file (``check_files``) or, when the filter
needs pixels, an image that cannot be decoded are skipped, counted and not written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.readers.csv_reader import table_columns, table_format
from vlexp.data.records import IMAGE_ERRORS, clean_caption, decode_image
from vlexp.filters.base import PairFilter
from vlexp.filters.filter_pass.judge import judge
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import UnitReport
from vlexp.filters.filter_pass.units import PARTS_DIR, Unit
from vlexp.io import write_atomic


class PairTable:
    """A whole pairs table in memory: a pyarrow Table (parquet) or a DataFrame of str."""

    def __init__(
        self, path: str | os.PathLike, image_col: str, caption_col: str, sep: str | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"input table {self.path} does not exist; check input=")
        self.fmt = table_format(self.path, sep)
        columns = table_columns(self.path, self.fmt)
        missing = [c for c in (image_col, caption_col) if c not in columns]
        if missing:
            raise ValueError(
                f"{self.path} has no column {missing}; its columns are {columns}. Pass "
                "image_col=... and caption_col=... naming the image path and caption columns."
            )
        self.image_col, self.caption_col = image_col, caption_col
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self.data: Any = pq.read_table(self.path)
            self.n_rows = self.data.num_rows
        else:
            self.data = pd.read_csv(self.path, sep=self.fmt, dtype=str, keep_default_na=False)
            self.n_rows = len(self.data)

    def column(self, name: str, lo: int, hi: int) -> list[str]:
        """Cells ``lo:hi`` of a column as strings (missing cells as ``""``)."""
        if self.fmt == "parquet":
            values = self.data.column(name).slice(lo, hi - lo).to_pylist()
        else:
            values = self.data[name].iloc[lo:hi].tolist()
        return ["" if v is None else str(v) for v in values]

    @property
    def part_suffix(self) -> str:
        return {"parquet": ".parquet", ",": ".csv", "\t": ".tsv"}.get(self.fmt, ".txt")

    def write_part(self, path: Path, rows: np.ndarray, image_paths: Sequence[str]) -> None:
        """Write ``rows`` (absolute row numbers) with the image column replaced by
        ``image_paths``; CSV parts have no header (the merge adds it once)."""
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            part = self.data.take(pa.array(rows, type=pa.int64()))
            i = part.schema.get_field_index(self.image_col)
            col_type = part.schema.field(i).type
            if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)):
                col_type = pa.string()
            part = part.set_column(i, self.image_col, pa.array(list(image_paths), type=col_type))
            write_atomic(path, lambda p: pq.write_table(part, p))
            return
        part = self.data.iloc[rows].copy()
        part[self.image_col] = list(image_paths)
        write_atomic(path, lambda p: part.to_csv(p, sep=self.fmt, index=False, header=False))


def resolve_image(value: str, root: Path) -> str:
    """Absolute, normalised path of an image cell (relative cells are under ``root``)."""
    return os.path.abspath(os.path.join(root, value))


def judge_rows(
    unit: Unit,
    captions: Sequence[str],
    image_paths: Sequence[str],
    flt: PairFilter,
    opts: PassOptions,
) -> tuple[UnitReport, np.ndarray]:
    """Judge one chunk (``image_paths`` absolute); the unit report and the kept rows'
    positions within the chunk."""
    rep = UnitReport(unit.name, unit.index)
    t0 = time.perf_counter()
    counter = BadSampleCounter(
        opts.max_bad_fraction,
        opts.min_samples,
        name=f"{unit.source} rows {unit.lo}:{unit.hi}",
        log_first=1,
    )
    needs_images = bool(getattr(flt, "needs_images", False))
    kept: list[int] = []
    batch: list[tuple[int, str, Any]] = []

    def judge_batch() -> None:
        if not batch:
            return
        caps = [c for _, c, _ in batch]
        images = [im for _, _, im in batch] if needs_images else None
        v = judge(flt, caps, images)
        rep.ocr_images += v.ocr_images
        ids = [f"row {unit.lo + j}" for j, _, _ in batch]
        rep.add(ids, caps, v.keep, v.reasons, v.details, opts.max_examples)
        kept.extend(j for (j, _, _), k in zip(batch, v.keep) if k)
        batch.clear()

    for j, (raw_caption, path) in enumerate(zip(captions, image_paths)):
        rep.read += 1
        where = f"row {unit.lo + j}"
        caption = clean_caption(raw_caption)
        if caption is None:
            counter.add(R.EMPTY_CAPTION, where)
            continue
        image = None
        if not path:
            counter.add(R.MISSING_IMAGE, f"{where}: empty image path")
            continue
        if needs_images:
            try:
                image = decode_image(path)
            except FileNotFoundError:
                counter.add(R.MISSING_IMAGE, f"{where}: {path}")
                continue
            except IMAGE_ERRORS as e:
                counter.add(R.BROKEN_IMAGE, f"{where}: {path}: {type(e).__name__}: {e}")
                continue
        elif opts.check_files and not os.path.isfile(path):
            counter.add(R.MISSING_IMAGE, f"{where}: {path}")
            continue
        counter.ok()
        batch.append((j, caption, image))
        if len(batch) >= opts.batch_size:
            judge_batch()
    judge_batch()
    rep.skipped.update(counter.bad)
    rep.notes.update(counter.notes)
    rep.seconds = time.perf_counter() - t0
    return rep, np.asarray(kept, dtype=np.int64)


def part_path(output_dir: str | os.PathLike, unit: Unit, suffix: str) -> Path:
    """Where a chunk's kept rows are written."""
    return Path(output_dir) / PARTS_DIR / f"{unit.name}{suffix}"


def output_image_paths(abs_paths: Sequence[str], opts: PassOptions) -> list[str]:
    """Image cells of the output table (see the module docstring)."""
    if opts.image_paths == "absolute":
        return list(abs_paths)
    out = os.path.abspath(opts.output_dir)
    return [os.path.relpath(p, out) for p in abs_paths]


def join_parts(
    output_dir: Path,
    table_path: Path,
    units: Sequence[Unit],
    fmt: str,
    header: str | None,
    suffix: str,
) -> Path:
    """Join the parts of ``units`` (in order) into ``output_dir/<table name>``."""
    target = output_dir / table_path.name
    parts = [part_path(output_dir, u, suffix) for u in units]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        def write(tmp: Path) -> None:
            schema = pq.read_schema(parts[0] if parts else table_path)
            with pq.ParquetWriter(tmp, schema) as w:
                for p in parts:
                    w.write_table(pq.read_table(p, schema=schema))

        return write_atomic(target, write)
    if header is None:
        raise ValueError("joining CSV parts needs the header line")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(header.encode("utf-8"))
            for p in parts:
                with open(p, "rb") as src:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)

    return write_atomic(target, write_csv)


def empty_table_header(table_path: Path, fmt: str) -> str:
    """The header line pandas writes for ``table_path`` (read without its rows)."""
    cols = pd.read_csv(table_path, sep=fmt, nrows=0, dtype=str).columns
    return pd.DataFrame(columns=cols).to_csv(sep=fmt, index=False)


__all__ = [
    "PairTable",
    "empty_table_header",
    "join_parts",
    "judge_rows",
    "output_image_paths",
    "part_path",
    "resolve_image",
]
