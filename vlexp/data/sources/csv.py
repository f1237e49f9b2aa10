"""``data.source.name=csv``: pairs listed in a CSV/TSV/parquet table of image paths."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vlexp.data.readers.csv_reader import CsvPairs, table_columns, table_format
from vlexp.data.records import ClassVocab
from vlexp.data.sources.base import DATASETS, DataSplits
from vlexp.data.sources.common import SplitOptions, capped, held_out_names, need_dir, need_file
from vlexp.data.sources.schema import CSV_SCHEMA

log = logging.getLogger(__name__)


def table_rows(path: Any) -> int | None:
    """Data rows of a ``.csv``/``.tsv`` file (line count minus the header); None otherwise."""
    if not isinstance(path, str) or Path(path).suffix.lower() not in (".csv", ".tsv"):
        return None
    try:
        with open(Path(path).expanduser(), "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            f.seek(max(f.tell() - 1, 0))
            last = f.read(1)
    except OSError:
        return None
    lines += 1 if last not in (b"\n", b"") else 0  # a last row without a newline
    return max(lines - 1, 0)


def _train_size(options: dict[str, Any]) -> int | None:
    """The ``train_size`` hook: the table's rows (an upper bound: files may be missing),
    capped by ``num_train``."""
    rows, cap = table_rows(options.get("path")), options.get("num_train")
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1 else None
    return rows if cap is None or rows is None else min(cap, rows)


def _checks(options: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """The ``checks`` hook: the tables exist and hold the named columns (header only)."""
    out: list[str] = []
    for key in ("path", "val_path", "test_path"):
        value = options.get(key)
        if value is None or value == "???":
            continue
        table = Path(str(value)).expanduser()
        if not table.is_file():
            out.append(f"{key}={value}: no such file; give the pairs table (.csv/.tsv/.parquet)")
            continue
        try:
            cols = table_columns(table, table_format(table, options.get("sep")))
        except Exception as exc:  # not a table at all (a binary, a folder, ...)
            out.append(f"{key}={value}: not a readable table ({str(exc).splitlines()[0]})")
            continue
        for col in ("image_col", "caption_col", "tags_col", "label_col"):
            name = options.get(col)
            if name not in (None, "auto") and name not in cols:
                out.append(
                    f"{col}={name}: {table.name} has no such column (its columns: "
                    f"{', '.join(cols[:12]) or 'none'}); set data.source.{col}=<column>"
                )
    root = options.get("root")
    if root is not None and not Path(str(root)).expanduser().is_dir():
        out.append(f"root={root}: no such folder; give the folder image paths are relative to")
    return out


@DATASETS.register(
    "csv",
    schema=CSV_SCHEMA,
    hooks={"eval_names": held_out_names, "train_size": _train_size, "checks": _checks},
)
def csv_splits(
    path: str | None = None,
    root: str | None = None,
    image_col: str = "filepath",
    caption_col: str = "caption",
    tags_col: str | None = "auto",
    label_col: str | None = "auto",
    sep: str | None = None,
    check_files: bool = True,
    val_path: str | None = None,
    test_path: str | None = None,
    build_train: bool = True,
    **options: Any,
) -> DataSplits:
    """Pairs listed in a CSV/TSV/parquet table of image paths (relative to ``root``, default
    the table's folder) and captions; see the module docstring and ``conf/data/csv.yaml``.

    ``tags_col`` / ``label_col``: a column name, ``"auto"`` (``tags`` / ``label`` when the
    table has such a column) or ``None``. Tags are class names joined by ``;``. Shared
    options (caps, held-out naming, bad-sample policy): :class:`SplitOptions`.
    ``build_train=False`` (evaluation) reads the training table only when the class list
    comes from it (no ``class_names``, no ``classes.json`` beside it).
    """
    opts = SplitOptions.take("csv", csv_splits, options)
    table = (
        need_file(path, "data.source.path", "pairs table (.csv/.tsv/.parquet)")
        if build_train
        else None
    )
    if root is not None:
        need_dir(root, "data.source.root", "image root folder")
    temps = opts.prompt_templates()

    def read(p: Path, vocab: Any) -> CsvPairs:
        cols = table_columns(p, table_format(p, sep))
        return CsvPairs(
            p,
            root=root,
            image_col=image_col,
            caption_col=caption_col,
            tags_col=_auto_col(tags_col, "tags", cols),
            label_col=_auto_col(label_col, "label", cols),
            sep=sep,
            class_names=vocab,
            check_files=check_files,
            max_bad_fraction=opts.max_bad_fraction,
            min_samples=opts.min_samples,
        )

    def held(key: str, value: Any) -> Any:
        if value is None:
            return None
        p = need_file(value, f"data.source.{key}", "held-out pairs table")
        return lambda: read(p, vocab)

    if not build_train:
        vocab = _eval_vocab(path, opts.class_names, lambda t: read(t, None))
        val, test = held("val_path", val_path), held("test_path", test_path)
        return DataSplits(
            None, opts.held_out("val", val, temps), opts.held_out("test", test, temps)
        )
    train = read(table, opts.class_names)
    vocab = train.vocab if train.vocab is not None else opts.class_names
    log.info(
        "data=csv: %d training pairs from %s (tags: %s)",
        len(train),
        table,
        "yes" if train.tag_table is not None else "no",
    )
    return DataSplits(
        train=capped(train, opts.cap("train")),
        val=opts.held_out("val", held("val_path", val_path), temps),
        test=opts.held_out("test", held("test_path", test_path), temps),
    )


def _eval_vocab(path: Any, class_names: Any, read: Any) -> Any:
    """The training table's class list as training resolves it: ``class_names``, else the
    ``classes.json`` beside the table, else the names the table uses (``read(table)``)."""
    if class_names is not None:
        return ClassVocab.resolve(class_names, None)
    beside = ClassVocab.resolve(None, Path(str(path)).expanduser().parent) if path else None
    if beside is not None:
        return beside
    table = need_file(path, "data.source.path", "pairs table (.csv/.tsv/.parquet)")
    return read(table).vocab


def _auto_col(value: str | None, default: str, columns: list[str]) -> str | None:
    if value == "auto":
        return default if default in columns else None
    return value
