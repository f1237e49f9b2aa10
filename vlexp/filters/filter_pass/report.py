"""Per-unit and whole-pass reports of the filtering pass, and their markdown summary.

Every finished unit (a shard, or a chunk of table rows) leaves a :class:`UnitReport`
(``_units/<unit>.json`` in the output folder): what was read, skipped as unreadable,
judged, kept and dropped per criterion, a few examples per criterion, and timings. The
pass report (``report.json``) is the merge of the unit reports *in unit order*, so it is
the same whether the units ran in one process, in a pool, or as separate array jobs;
only its ``timing`` section depends on how the pass was run.

Counts follow the layout of :meth:`vlexp.filters.base.FilterReport.as_dict` (``total``,
``kept``, ``kept_share``, ``dropped``, ``examples``); here an example is a dict with the
sample's id, its caption and, for the CAT filter, the criterion's measurement.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIMING_KEY = "timing"


@dataclass
class UnitReport:
    """What one unit of the pass did.

    ``read`` counts records found in the input (good or not), ``skipped`` the records that
    could not be judged (no caption, missing or broken image, cut shard) per reason,
    ``total`` the pairs the filter judged, ``kept`` those it kept and ``dropped`` those it
    dropped, per criterion. ``ocr_images`` counts images sent to OCR.
    """

    unit: str
    index: int
    read: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    kept_examples: list[dict[str, Any]] = field(default_factory=list)
    ocr_images: int = 0
    outputs: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    seconds: float = 0.0

    def add(
        self,
        ids: Sequence[str],
        captions: Sequence[str],
        keep: np.ndarray,
        reasons: Sequence[str | None],
        details: Sequence[dict[str, Any]],
        max_examples: int,
    ) -> None:
        """Count one judged batch and keep its first examples per criterion."""
        self.total += len(keep)
        self.kept += int(np.sum(keep))
        for i, (k, r) in enumerate(zip(keep, reasons)):
            example = {"id": ids[i], "caption": captions[i], **details[i]}
            if k:
                if len(self.kept_examples) < max_examples:
                    self.kept_examples.append(example)
                continue
            reason = r or "unspecified"
            self.dropped[reason] += 1
            ex = self.examples.setdefault(reason, [])
            if len(ex) < max_examples:
                ex.append(example)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (see :meth:`from_dict`)."""
        return {
            "unit": self.unit,
            "index": self.index,
            "read": self.read,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "examples": self.examples,
            "kept_examples": self.kept_examples,
            "ocr_images": self.ocr_images,
            "outputs": self.outputs,
            "started": self.started,
            "finished": self.finished,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitReport:
        """Inverse of :meth:`as_dict`."""
        return cls(
            unit=d["unit"],
            index=int(d["index"]),
            read=int(d["read"]),
            skipped=Counter(d.get("skipped", {})),
            notes=Counter(d.get("notes", {})),
            total=int(d["total"]),
            kept=int(d["kept"]),
            dropped=Counter(d.get("dropped", {})),
            examples={k: list(v) for k, v in d.get("examples", {}).items()},
            kept_examples=list(d.get("kept_examples", [])),
            ocr_images=int(d.get("ocr_images", 0)),
            outputs=list(d.get("outputs", [])),
            started=float(d.get("started", 0.0)),
            finished=float(d.get("finished", 0.0)),
            seconds=float(d.get("seconds", 0.0)),
        )


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds > 0 else None


def merge_reports(
    units: Sequence[UnitReport], criteria: Sequence[str], max_examples: int
) -> dict[str, Any]:
    """The pass report of ``units`` (merged in their ``index`` order).

    ``criteria`` are listed in ``dropped`` even when they dropped nothing. Everything but
    the ``timing`` section depends only on the unit reports' counts and examples.
    """
    ordered = sorted(units, key=lambda u: u.index)
    skipped: Counter = Counter()
    notes: Counter = Counter()
    dropped: Counter = Counter({c: 0 for c in criteria})
    examples: dict[str, list[dict[str, Any]]] = {c: [] for c in criteria}
    kept_examples: list[dict[str, Any]] = []
    read = total = kept = ocr = 0
    for u in ordered:
        read += u.read
        total += u.total
        kept += u.kept
        ocr += u.ocr_images
        skipped.update(u.skipped)
        notes.update(u.notes)
        dropped.update(u.dropped)
        for reason, ex in u.examples.items():
            mine = examples.setdefault(reason, [])
            mine.extend(ex[: max(0, max_examples - len(mine))])
        kept_examples.extend(u.kept_examples[: max(0, max_examples - len(kept_examples))])
    unit_seconds = sum(u.seconds for u in ordered)
    wall = max(u.finished for u in ordered) - min(u.started for u in ordered) if ordered else 0.0
    return {
        "units": len(ordered),
        "read": read,
        "skipped": dict(sorted(skipped.items())),
        "notes": dict(sorted(notes.items())),
        "total": total,
        "kept": kept,
        "kept_share": kept / total if total else 0.0,
        "dropped": {k: dropped[k] for k in [*criteria, *sorted(set(dropped) - set(criteria))]},
        "ocr_images": ocr,
        "examples": examples,
        "kept_examples": kept_examples,
        TIMING_KEY: {
            "unit_seconds": round(unit_seconds, 3),
            "wall_seconds": round(wall, 3),
            "pairs_per_second": _rate(total, wall),
            "pairs_per_process_second": _rate(total, unit_seconds),
            "ocr_images_per_process_second": _rate(ocr, unit_seconds) if ocr else None,
            "note": "wall: first unit start to last unit end (spans pauses of resumed runs); "
            "per process: divided by the summed unit times of all worker processes",
        },
    }


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    """The report minus what depends on how the pass ran (timing, paths of the run)."""
    return {k: v for k, v in report.items() if k not in (TIMING_KEY, "output_dir", "complete")}


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "-"


def _fmt_detail(ex: dict[str, Any]) -> str:
    parts = []
    for k, v in ex.items():
        if k in ("id", "caption"):
            continue
        if isinstance(v, float):
            if math.isnan(v):
                continue
            v = f"{v:.2f}"
        parts.append(f"{k} {v}")
    return f" ({', '.join(parts)})" if parts else ""


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def to_markdown(report: dict[str, Any]) -> str:
    """A short human summary of a pass report."""
    total, read = report["total"], report["read"]
    lines = [
        "# Filter pass report",
        "",
        f"- input: `{report.get('input', '?')}`",
        f"- filter: `{report.get('filter', {}).get('name', '?')}`; "
        f"units: {report['units']} of {report.get('units_planned', report['units'])}",
        "",
        "| | pairs | share of judged |",
        "|---|---:|---:|",
        f"| records read | {read} | |",
    ]
    for reason, n in report["skipped"].items():
        lines.append(f"| skipped, unreadable: {reason} | {n} | |")
    lines.append(f"| judged | {total} | 100% |")
    lines.append(f"| **kept** | **{report['kept']}** | **{_pct(report['kept'], total)}** |")
    for reason, n in report["dropped"].items():
        lines.append(f"| dropped: {reason} | {n} | {_pct(n, total)} |")
    t = report.get(TIMING_KEY, {})
    lines += [
        "",
        "Dropped pairs are counted under the first criterion they fail.",
        "",
        "## Throughput",
        "",
        f"- {t.get('pairs_per_second')} pairs/s wall-clock "
        f"({t.get('wall_seconds')} s from first unit start to last unit end)",
        f"- {t.get('pairs_per_process_second')} pairs/s per worker process "
        f"({t.get('unit_seconds')} s summed over units)",
    ]
    if report.get("ocr_images"):
        lines.append(
            f"- {report['ocr_images']} images OCR'd: "
            f"{t.get('ocr_images_per_process_second')} images/s per worker process"
        )
    lines += ["", "## Examples", ""]
    for reason, exs in report["examples"].items():
        lines.append(f"### dropped: {reason}")
        lines.append("")
        lines += [f"- `{e['id']}` {_clip(e['caption'])!r}{_fmt_detail(e)}" for e in exs] or [
            "- none"
        ]
        lines.append("")
    lines.append("### kept")
    lines.append("")
    kept = report.get("kept_examples", [])
    lines += [f"- `{e['id']}` {_clip(e['caption'])!r}{_fmt_detail(e)}" for e in kept] or ["- none"]
    return "\n".join(lines) + "\n"
