"""The merge step: one report (and the dataset's index files) from the finished units.

``merge_pass(output_dir)`` reads the unit reports of every unit of the pass, in unit
order, and writes ``report.json`` and ``report.md``. For shards it also writes a
``sizes.json`` per output folder and copies ``classes.json`` from the input folders; for
a table it joins the parts into the output table. It is idempotent: the main job runs it
by itself once every unit is done, and ``python -m vlexp.cli.filter merge output_dir=...``
runs it after the jobs of a SLURM array.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from vlexp.filters.filter_pass.manifest import load_manifest
from vlexp.filters.filter_pass.report import UnitReport, merge_reports, to_markdown
from vlexp.filters.filter_pass.table_unit import empty_table_header, join_parts
from vlexp.filters.filter_pass.units import Unit, report_path
from vlexp.io import file_lock, write_atomic, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MERGE_LOCK = "_merge.lock"


class IncompletePass(RuntimeError):
    """Some units of the pass have no report yet."""


def unit_reports(output_dir: Path, units: list[Unit]) -> tuple[list[UnitReport], list[Unit]]:
    """(reports of finished units, units without a report)."""
    done, missing = [], []
    for u in units:
        p = report_path(output_dir, u)
        if p.is_file():
            done.append(UnitReport.from_dict(json.loads(p.read_text())))
        else:
            missing.append(u)
    return done, missing


def _ranges(units: list[Unit]) -> str:
    """Compact ``START:END`` ranges of unit indices, e.g. ``3:5, 9:10``."""
    idx = sorted(u.index for u in units)
    out, start = [], None
    for a, b in zip(idx, idx[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start}:{a + 1}")
            start = None
    return ", ".join(out)


def _write_shard_index_files(
    output_dir: Path, units: list[Unit], reports: list[UnitReport]
) -> None:
    kept = {r.unit: r.kept for r in reports}
    by_dir: dict[Path, dict[str, int]] = {}
    for u in units:
        dst = output_dir / u.rel
        by_dir.setdefault(dst.parent, {})[dst.name] = kept[u.name]
    for d, sizes in by_dir.items():
        write_json_atomic(d / "sizes.json", sizes)
    for u in units:
        src_classes = Path(u.source).parent / "classes.json"
        dst_classes = (output_dir / u.rel).parent / "classes.json"
        if src_classes.is_file() and not dst_classes.is_file():
            write_atomic(dst_classes, lambda p, s=src_classes: shutil.copyfile(s, p))


def merge_pass(output_dir: str | os.PathLike, allow_partial: bool = False) -> dict[str, Any]:
    """Merge the unit reports of ``output_dir`` into ``report.json``/``report.md``.

    Raises :class:`IncompletePass` naming the missing unit ranges unless ``allow_partial``
    (then only the report is written, marked ``"complete": false``).
    """
    out = Path(output_dir)
    with file_lock(out / MERGE_LOCK):  # array jobs that finish together may both merge
        return _merge(out, allow_partial)


def _merge(out: Path, allow_partial: bool) -> dict[str, Any]:
    manifest = load_manifest(out)
    units = [Unit.from_dict(d) for d in manifest["units"]]
    reports, missing = unit_reports(out, units)
    if missing and not allow_partial:
        raise IncompletePass(
            f"{len(missing)} of {len(units)} units of {out} have not finished (unit ranges "
            f"{_ranges(missing)[:300]}). Run them (e.g. shard_range=START:END with the same "
            "input and settings), or merge with allow_partial=true for a partial report."
        )
    settings = manifest["settings"]
    report = {
        "input": manifest["input"],
        "kind": manifest["kind"],
        "filter": settings["filter"],
        "units_planned": len(units),
        **merge_reports(reports, manifest["criteria"], int(settings["max_examples"])),
        "complete": not missing,
        "output_dir": str(out.resolve()),
    }
    if not missing:
        if manifest["kind"] == "webdataset":
            _write_shard_index_files(out, units, reports)
        else:
            table = manifest["table"]
            path, fmt = Path(table["path"]), table["fmt"]
            header = None if fmt == "parquet" else empty_table_header(path, fmt)
            join_parts(out, path, units, fmt, header, table["suffix"])
            classes = path.parent / "classes.json"
            if classes.is_file() and not (out / "classes.json").is_file():
                write_atomic(out / "classes.json", lambda p: shutil.copyfile(classes, p))
    write_json_atomic(out / REPORT_JSON, report)
    write_text_atomic(out / REPORT_MD, to_markdown(report))
    log.info(
        "filter pass report: kept %d of %d judged pairs (%s); %s",
        report["kept"],
        report["total"],
        report["dropped"],
        out / REPORT_MD,
    )
    return report
