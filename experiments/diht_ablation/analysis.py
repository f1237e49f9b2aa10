"""Numbers, tables and plots of the DiHT ablation from its jobs' results.

Pure functions over ``{(row, seed): metrics.json content}`` (what
``experiments.harness.run_jobs`` returns) and the few-shot probe results, so that the
arithmetic can be tested without training anything. Values in ``metrics.json`` are
fractions; everything here is in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.diht_ablation.ablation import ROWS, Comparison
from experiments.harness import Paired, paired, seeds_needed, verdict

Results = Mapping[tuple[str, int], Mapping[str, Any]]
Metric = Callable[[Mapping[str, Any]], float]


def _test(result: Mapping[str, Any], key: str) -> float:
    tests = result.get("test") or {}
    if key not in tests:
        raise KeyError(f"metric {key!r} missing from a job's test metrics")
    return 100.0 * float(tests[key])


def r1_mean(result: Mapping[str, Any], test_set: str = "synthetic") -> float:
    """Mean of image-to-text and text-to-image R@1 on ``test_set``, in points."""
    return 0.5 * (
        _test(result, f"test/{test_set}/i2t_R@1") + _test(result, f"test/{test_set}/t2i_R@1")
    )


PRIMARY = ("R@1 mean, synthetic test", r1_mean)
"""The metric every verdict is decided on: held-out retrieval, clean captions."""

SECONDARY: tuple[tuple[str, Metric], ...] = (
    ("R@1 mean, compositional", lambda r: r1_mean(r, "compositional")),
    ("zero-shot top-1, single", lambda r: _test(r, "test/single/zeroshot_top1")),
    ("fine-grained acc.", lambda r: _test(r, "test/finegrained/finegrained_acc")),
)
"""Reported next to the primary metric (not used for verdicts)."""


def per_seed(results: Results, row: str, metric: Metric) -> dict[int, float]:
    """``{seed: metric}`` of every finished job of ``row``."""
    return {seed: metric(res) for (r, seed), res in results.items() if r == row}


def compare(results: Results, comp: Comparison, metric: Metric = r1_mean) -> Paired:
    """Paired ``method - baseline`` of ``comp`` over the seeds both rows have."""
    return paired(per_seed(results, comp.method, metric), per_seed(results, comp.baseline, metric))


def rows_to_extend(results: Results, comps: Sequence[Comparison], max_seeds: int = 5) -> set[str]:
    """Rows of the comparisons that need more seeds (``seeds_needed``: |mean| < 1 point)."""
    out: set[str] = set()
    for c in comps:
        p = compare(results, c)
        if p.n < seeds_needed(p, max_seeds=max_seeds):
            out |= {c.method, c.baseline}
    return out


# --------------------------------------------------------------------------- few-shot
SMALL_KS: tuple[int, ...] = (1, 2, 4)
"""The shots per class counted as "small k" in the few-shot verdict."""


def fewshot_means(res: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """Per probe (``zeroshot_init``, ``scratch``), ``{k: accuracy in points}``: the mean
    over the probe's shot-sampling seeds of one ``vlexp fewshot`` result."""
    out: dict[str, dict[int, float]] = {}
    for probe in ("zeroshot_init", "scratch"):
        rows = res[probe]["per_seed"]
        out[probe] = {}
        for k, vals in zip(res["ks"], rows, strict=True):
            finite = [float(v) for v in vals if math.isfinite(float(v))]
            out[probe][int(k)] = 100.0 * sum(finite) / len(finite) if finite else math.nan
    return out


def fewshot_paired(fs: Mapping[int, Mapping[str, Any]], ks: Sequence[int]) -> Paired:
    """Zero-shot-init minus scratch probe, mean over ``ks``, paired over training seeds.

    ``fs`` maps a training seed to its ``vlexp fewshot`` result; within a training seed
    the probe's shot-sampling seeds are averaged first.
    """
    init: dict[int, float] = {}
    scratch: dict[int, float] = {}
    for seed, res in fs.items():
        m = fewshot_means(res)
        init[seed] = sum(m["zeroshot_init"][k] for k in ks) / len(ks)
        scratch[seed] = sum(m["scratch"][k] for k in ks) / len(ks)
    return paired(init, scratch)


