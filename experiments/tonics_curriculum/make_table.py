"""Results table of the random-vs-TOnICS sweep, from its jobs' ``metrics.json`` files.

    python experiments/tonics_curriculum/make_table.py multirun/tonics_curriculum \\
        --md experiments/tonics_curriculum/results.md

Reads the sweep with :func:`experiments.collect.collect` (one row per job) and writes,
for the overall test set, the compositional test set and the fine-grained test set, one
row per (sampler, seed), the mean over seeds per sampler, the mean paired difference
(tonics - random, same seed = same data) and the chance level (from the jobs' own
``test_table``). Values are percentages, except the fine-grained mean rank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.collect import collect, job_dirs  # noqa: E402

KS = (1, 5, 10)
RETRIEVAL = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in KS]
SECTIONS: dict[str, tuple[str, list[str]]] = {
    "overall": ("synthetic", RETRIEVAL),
    "compositional": ("compositional", RETRIEVAL),
    "fine-grained": ("finegrained", ["finegrained_acc", "finegrained_rank"]),
}
PERCENT = {m for m in RETRIEVAL} | {"finegrained_acc"}
BASELINE, METHOD = "random", "tonics"


def _keys() -> list[str]:
    return [f"test/{s}/{m}" for s, ms in SECTIONS.values() for m in ms]


def chance_levels(sweep_dir: Path) -> dict[str, float]:
    """``test/<set>/<metric>`` -> chance, from the first finished job's ``test_table``."""
    for job in job_dirs(sweep_dir):
        path = job / "metrics.json"
        if path.is_file():
            rows = json.loads(path.read_text()).get("test_table") or []
            out = {f"test/{r['set']}/{r['metric']}": float(r["chance"]) for r in rows}
            # random scores rank the true caption 1 + k/2 on average (k distractors)
            if "test/finegrained/finegrained_acc" in out:
                k = 1.0 / out["test/finegrained/finegrained_acc"] - 1.0
                out["test/finegrained/finegrained_rank"] = 1.0 + k / 2.0
            return out
    return {}


def _fmt(metric: str, value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{100 * value:.1f}" if metric in PERCENT else f"{value:.2f}"


def _fmt_diff(metric: str, value: float, spread: float) -> str:
    if metric in PERCENT:
        return f"{100 * value:+.1f} ± {100 * spread:.1f}"
    return f"{value:+.2f} ± {spread:.2f}"


def section_table(
    runs: pd.DataFrame, chance: dict[str, float], set_name: str, metrics: list[str]
) -> str:
    """One Markdown table: runs, per-sampler means, paired difference, chance."""
    keys = [f"test/{set_name}/{m}" for m in metrics]
    header = ["sampler", "seed", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in runs.sort_values(["sampler", "seed"]).iterrows():
        cells = [str(row["sampler"]), str(row["seed"])]
        cells += [_fmt(m, row.get(k)) for m, k in zip(metrics, keys)]
        lines.append("| " + " | ".join(cells) + " |")
    for sampler, group in runs.groupby("sampler", sort=True):
        cells = [f"**{sampler}**", f"mean of {len(group)}"]
        cells += [f"**{_fmt(m, group[k].mean())}**" for m, k in zip(metrics, keys)]
        lines.append("| " + " | ".join(cells) + " |")
    paired = runs.pivot_table(index="seed", columns="sampler", values=keys)
    if {BASELINE, METHOD} <= set(runs["sampler"]):
        cells = [f"{METHOD} - {BASELINE}", "paired mean ± sd"]
        for m, k in zip(metrics, keys):
            diff = (paired[(k, METHOD)] - paired[(k, BASELINE)]).dropna()
            sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
            cells.append(_fmt_diff(m, float(diff.mean()), sd) if len(diff) else "")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["chance", ""] + [_fmt(m, chance.get(k)) for m, k in zip(metrics, keys)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_report(sweep_dir: Path) -> str:
    """The Markdown report of a sweep (all sections)."""
    table = collect(sweep_dir, _keys())
    failed = table[table["status"] != "ok"]
    runs = table[table["status"] == "ok"].copy()
    if runs.empty:
        raise RuntimeError(f"no finished job under {sweep_dir}; see the jobs' error.txt")
    chance = chance_levels(sweep_dir)
    out = [
        f"Sweep `{sweep_dir}`: {len(runs)} finished job(s)"
        + (f", {len(failed)} failed" if len(failed) else "")
        + f"; steps per run {sorted(set(runs['global_step']))}, "
        + f"fit seconds {sorted(runs['fit_seconds'])}.",
        "",
        "Values in %, except `finegrained_rank` (mean rank of the true caption among it "
        "and its distractors, 1 = best, lower is better). Same seed = same synthetic "
        "data and initial weights for both samplers.",
    ]
    for title, (set_name, metrics) in SECTIONS.items():
        out += [
            "",
            f"### {title} (test set `{set_name}`)",
            "",
            section_table(runs, chance, set_name, metrics),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the report; ``--md PATH`` also writes it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--md", type=Path, help="also write the Markdown report here")
    args = ap.parse_args(argv)
    text = make_report(args.sweep_dir)
    print(text, end="")
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
