"""Results table and few-shot plot of the DiHT ablation, from its jobs' output files.

    python experiments/diht_ablation/make_table.py multirun/diht_ablation \\
        --md experiments/diht_ablation/results.md --plot experiments/diht_ablation/fewshot.png

Reads ``SWEEP/<row>/seed<k>/metrics.json`` of every row of ``ablation.ROW_NAMES`` and
``SWEEP/fewshot/fewshot.json`` (written by ``python -m vlexp.cli.fewshot``), and writes:

- held-out retrieval (R@1 / R@5 both directions) on the synthetic test set and on the
  compositional test set, and zero-shot top-1 on the synthetic test set, one row per
  ablation row (mean over seeds when there are several, each seed's value in
  parentheses); every value is a percentage copied from the jobs' ``metrics.json``;
- the paired difference of every row to the CLIP row of the same seed (the seed fixes
  the data, the initialisation and the test images, so the pair shares its test set);
- the few-shot table (test top-1 of the zero-shot-initialised and the scratch probe,
  mean +- std over the probe's shot-sampling seeds) and its plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.diht_ablation.ablation import ROW_LABELS, ROW_NAMES  # noqa: E402

RETRIEVAL = ("i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5")
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Held-out test set (`synthetic`, clean captions)", "synthetic", (*RETRIEVAL, "zeroshot_top1")),
    ("Compositional test set (`compositional`)", "compositional", RETRIEVAL),
)


def load_runs(sweep: Path) -> dict[str, list[dict[str, Any]]]:
    """``row -> [metrics.json of each finished seed]`` (seed order), rows in ablation order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in ROW_NAMES:
        files = sorted(
            (sweep / row).glob("seed*/metrics.json"),
            key=lambda p: int(p.parent.name[len("seed") :]),
        )
        runs[row] = [json.loads(f.read_text()) for f in files]
    if not any(runs.values()):
        raise FileNotFoundError(
            f"no SWEEP/<row>/seed<k>/metrics.json under {sweep}; run "
            "experiments/diht_ablation/run.sh first"
        )
    return runs


def _cell(values: list[float], signed: bool = False) -> str:
    """Mean of ``values`` in %, then each value in parentheses (with signs for differences)."""
    if not values:
        return "n/a"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    mean = fmt.format(100 * sum(values) / len(values))
    if len(values) == 1:
        return mean
    return mean + " (" + " / ".join(fmt.format(100 * v) for v in values) + ")"


def paired_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Each row minus the CLIP row of the same seed, per metric (points)."""
    clip = {m["seed"]: m["test"] for m in runs.get("clip", [])}
    if not clip:
        return ""
    cols = [(s, k) for _, s, ms in SECTIONS for k in ms]
    head = ["row", "seeds", *[f"{'comp. ' if s == 'compositional' else ''}{k}" for s, k in cols]]
    out = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols)]
    for row in ROW_NAMES:
        if row == "clip":
            continue
        pairs = [(m["test"], clip[m["seed"]]) for m in runs[row] if m["seed"] in clip]
        seeds = [str(m["seed"]) for m in runs[row] if m["seed"] in clip]
        cells = [ROW_LABELS[row], ",".join(seeds) or "-"]
        for s, k in cols:
            key = f"test/{s}/{k}"
            diffs = [a[key] - b[key] for a, b in pairs if key in a and key in b]
            cells.append(_cell(diffs, signed=True))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _chance(runs: dict[str, list[dict[str, Any]]], test_set: str, metric: str) -> float | None:
    for ms in runs.values():
        for m in ms:
            for r in m.get("test_table") or []:
                if r.get("set") == test_set and r.get("metric") == metric:
                    return float(r["chance"])
    return None


def results_tables(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown tables of the ablation rows (see the module docstring)."""
    out: list[str] = []
    for title, test_set, metrics in SECTIONS:
        out += [f"### {title}", ""]
        head = ["row", "seeds", *metrics]
        if test_set == "synthetic":
            head += ["train pairs kept", "fit s"]
        out += ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
        for row in ROW_NAMES:
            ms = runs[row]
            cells = [ROW_LABELS[row], ",".join(str(m["seed"]) for m in ms) or "-"]
            for metric in metrics:
                vals = [
                    m["test"][f"test/{test_set}/{metric}"]
                    for m in ms
                    if f"test/{test_set}/{metric}" in m.get("test", {})
                ]
                cells.append(_cell(vals))
            if test_set == "synthetic":
                kept = [(m.get("filter_report") or {}).get("kept") for m in ms]
                total = [(m.get("filter_report") or {}).get("total") for m in ms]
                if ms and kept[0] is not None:
                    cells.append(" / ".join(str(k) for k in kept) + f" of {total[0]}")
                else:
                    cells.append("all")
                secs = [m.get("fit_seconds") for m in ms if m.get("fit_seconds") is not None]
                cells.append(f"{sum(secs) / len(secs):.0f}" if secs else "n/a")
            out.append("| " + " | ".join(cells) + " |")
        chance = [
            f"{metric} {100 * c:.2f}"
            for metric in metrics
            if (c := _chance(runs, test_set, metric)) is not None
        ]
        out += ["", "Chance (%): " + ", ".join(chance) + ".", ""]
    out += [
        "Cells: mean over seeds, each seed's value in parentheses (seed order).",
        "",
    ]
    paired = paired_table(runs)
    if paired:
        out += [
            "### Difference to CLIP, same seed (points)",
            "",
            "Each cell: row minus the CLIP row of the same seed (same training data before",
            "filtering, same initialisation, same test images); mean, then per seed.",
            "",
            paired,
            "",
        ]
    return "\n".join(out)