def fewshot_table(fs: Mapping[int, Mapping[str, Any]], ks: Sequence[int]) -> str:
    """Markdown: per k, both probes' accuracy (mean over training seeds) and the paired
    difference with its 95 % interval."""
    lines = [
        "| shots per class k | zero-shot init (%) | from scratch (%) | init - scratch (pts) "
        "| 95 % CI | seeds |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    means = {s: fewshot_means(r) for s, r in fs.items()}
    for k in ks:
        init = {s: m["zeroshot_init"][k] for s, m in means.items()}
        scr = {s: m["scratch"][k] for s, m in means.items()}
        i_mean = sum(init.values()) / len(init)
        if not all(math.isfinite(v) for v in scr.values()):  # k = 0: no scratch probe
            lines.append(f"| {k} | {i_mean:.1f} | n/a | n/a | | {len(init)} |")
            continue
        p = paired(init, scr)
        lines.append(
            f"| {k} | {i_mean:.1f} | {sum(scr.values()) / len(scr):.1f} | {p.mean:+.1f} "
            f"| [{p.lo:+.1f}, {p.hi:+.1f}] | {p.n} |"
        )
    return "\n".join(lines)


def plot_fewshot(
    fs: Mapping[int, Mapping[str, Any]], ks: Sequence[int], path: str | Path, title: str
) -> Path:
    """Two panels: both probes' accuracy vs k (mean over training seeds, 95 % interval
    of the mean) and the paired difference init - scratch with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.harness import t_quantile

    means = {s: fewshot_means(r) for s, r in fs.items()}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))

    def band(vals: list[float]) -> tuple[float, float]:
        n = len(vals)
        mu = sum(vals) / n
        if n < 2:
            return mu, 0.0
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1))
        return mu, t_quantile(n - 1) * sd / math.sqrt(n)

    for probe, label in (("zeroshot_init", "zero-shot init"), ("scratch", "from scratch")):
        xs, ys, es = [], [], []
        for k in ks:
            vals = [m[probe][k] for m in means.values()]
            if all(math.isfinite(v) for v in vals):
                mu, half = band(vals)
                xs.append(k)
                ys.append(mu)
                es.append(half)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    chance = 100.0 / next(iter(fs.values()))["num_classes"]
    ax.axhline(chance, ls=":", c="gray", lw=1, label="chance")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(list(ks))
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("shots per class k")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(fontsize=8)
    ax.set_title("probe accuracy (bars: 95 % CI over seeds)", fontsize=9)
    dks = [k for k in ks if k > 0]
    ps = [fewshot_paired(fs, [k]) for k in dks]
    bx.errorbar(
        dks,
        [p.mean for p in ps],
        yerr=[[p.mean - p.lo for p in ps], [p.hi - p.mean for p in ps]],
        marker="o",
        capsize=3,
        color="C2",
    )
    bx.axhline(0.0, c="k", lw=0.8)
    bx.set_xscale("log", base=2)
    bx.set_xticks(dks)
    bx.set_xticklabels([str(k) for k in dks])
    bx.set_xlabel("shots per class k")
    bx.set_ylabel("init - scratch (points)")
    bx.set_title("paired difference per training seed, 95 % CI", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- tables
def _mean_sd(vals: Sequence[float]) -> str:
    n = len(vals)
    mu = sum(vals) / n
    if n < 2:
        return f"{mu:.1f}"
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1))
    return f"{mu:.1f} ± {sd:.1f}"


def rows_table(results: Results, rows: Sequence[str]) -> str:
    """Markdown: per row, mean ± sd over seeds of each metric, pairs kept and CPU time."""
    metrics = [PRIMARY, *SECONDARY]
    head = ["row", "data", "seeds", *[name for name, _ in metrics], "train pairs kept", "CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for row in rows:
        jobs = sorted((s, r) for (k, s), r in results.items() if k == row)
        if not jobs:
            continue
        cells = [ROWS[row].label, ROWS[row].condition, ",".join(str(s) for s, _ in jobs)]
        cells += [_mean_sd([fn(r) for _, r in jobs]) for _, fn in metrics]
        kept = [(r.get("filter_report") or {}).get("kept") for _, r in jobs]
        total = [(r.get("filter_report") or {}).get("total") for _, r in jobs]
        cells.append(f"{sum(kept) / len(kept):.0f} of {total[0]}" if None not in kept else "all")
        cpu = [r["cpu_seconds"] for _, r in jobs if "cpu_seconds" in r]
        cells.append(f"{sum(cpu) / len(cpu):.0f}" if cpu else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dropped_table(results: Results, rows: Sequence[str]) -> str:
    """Markdown: per filtered row, pairs dropped per CAT criterion (mean over seeds)."""
    lines = [
        "| row | kept | dropped: complexity | dropped: action | dropped: text_spotting |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        reps = [r.get("filter_report") or {} for (k, _), r in sorted(results.items()) if k == row]
        if not reps or not any(rep.get("dropped") for rep in reps):
            continue

        def avg(get: Callable[[dict[str, Any]], float], reps: list[dict] = reps) -> str:
            return f"{sum(get(rep) for rep in reps) / len(reps):.0f}"

        cells = [ROWS[row].label, avg(lambda rep: rep.get("kept", 0))]
        for reason in ("complexity", "action", "text_spotting"):
            cells.append(avg(lambda rep, c=reason: (rep.get("dropped") or {}).get(c, 0)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def secondary_paired_table(results: Results, comps: Sequence[Comparison]) -> str:
    """Markdown: each comparison's paired mean difference on the secondary metrics."""
    head = ["comparison", *[name for name, _ in SECONDARY]]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(SECONDARY)]
    for c in comps:
        cells = [c.label]
        for _, fn in SECONDARY:
            p = compare(results, c, fn)
            ci = f" [{p.lo:+.1f}, {p.hi:+.1f}]" if math.isfinite(p.lo) else ""
            cells.append(f"{p.mean:+.1f}{ci}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_lines(
    results: Results,
    comps: Sequence[Comparison],
    fewshot: Mapping[int, Mapping[str, Any]] | None,
    small_ks: Sequence[int] = SMALL_KS,
) -> list[str]:
    """One verdict line per abstract claim (the comparisons that carry a ``claim``, then
    the few-shot claim, averaged over ``small_ks``) with the interval that decides it."""
    lines = [
        "- " + verdict(c.claim, compare(results, c)) + f"; metric: {PRIMARY[0]}"
        for c in comps
        if c.claim
    ]
    if fewshot:
        ks = ", ".join(str(k) for k in small_ks)
        lines.append(
            "- "
            + verdict(
                "(4) a zero-shot-initialised few-shot probe beats a probe from scratch at small k",
                fewshot_paired(fewshot, small_ks),
            )
            + f"; metric: top-1 on the `single` test set, mean over k = {ks}"
        )
    return lines
