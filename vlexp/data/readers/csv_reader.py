"""`CsvPairs`: a map-style pair source over a CSV/TSV/parquet table of image paths + captions.

The table is read once, column names are checked up front, rows whose caption is empty
or not valid UTF-8 or whose image file does not exist are dropped (counted per reason,
with their row number), and so are malformed CSV/TSV lines (wrong field count,
unbalanced quotes: :mod:`vlexp.data.readers.delimited`, with their line number), and the kept captions, paths, labels and tags are held in
compact arrays. Images are decoded on access; an unreadable image is skipped (counted
once per row) and a deterministic substitute row is returned instead, with its own
``index`` so per-row lookups stay consistent.

Counting: the table check looks at every row, and its ceiling is judged on the whole
table. ``self.bad`` then counts each *row* once: the rows dropped by the table check
plus every kept row at its first decode, so after a pass over all rows ``seen`` equals
the table's row count, and the bad fraction is judged on the rows actually looked at.

Tags come from a column of class names joined by ``;`` (e.g. ``"dog;ball"``), mapped to
ids through ``class_names`` (a list or a ``classes.json``), else ``classes.json`` next
to the table, else the sorted set of names found in the tags and label columns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter, attach_log, first_good
from vlexp.data.readers.delimited import read_delimited, read_header
from vlexp.data.records import (
    IMAGE_ERRORS,
    TAG_SEP,
    ClassVocab,
    ImageDecoder,
    PackedStrings,
    clean_caption,
    image_error_reason,
    is_valid_utf8,
    label_without_vocab,
    names_found,
)
from vlexp.data.types import TagTable

log = logging.getLogger(__name__)


def table_format(path: Path, sep: str | None) -> str:
    """``"parquet"`` or the field separator of a table file (from ``sep`` or the suffix)."""
    suffixes = [s.lower() for s in path.suffixes]
    if sep is not None:
        return sep
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".tsv" in suffixes or ".tab" in suffixes:
        return "\t"
    if ".csv" in suffixes:
        return ","
    raise ValueError(
        f"cannot tell the format of {path} from its extension; use .csv, .tsv or .parquet "
        "or pass sep=',' / sep='\\t'"
    )


def table_columns(path: Path, fmt: str) -> list[str]:
    """Column names of a table without reading its rows."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return read_header(path, fmt)


