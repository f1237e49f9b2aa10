"""Collect a sweep's ``metrics.json`` files into one comparison table (Markdown and CSV).

    python experiments/collect.py multirun/train/2026-01-01_12-00-00
    python experiments/collect.py multirun/train/... --csv table.csv --md table.md \\
        --metrics test/synthetic/i2t_R@1 test/synthetic/t2i_R@1

Every directory below the sweep directory holding ``metrics.json`` (a finished job) or
``error.txt`` (a failed one) becomes a row. Columns: the job directory, the overrides
that differ between jobs (read from ``.hydra/overrides.yaml``), status, steps, fit time,
the monitored value, and test metrics (by default R@1/R@5 both ways and zero-shot top-1
of every test set). Rows are sorted by the monitored value, best first.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DEFAULT_METRIC_PATTERN = re.compile(r"^test/[^/]+/(i2t_R@1|t2i_R@1|i2t_R@5|t2i_R@5|zeroshot_top1)$")


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under ``sweep_dir`` that hold a job's ``metrics.json`` or ``error.txt``."""
    found = {p.parent for name in ("metrics.json", "error.txt") for p in sweep_dir.rglob(name)}
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in p.parts])


def collect(sweep_dir: str | Path, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per job of the sweep (see the module docstring for the columns)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    rows: list[dict[str, Any]] = []
    overrides: list[dict[str, str]] = []
    for job in job_dirs(sweep_dir):
        ov = _overrides(job)
        overrides.append(ov)
        row: dict[str, Any] = {"job": str(job.relative_to(sweep_dir)) or "."}
        mfile = job / "metrics.json"
        if mfile.is_file():
            m = json.loads(mfile.read_text())
            row.update(
                status="ok",
                objective=m.get("objective"),
                sampler=m.get("sampler"),
                filter=m.get("filter"),
                seed=m.get("seed"),
                global_step=m.get("global_step"),
                fit_seconds=m.get("fit_seconds"),
                monitor=m.get("monitor"),
                monitor_value=m.get("monitor_value"),
            )
            tests = m.get("test") or {}
            keys = metrics if metrics else [k for k in tests if DEFAULT_METRIC_PATTERN.match(k)]
            for k in keys:
                row[k] = tests.get(k, (m.get("val") or {}).get(k))
        else:
            err = (job / "error.txt").read_text().strip().splitlines()
            row.update(status="failed", error=err[-1][:120] if err else "")
        rows.append(row)
    if not rows:
        raise FileNotFoundError(
            f"no metrics.json or error.txt under {sweep_dir}; is it a sweep directory "
            "(multirun/<task>/<time>) of finished jobs?"
        )
    table = pd.DataFrame(rows)
    varied = sorted(
        {k for ov in overrides for k in ov if len({ov2.get(k) for ov2 in overrides}) > 1}
    )
    for key in reversed(varied):
        if key not in table.columns:  # objective/sampler/filter/seed come from metrics.json
            table.insert(1, key, [ov.get(key) for ov in overrides])
    if "monitor_value" in table:
        table = table.sort_values(
            "monitor_value", ascending=False, na_position="last", kind="stable"
        )
    return table.reset_index(drop=True)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in table.columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/<task>/<time>)")
    ap.add_argument("--csv", type=Path, help="also write the table as CSV here")
    ap.add_argument("--md", type=Path, help="also write the Markdown table here")
    ap.add_argument(
        "--metrics", nargs="+", help="metric keys to show (default: test R@1/R@5, zero-shot)"
    )
    args = ap.parse_args(argv)
    table = collect(args.sweep_dir, args.metrics)
    text = to_markdown(table)
    print(text)
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.md:
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