def noise_table(
    main: dict[str, list[dict[str, Any]]], noise: dict[str, list[dict[str, Any]]]
) -> str:
    """The CLIP row's metrics for each seed of the main sweep and of the noise probe.

    The seed changes the training data, the model's initialisation and the test images,
    so the spread is the run-to-run variation of one row's numbers.
    """
    runs = sorted(main.get("clip", []) + noise.get("clip", []), key=lambda m: m["seed"])
    if len(runs) < 2:
        return ""
    cols = [(s, m) for _, s, ms in SECTIONS for m in ms]
    head = ["CLIP seed", *[f"{'comp. ' if s == 'compositional' else ''}{m}" for s, m in cols]]
    lines = ["| " + " | ".join(head) + " |", "|---:|" + "---:|" * len(cols)]
    for m in runs:
        cells = [str(m["seed"])] + [f"{100 * m['test'][f'test/{s}/{k}']:.1f}" for s, k in cols]
        lines.append("| " + " | ".join(cells) + " |")
    spread = [
        max(m["test"][f"test/{s}/{k}"] for m in runs)
        - min(m["test"][f"test/{s}/{k}"] for m in runs)
        for s, k in cols
    ]
    lines.append("| max - min | " + " | ".join(f"{100 * d:.1f}" for d in spread) + " |")
    return "\n".join(lines)


def fewshot_table(res: dict[str, Any]) -> str:
    """Markdown table of a ``python -m vlexp.cli.fewshot`` result."""
    lines = [
        f"Probe shots from `{res.get('pool_set')}` (pool {res.get('pool_size')} images, radii/l2 "
        f"chosen on {res.get('heldout_size')} others), accuracy on `{res.get('test_set')}` "
        f"({res.get('test_size')} images, {res.get('num_classes')} classes), mean +- std over "
        f"shot-sampling seeds {res.get('seeds')}. Checkpoint: `{res.get('ckpt')}`.",
        "",
        "| shots per class k | zero-shot init (%) | from scratch (%) | difference (points) |",
        "|---:|---:|---:|---:|",
    ]
    for i, k in enumerate(res["ks"]):
        zm, zs = res["zeroshot_init"]["mean"][i], res["zeroshot_init"]["std"][i]
        sm, ss = res["scratch"]["mean"][i], res["scratch"]["std"][i]
        scr = "n/a" if not math.isfinite(sm) else f"{100 * sm:.1f} +- {100 * ss:.1f}"
        diff = "n/a" if not math.isfinite(sm) else f"{100 * (zm - sm):+.1f}"
        lines.append(f"| {k} | {100 * zm:.1f} +- {100 * zs:.1f} | {scr} | {diff} |")
    lines += [
        "",
        f"Zero-shot accuracy: {100 * res['zeroshot']:.1f} %; chance "
        f"{100 / res['num_classes']:.1f} %.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="DiHT ablation: results table and plot.")
    parser.add_argument("sweep", help="the sweep directory given to run.sh")
    parser.add_argument("--md", default=None, help="write the Markdown tables here")
    parser.add_argument("--plot", default=None, help="write the few-shot plot (PNG) here")
    parser.add_argument("--fewshot", default=None, help="default: SWEEP/fewshot/fewshot.json")
    args = parser.parse_args(argv)
    sweep = Path(args.sweep)
    runs = load_runs(sweep)
    text = "## Ablation\n\n" + results_tables(runs)
    noise_dir = sweep / "noise"
    if noise_dir.is_dir() and any(noise_dir.glob("*/seed*/metrics.json")):
        table = noise_table(runs, load_runs(noise_dir))
        if table:
            text += (
                "\n### Seed-to-seed spread (CLIP row, other seeds in SWEEP/noise)\n\n"
                + table
                + "\n"
            )
    fs_path = Path(args.fewshot) if args.fewshot else sweep / "fewshot" / "fewshot.json"
    if fs_path.is_file():
        res = json.loads(fs_path.read_text())
        text += "\n## Few-shot linear probe (`all` run)\n\n" + fewshot_table(res) + "\n"
        if args.plot:
            from vlexp.eval.fewshot import plot_fewshot_curve

            plot_fewshot_curve(
                res,
                args.plot,
                title="few-shot probe, DiHT ablation 'all' run (synthetic test)",
            )
    else:
        print(f"no few-shot result at {fs_path}; table only", file=sys.stderr)
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