class CsvPairs:
    """Image-caption pairs listed in a CSV/TSV/parquet file (a :class:`PairSource`).

    Args:
        path: the table file.
        root: directory image paths are relative to (default: the table's directory).
        image_col, caption_col: column names of the image path and the caption.
        tags_col: optional column of ``;``-joined class names.
        label_col: optional column of a class id or class name (-1 when empty).
        sep: field separator; ``None`` picks it from the extension (.csv/.tsv/.parquet).
        class_names: list of names or a ``classes.json`` path (see module docstring).
        check_files: drop rows whose image file does not exist (one ``stat`` per row).
        max_bad_fraction, min_samples: the bad-sample ceiling (see ``bad_samples``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        image_col: str = "filepath",
        caption_col: str = "caption",
        tags_col: str | None = None,
        label_col: str | None = None,
        sep: str | None = None,
        class_names: Sequence[str] | str | os.PathLike | None = None,
        check_files: bool = True,
        max_bad_fraction: float = 0.01,
        min_samples: int = 1000,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"pairs table {self.path} does not exist; check data.path")
        self.root = Path(root) if root is not None else self.path.parent
        self._known_bad: set[int] = set()
        self.decoder = ImageDecoder()  # pixel cap and JPEG draft (set by the datamodule)
        fmt = table_format(self.path, sep)
        self._malformed: list[tuple[int, str]] = []
        df = self._read(fmt, image_col, caption_col, tags_col, label_col)

        captions = [clean_caption(c) for c in df[caption_col].tolist()]
        files = ["" if f is None else str(f).strip() for f in df[image_col].tolist()]
        rows, table_check = self._check_rows(captions, files, check_files)
        table_check.max_bad_fraction, table_check.min_samples = max_bad_fraction, min_samples
        table_check.check()  # the table check looked at every row: judge it on all of them
        if len(rows) == 0:
            raise ValueError(f"{self.path}: no usable rows ({table_check.as_dict()})")
        self.bad = BadSampleCounter(
            max_bad_fraction, min_samples, name=str(self.path), num_rows=len(rows)
        )
        self.bad.start_up(len(df) + len(self._malformed), table_check.bad, table_check.examples)
        self.rows = rows  # row numbers in the table of the kept pairs
        self._captions = PackedStrings.from_strings(captions[r] for r in rows)  # type: ignore[misc]
        self._files = PackedStrings.from_strings(files[r] for r in rows)

        self.vocab = ClassVocab.resolve(class_names, self.path.parent)
        tag_names = None
        if tags_col is not None:
            col = df[tags_col].tolist()
            tag_names = [_split_tags(col[r]) for r in rows]
        if self.vocab is None:
            label_values = [] if label_col is None else [df[label_col].iat[r] for r in rows]
            self.vocab = self._derived_vocab(tag_names, label_values)
        self._tag_table: TagTable | None = None
        if tag_names is not None and self.vocab is not None:
            ids = [self.vocab.tag_ids(ts, self.bad, f"row {r}") for r, ts in zip(rows, tag_names)]
            self._tag_table = self.vocab.table(ids)
        labels = np.full(len(rows), -1, dtype=np.int64)
        if label_col is not None:
            col = df[label_col].tolist()
            for k, r in enumerate(rows):
                if self.vocab is not None:
                    labels[k] = self.vocab.label_id(col[r], self.bad, f"row {r}")
                else:
                    labels[k] = label_without_vocab(col[r])
        self.labels = labels
        self.bad.log_summary()

    def _check_rows(
        self, captions: list[str | None], files: list[str], check_files: bool
    ) -> tuple[np.ndarray, BadSampleCounter]:
        """Rows with a caption (valid UTF-8) and an existing image file, and the counts."""
        counter = BadSampleCounter(1.0, name=str(self.path))
        for line, why in self._malformed:
            counter.add(R.MALFORMED_ROW, f"line {line}: {why}", check=False)
        keep = np.ones(len(captions), dtype=bool)
        root_str = str(self.root)
        for r, (cap, f) in enumerate(zip(captions, files)):
            if cap is None:
                counter.add(R.EMPTY_CAPTION, f"row {r} ({f})", check=False)
            elif not is_valid_utf8(cap):
                counter.add(
                    R.BAD_ENCODING, f"row {r} ({f}): caption is not UTF-8: {cap!r}", check=False
                )
            elif not f or (check_files and not os.path.isfile(os.path.join(root_str, f))):
                counter.add(R.MISSING_IMAGE, f"row {r}: {self.root / f}", check=False)
            else:
                continue
            keep[r] = False
        counter.good = int(keep.sum())
        return np.flatnonzero(keep), counter

    def _derived_vocab(
        self, tag_names: list[list[str]] | None, labels: list[Any]
    ) -> ClassVocab | None:
        """Class names from the tags and (non-integer) labels found, when any."""
        names = names_found(tag_names or [], labels)
        if not names:
            return None if tag_names is None else ClassVocab([])
        log.info(
            "%s: no classes.json: %d class names taken from the tags/labels found (e.g. %s)",
            self.path,
            len(names),
            names[:5],
        )
        return ClassVocab(names)

    def _read(
        self,
        fmt: str,
        image_col: str,
        caption_col: str,
        tags_col: str | None,
        label_col: str | None,
    ) -> pd.DataFrame:
        wanted = {"image_col": image_col, "caption_col": caption_col}
        if tags_col is not None:
            wanted["tags_col"] = tags_col
        if label_col is not None:
            wanted["label_col"] = label_col
        columns = table_columns(self.path, fmt)
        missing = {arg: col for arg, col in wanted.items() if col not in columns}
        if missing:
            asked = ", ".join(f"{arg}={col!r}" for arg, col in missing.items())
            raise ValueError(
                f"{self.path} has no column {asked}; its columns are {columns}. "
                "Pass the matching column names (image_col, caption_col, tags_col, label_col)."
            )
        usecols = list(dict.fromkeys(wanted.values()))
        if fmt == "parquet":
            return pd.read_parquet(self.path, columns=usecols)
        # strict parse: a malformed line is a counted bad row, never merged into another;
        # bytes that are not UTF-8 are kept and the row counted as bad
        table = read_delimited(self.path, fmt)
        self._malformed = table.malformed
        where = [table.header.index(c) for c in usecols]
        return pd.DataFrame(
            [[rec[k] for k in where] for rec in table.records], columns=usecols, dtype=object
        )

    # ---------------------------------------------------------------- PairSource
    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, i: int) -> Path:
        """Path of the image of pair ``i``."""
        return self.root / self._files[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} pairs")
        i = int(i) % n
        j, image = first_good(
            i,
            n,
            lambda k: self.decoder(self.image_path(k)),
            self.bad,
            self._known_bad,
            image_error_reason,
            IMAGE_ERRORS,
            where=lambda k: f"row {int(self.rows[k])} ({self._files[k]})",
        )
        table = self._tag_table
        item = {
            "image": image,
            "caption": self._captions[j],
            "tags": [] if table is None else table.tags_of(j).tolist(),
            "label": int(self.labels[j]),
            "index": j,
        }
        return attach_log(item, self.bad)

    @property
    def captions(self) -> PackedStrings:
        return self._captions

    @property
    def tag_table(self) -> TagTable | None:
        return self._tag_table

    @property
    def class_names(self) -> list[str]:
        return [] if self.vocab is None else list(self.vocab.class_names)


def _split_tags(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):  # parquet list column
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in str(value).split(TAG_SEP) if t.strip()]
