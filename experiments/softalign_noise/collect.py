"""Collect the softalign-vs-clip noise sweep's metrics.json files into a markdown table.

    .venv/bin/python experiments/softalign_noise/collect.py multirun/softalign_noise \
        [--out experiments/softalign_noise/results.md]

Each run directory (``<sweep>/<job>/``) holds ``metrics.json`` (written by vlexp.cli.train) and
``.hydra/config.yaml`` (the composed config: objective, noise level, seed). Metrics are
held-out *test* numbers on the clean test splits, in percent. Tables:

1. mean +- sample std over seeds per (noise, objective), with the number of seeds;
2. softalign minus clip per noise level, paired by seed (same data, same init), with
   every seed's difference listed;
3. every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

METRICS = {  # column -> metrics.json key(s) averaged (test split, clean captions)
    "R@1 (mean i2t/t2i)": ["test/synthetic/i2t_R@1", "test/synthetic/t2i_R@1"],
    "R@5 (mean)": ["test/synthetic/i2t_R@5", "test/synthetic/t2i_R@5"],
    "compositional R@1": ["test/compositional/i2t_R@1", "test/compositional/t2i_R@1"],
    "zero-shot top-1": ["test/synthetic/zeroshot_top1"],
    "fine-grained acc": ["test/finegrained/finegrained_acc"],
}


def load_run(run_dir: Path) -> dict[str, Any] | None:
    """Objective, noise, seed and metrics (percent) of one run; None when unfinished."""
    metrics_path = run_dir / "metrics.json"
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not metrics_path.is_file() or not cfg_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    cfg = yaml.safe_load(cfg_path.read_text())
    row: dict[str, Any] = {
        "run": run_dir.name,
        "objective": metrics["objective"],
        "noise": float(cfg["data"]["source"]["noisy_caption_frac"]),
        "seed": int(metrics["seed"]),
        "steps": int(metrics["global_step"]),
        "fit_s": float(metrics["fit_seconds"]),
    }
    test = metrics.get("test", {})
    for col, keys in METRICS.items():
        vals = [test[k] for k in keys if k in test]
        row[col] = 100.0 * sum(vals) / len(vals) if len(vals) == len(keys) else float("nan")
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished run under ``sweep_dir``, sorted by noise, objective, seed."""
    rows = [r for d in sorted(sweep_dir.iterdir()) if d.is_dir() if (r := load_run(d)) is not None]
    return sorted(rows, key=lambda r: (r["noise"], r["objective"], r["seed"]))


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The three tables (see the module docstring) as markdown."""
    cols = list(METRICS)
    out = [
        "### Mean ± std over seeds (test split, %)",
        "",
        "| noise | objective | seeds | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["noise"], r["objective"])].append(r)
    for (noise, obj), rs in sorted(groups.items()):
        cells = [_mean_std([r[c] for r in rs]) for c in cols]
        out.append(f"| {noise:.0%} | {obj} | {len(rs)} | " + " | ".join(cells) + " |")

    out += [
        "",
        "### softalign − clip, paired by seed (percentage points)",
        "",
        "| noise | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for noise in sorted({r["noise"] for r in rows}):
        clip = {r["seed"]: r for r in groups.get((noise, "clip"), [])}
        soft = {r["seed"]: r for r in groups.get((noise, "softalign"), [])}
        seeds = sorted(clip.keys() & soft.keys())
        if not seeds:
            continue
        cells = []
        for c in cols:
            diffs = [soft[s][c] - clip[s][c] for s in seeds]
            per_seed = ", ".join(f"{d:+.2f}" for d in diffs)
            cells.append(f"{statistics.mean(diffs):+.2f} ({per_seed})")
        out.append(f"| {noise:.0%} | {len(seeds)} | " + " | ".join(cells) + " |")

    out += [
        "",
        "### Every run",
        "",
        "| run | noise | objective | seed | steps | fit s | " + " | ".join(cols) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [f"{r[c]:.2f}" for c in cols]
        out.append(
            f"| {r['run']} | {r['noise']:.0%} | {r['objective']} | {r['seed']} | "
            f"{r['steps']} | {r['fit_s']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown here too")
    args = p.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(
            f"no sweep directory {args.sweep_dir}; run experiments/softalign_noise/run.sh",
            file=sys.stderr,
        )
        return 1
    rows = collect(args.sweep_dir)
    if not rows:
        print(f"no finished runs (metrics.json) under {args.sweep_dir}", file=sys.stderr)
        return 1
    text = markdown(rows)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
