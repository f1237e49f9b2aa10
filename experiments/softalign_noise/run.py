"""SoftAlign vs CLIP under caption noise: train the grid, pair seeds, decide each claim.

    bash experiments/softalign_noise/run.sh [--parallel 2] [--steps 250] [--logger csv]

Rows (all with ``experiment=softalign``: scratch tiny towers, the same data, budget and
seeds): ``clip``; ``softalign`` (the default EMA teacher, its decay set to 0.98 for these
short runs); ``softalign_off`` (the same with ``objective.alpha_max=0``: the distillation
switched off, which must equal CLIP);
``softalign_self`` (the no-added-compute teacher, noisy condition only). Conditions:
40 % of the training captions swapped with another pair's (the property SoftAlign
targets) and 0 % (absent). Every SoftAlign row ramps its weight to the maximum by half
of training (``objective.ramp_end=0.5``), so it stays there for the second half.

Seeds 0-2 run first; a comparison whose mean difference is under 1 point gets seeds 3
and 4 as well. Then ``step_cpu.py`` measures the CPU time per step. Outputs:
``results.md`` and ``paired_differences.png`` next to this file (``--out-dir``); runs
under ``multirun/softalign_noise/`` (``--sweep-dir``), reused when re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from experiments.harness import (  # noqa: E402
    Job,
    Paired,
    job_dir,
    log_images_to_wandb,
    paired,
    paired_table_md,
    plot_paired,
    print_plan,
    run_jobs,
    seeds_needed,
    verdict,
)
from experiments.softalign_noise.analysis import (  # noqa: E402
    R1_KEYS,
    SECONDARY,
    mechanism_summary,
    points,
    read_train_log,
    relative_extra,
)

HERE = Path(__file__).resolve().parent
Results = Mapping[tuple[str, int], Mapping[str, Any]]  # (job key, seed) -> metrics.json content
NOISY, CLEAN = 0.4, 0.0
ALPHA_MAX = 0.5  # conf/objective/softalign.yaml's default, kept
SELF_TEACHER = (
    "objective.teacher=self",
    "objective.use_student_scale=false",
    "objective.teacher_temperature=0.035",
)
COST_TOLERANCE = 5.0  # percent of a CLIP step still counted as "no added compute"

# CPU seconds per job, measured on the 2-core development machine (one torch thread, two
# 150- and 300-step runs of each kind side by side, user + system time): about 23 s of
# start-up and test sets, plus 0.25 s per CLIP-cost step and 0.35 s per step with the EMA
# teacher. The step CPU-time measurement takes about half a minute. Used only for the
# up-front estimate.
CPU_S_PER_STEP = {"clip": 0.25, "softalign": 0.35, "softalign_off": 0.35, "softalign_self": 0.25}
CPU_S_FIXED = 23.0
BENCH_CPU_S = 30.0


@dataclass(frozen=True)
class Row:
    """One table row: its name, label, extra overrides and the noise levels it runs at."""

    name: str
    label: str
    overrides: tuple[str, ...]
    noises: tuple[float, ...]


ROWS = (
    Row("clip", "CLIP", ("objective=clip",), (NOISY, CLEAN)),
    Row("softalign", "SoftAlign (EMA teacher)", (), (NOISY, CLEAN)),
    Row(
        "softalign_off", "SoftAlign, alpha_max=0 (off)", ("objective.alpha_max=0",), (NOISY, CLEAN)
    ),
    Row("softalign_self", "SoftAlign, self teacher", SELF_TEACHER, (NOISY,)),
)
COMPARISONS = {  # method row -> its label in the paired tables (baseline: clip)
    "softalign": "SoftAlign − CLIP",
    "softalign_off": "SoftAlign off − CLIP",
    "softalign_self": "SoftAlign self − CLIP",
}


def key(row: str, noise: float) -> str:
    """Job key (run directory name) of ``row`` at ``noise``."""
    return f"noise{round(100 * noise):02d}_{row}"


def common_overrides(args: argparse.Namespace, noise: float) -> list[str]:
    """Overrides every row shares at ``noise``."""
    return [
        "experiment=softalign",
        "viz.enabled=false",
        f"data.source.noisy_caption_frac={noise}",
        f"data.source.num_train={args.num_train}",
        "data.source.num_val=200",
        f"data.source.num_test={args.num_test}",
        "data.source.num_test_compositional=250",
        "data.batch_size=64",
        "data.eval_batch_size=256",
        "data.num_workers=0",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "optim.warmup_steps=10",
        *args.extra,
    ]


def make_jobs(
    args: argparse.Namespace, rows: Sequence[str], noise: float, seeds: Sequence[int]
) -> list[Job]:
    """Jobs of ``rows`` at ``noise`` for ``seeds``."""
    out = []
    for row in ROWS:
        if row.name not in rows or noise not in row.noises:
            continue
        soft = [f"objective.ramp_end={args.ramp_end}"]
        if row.name in ("softalign", "softalign_off"):
            soft.append(f"objective.ema_decay={args.ema_decay}")
        ov = (
            common_overrides(args, noise)
            + list(row.overrides)
            + ([] if row.name == "clip" else soft)
        )
        out += [Job(key(row.name, noise), ov, s) for s in seeds]
    return out


def estimate(job: Job, steps: int) -> float:
    """Estimated CPU seconds of ``job`` (see ``CPU_S_PER_STEP``)."""
    row = job.key.split("_", 1)[1]
    return CPU_S_FIXED + CPU_S_PER_STEP[row] * steps


def values(results: Results, k: str, keys: Sequence[str] = R1_KEYS) -> dict[int, float]:
    """Seed -> metric (points) of job key ``k``."""
    return {s: points(r, keys) for (kk, s), r in results.items() if kk == k}


def comparisons(
    results: Results, noise: float, keys: Sequence[str] = R1_KEYS
) -> list[tuple[str, str, Paired]]:
    """(method row, label, paired difference to CLIP) at ``noise`` for the rows that ran."""
    base = values(results, key("clip", noise), keys)
    out = []
    for row, label in COMPARISONS.items():
        method = values(results, key(row, noise), keys)
        if method:
            out.append((row, f"noise {noise:.0%}: {label}", paired(method, base)))
    return out


def extra_seeds(
    results: Results, noises: Sequence[float], seeds: int, max_seeds: int
) -> list[tuple[str, float]]:
    """(row, noise) comparisons that need seeds beyond the first ``seeds`` (|mean| < 1 point).

    A comparison whose every paired difference is exactly 0 (the switched-off control,
    which is CLIP bit for bit) is settled: more seeds cannot change it.
    """
    need = []
    for noise in noises:
        for row, _, p in comparisons(results, noise):
            exact = all(d == 0.0 for d in p.diffs)
            if not exact and seeds_needed(p, min_seeds=seeds, max_seeds=max_seeds) > p.n:
                need.append((row, noise))
    return need


def run_benchmark(args: argparse.Namespace, sweep: Path) -> dict[str, Any]:
    """CPU time per step of each variant (``step_cpu.py``, one thread), reused when present."""
    out = sweep / "step_cpu.json"
    if not out.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, str(HERE / "step_cpu.py"), "--json", str(out)]
        cmd += ["--rounds", str(args.bench_rounds)]
        with open(sweep / "step_cpu.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, check=True)
    return json.loads(out.read_text())


def bench_extra(bench: Mapping[str, Any], name: str) -> Paired:
    """Extra CPU time per step of ``name`` over clip, paired by interleaved round (%)."""
    rounds = bench["per_round_cpu_s"]
    return relative_extra(dict(enumerate(rounds[name])), dict(enumerate(rounds["clip"])))


def run_cost(results: Results, noise: float, row: str, field: str) -> Paired:
    """Extra cost (%) of ``row`` over CLIP per seed: ``fit_per_step`` (wall) or ``cpu``."""

    def get(k: str) -> dict[int, float]:
        out = {}
        for (kk, s), r in results.items():
            if kk == k:
                out[s] = (
                    r["fit_seconds"] / r["global_step"]
                    if field == "fit_per_step"
                    else r["cpu_seconds"]
                )
        return out

    return relative_extra(get(key(row, noise)), get(key("clip", noise)))


def contrast_line(p: Paired) -> str:
    """The noise-free contrast: SoftAlign should not help where there is no caption noise."""
    word = {
        "above 0": "SoftAlign helps even without caption noise",
        "below 0": "SoftAlign is worse without caption noise",
        "includes 0": "no difference detected without caption noise",
    }[p.side]
    return (
        f"contrast (property absent): SoftAlign (EMA teacher) − CLIP, R@1 at 0 % noise: "
        f"**{word}** ({p.mean:+.1f} pts, 95 % CI [{p.lo:+.1f}, {p.hi:+.1f}], n={p.n} seeds)"
    )


def cost_verdict(claim: str, p: Paired) -> str:
    """Verdict on "no added compute": extra cost within ``COST_TOLERANCE`` percent."""
    if p.hi < COST_TOLERANCE:
        word = "reproduced at this scale"
    elif p.lo > COST_TOLERANCE:
        word = "not reproduced at this scale (the step costs more)"
    else:
        word = "undecided (the interval straddles the tolerance)"
    return (
        f"{claim}: **{word}** ({p.mean:+.1f} % CPU time per step, 95 % CI [{p.lo:+.1f}, {p.hi:+.1f}], "
        f"n={p.n} interleaved rounds; tolerance +{COST_TOLERANCE:.0f} %)"
    )


def mean_sd(vals: Sequence[float]) -> str:
    """``mean ± sd`` (sd over seeds) with 1 decimal."""
    if len(vals) < 2:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def mechanism_table(args: argparse.Namespace, results: Results) -> str:
    """Per SoftAlign row and noise: share of training at the maximum weight, target entropy."""
    lines = [
        "| noise | row | seeds | share of logged steps at a_max | final a_t | "
        "target entropy at a_max (nats) | largest target entropy (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS[1:]:
        for noise in row.noises:
            k = key(row.name, noise)
            a_max = 0.0 if row.name == "softalign_off" else ALPHA_MAX
            sums = [
                mechanism_summary(
                    read_train_log(job_dir(args.sweep_dir, Job(k, [], s)) / "csv" / "metrics.csv"),
                    a_max,
                )
                for (kk, s) in sorted(results)
                if kk == k
            ]
            if not sums:
                continue

            def avg(name: str, summaries=sums) -> str:
                vals = [d[name] for d in summaries if math.isfinite(d[name])]
                return f"{statistics.mean(vals):.3f}" if vals else "n/a"

            lines.append(
                f"| {noise:.0%} | {row.name} | {len(sums)} | {avg('share_at_max')} | "
                f"{avg('final_alpha')} | {avg('entropy_at_max')} | {avg('max_entropy')} |"
            )
    return "\n".join(lines)


def metrics_table(results: Results) -> str:
    """Mean ± sd over seeds of the test metrics per (noise, row), in points."""
    cols = {"R@1": R1_KEYS, **SECONDARY}
    lines = [
        "| noise | row | seeds | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for noise in (NOISY, CLEAN):
        for row in ROWS:
            k = key(row.name, noise)
            runs = [r for (kk, _), r in sorted(results.items()) if kk == k]
            if not runs:
                continue
            cells = [mean_sd([points(r, keys) for r in runs]) for keys in cols.values()]
            lines.append(f"| {noise:.0%} | {row.label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def secondary_table(results: Results) -> str:
    """Paired differences to CLIP on the secondary metrics: mean [95 % CI] (points)."""
    lines = ["| comparison | " + " | ".join(SECONDARY) + " |", "|---|" + "---|" * len(SECONDARY)]
    for noise in (NOISY, CLEAN):
        per_metric = [comparisons(results, noise, keys) for keys in SECONDARY.values()]
        for i, (_, label, _) in enumerate(per_metric[0]):
            cells = [
                f"{m[i][2].mean:+.1f} [{m[i][2].lo:+.1f}, {m[i][2].hi:+.1f}]" for m in per_metric
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(bench: Mapping[str, Any], results: Results) -> str:
    """Step cost of each SoftAlign variant relative to CLIP, three ways."""
    ms = bench["median_cpu_s"]
    lines = [
        "| measurement | variant | extra cost over CLIP (%) | 95 % CI | n |",
        "|---|---|---|---|---|",
        f"| CPU time per step (median: CLIP {1000 * ms['clip']:.0f} ms) | "
        f"EMA teacher ({1000 * ms['softalign']:.0f} ms) | "
        + _cost_cells(bench_extra(bench, "softalign")),
        f"| CPU time per step | self teacher ({1000 * ms['softalign_self']:.0f} ms) | "
        + _cost_cells(bench_extra(bench, "softalign_self")),
    ]
    for field, what in (
        ("fit_per_step", "runs: fit wall time per step"),
        ("cpu", "runs: CPU time per job"),
    ):
        for row, noise in (("softalign", NOISY), ("softalign", CLEAN), ("softalign_self", NOISY)):
            teacher = "EMA teacher" if row == "softalign" else "self teacher"
            lines.append(
                f"| {what}, noise {noise:.0%} | {teacher} | "
                + _cost_cells(run_cost(results, noise, row, field))
            )
    return "\n".join(lines)


def _cost_cells(p: Paired) -> str:
    return f"{p.mean:+.1f} | [{p.lo:+.1f}, {p.hi:+.1f}] | {p.n} |"


def report(
    args: argparse.Namespace, results: Results, bench: Mapping[str, Any], timing: Mapping[str, Any]
) -> tuple[str, list[tuple[str, Paired]]]:
    """results.md text and the rows of the paired-difference plot."""
    noisy, clean = comparisons(results, NOISY), comparisons(results, CLEAN)
    by = {(row, NOISY): p for row, _, p in noisy} | {(row, CLEAN): p for row, _, p in clean}
    verdicts = [
        verdict(
            "(a) robustness to noisy captions: SoftAlign (EMA teacher) − CLIP, R@1 at 40 % noise",
            by[("softalign", NOISY)],
        ),
        verdict(
            "(a) same, no-added-compute self teacher − CLIP, R@1 at 40 % noise",
            by[("softalign_self", NOISY)],
        ),
        contrast_line(by[("softalign", CLEAN)]),
        cost_verdict(
            "(b) no added compute, EMA teacher (the default)", bench_extra(bench, "softalign")
        ),
        cost_verdict("(b) no added compute, self teacher", bench_extra(bench, "softalign_self")),
    ]
    off = [by[("softalign_off", n)] for n in (NOISY, CLEAN)]
    control = (
        "Control: SoftAlign with `objective.alpha_max=0` − CLIP is "
        + " and ".join(
            f"{p.mean:+.2f} points (per seed: {', '.join(f'{d:+.2f}' for d in p.diffs)})"
            for p in off
        )
        + " at 40 % and 0 % noise."
    )
    harm = paired(values(results, key("clip", NOISY)), values(results, key("clip", CLEAN)))
    hurts = (
        "so the property the method targets is there to act on"
        if harm.side == "below 0"
        else "not a significant loss at this scale"
    )
    control += (
        f" Caption noise costs CLIP {-harm.mean:.1f} points of R@1 (40 % − 0 % noise: "
        f"{harm.mean:+.1f}, 95 % CI [{harm.lo:+.1f}, {harm.hi:+.1f}], n={harm.n} seeds), "
        f"{hurts}."
    )
    plot_rows = [(label, p) for _, label, p in noisy + clean]
    cmd = "bash experiments/softalign_noise/run.sh " + " ".join(timing["argv"])
    text = (
        f"""# SoftAlign vs CLIP under caption noise: results

Written by `{cmd.strip()}` ({timing["finished"]}). {timing["runs"]} training runs, \
{timing["cpu_min"]:.0f} CPU-minutes in the runs, {timing["span_min"]:.0f} minutes of wall \
time from the first run's start to the last run's end ({args.parallel} runs side by side); \
this invocation took {timing["wall_min"]:.0f} minutes (load average \
{timing["load_start"]:.1f} at its start, {timing["load_end"]:.1f} at its end, on \
{os.cpu_count()} cores). Budget per run: {args.steps} steps of batch 64 on \
{args.num_train} training pairs; SoftAlign's weight ramps linearly from 0 to \
a_max = {ALPHA_MAX} by {args.ramp_end:.0%} of training; EMA teacher decay \
{args.ema_decay}. Metrics: clean test split \
({args.num_test} images), points (%). R@1 is the mean of image→text and text→image R@1.

## Verdicts

"""
        + "\n".join(f"- {v}" for v in verdicts)
        + f"""

{control}

## Was the mechanism on?

Logged every 10 steps (`train/softalign_alpha`, `train/target_entropy`); mean over seeds.

{mechanism_table(args, results)}

## Test metrics (mean ± sd over seeds, points)

Rows may hold different seeds (comparisons under 1 point got 5); the paired differences
below compare each row with CLIP on their common seeds.

{metrics_table(results)}

## Paired differences to CLIP, R@1 (points)

{paired_table_md(plot_rows)}

![paired differences](paired_differences.png)

Secondary metrics, paired difference to CLIP: mean [95 % CI] (points):

{secondary_table(results)}

## Cost per step

`step_cpu.py` times one training step of each variant in CPU seconds of its own process \
(one thread, batch 64, {bench["rounds"]} interleaved rounds), which other programs on the \
machine hardly change; the runs' wall time per step depends on whatever else ran, and \
their CPU time per job includes start-up and the test sets.

{cost_table(bench, results)}
"""
    )
    return text, plot_rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the committed results)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=250, help="training steps per run (GPU: raise it)")
    p.add_argument("--num-train", type=int, default=4000, help="training pairs")
    p.add_argument("--num-test", type=int, default=1000, help="test images")
    p.add_argument(
        "--ramp-end", type=float, default=0.5, help="progress at which a_t reaches a_max"
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="first seeds (5 where a difference < 1 point)"
    )
    p.add_argument(
        "--ema-decay", type=float, default=0.98, help="EMA teacher decay (longer runs: 0.995)"
    )
    p.add_argument("--max-seeds", type=int, default=5, help="seeds where a difference < 1 point")
    p.add_argument("--parallel", type=int, default=2, help="runs side by side")
    p.add_argument("--bench-rounds", type=int, default=20, help="rounds of the step CPU timing")
    p.add_argument("--logger", default="csv", choices=("csv", "wandb"))
    p.add_argument("--sweep-dir", type=Path, default=ROOT / "multirun" / "softalign_noise")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where results.md and the plot go")
    p.add_argument("extra", nargs="*", help="more overrides for every run, e.g. trainer=gpu")
    args = p.parse_args(argv)
    args.sweep_dir = args.sweep_dir.resolve()
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def runs_span_s(sweep: Path, results: Results) -> float:
    """Seconds from the first run's start to the last run's end (over every invocation)."""
    starts, ends = [], []
    for k, s in results:
        d = job_dir(sweep, Job(k, [], s))
        wall = json.loads((d / "cpu.json").read_text())["wall_seconds"]
        ends.append((d / "metrics.json").stat().st_mtime)
        starts.append(ends[-1] - wall)
    return max(ends) - min(starts)


def plan(args: argparse.Namespace) -> list[Job]:
    """The first seeds' jobs, after printing their CPU-time estimate (and the worst case)."""
    every = [r.name for r in ROWS]
    first = [j for n in (NOISY, CLEAN) for j in make_jobs(args, every, n, range(args.seeds))]
    first.sort(key=lambda j: j.seed)  # a seed's rows run close together, under similar load
    later = range(args.seeds, args.max_seeds)
    maybe = [
        j for n in (NOISY, CLEAN) for j in make_jobs(args, list(COMPARISONS) + ["clip"], n, later)
    ]
    maybe = [j for j in maybe if not j.key.endswith("_off")]  # the control needs no more seeds
    cost = {j.key: estimate(j, args.steps) for j in first + maybe}
    print_plan("SoftAlign noise experiment", first, cost, args.parallel, BENCH_CPU_S)
    worst = sum(cost[j.key] for j in maybe) / 60
    print(
        f"  then up to {len(maybe)} more runs (about {worst:.0f} CPU-minutes) for "
        "comparisons whose difference is under 1 point",
        flush=True,
    )
    return first


def train_all(args: argparse.Namespace, first: list[Job]) -> dict[tuple[str, int], Any]:
    """Run the first seeds, then seeds up to ``max_seeds`` where a difference is small."""
    results = run_jobs(first, args.sweep_dir, args.parallel, args.logger)
    more: dict[tuple[str, int], Job] = {}
    for row, noise in extra_seeds(results, (NOISY, CLEAN), args.seeds, args.max_seeds):
        print(f"  {row} − clip at noise {noise:.0%} differs by under 1 point: more seeds")
        for j in make_jobs(args, [row, "clip"], noise, range(args.seeds, args.max_seeds)):
            more[(j.key, j.seed)] = j
    if more:
        extra = sorted(more.values(), key=lambda j: j.seed)
        results.update(run_jobs(extra, args.sweep_dir, args.parallel, args.logger))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the experiment and write results.md and the plot."""
    args = parse_args(argv)
    start, load_start = time.time(), os.getloadavg()[0]
    results = train_all(args, plan(args))
    bench = run_benchmark(args, args.sweep_dir)
    timing = {
        "argv": args.argv,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": len(results),
        "cpu_min": sum(r.get("cpu_seconds", 0.0) for r in results.values()) / 60,
        "wall_min": (time.time() - start) / 60,
        "span_min": runs_span_s(args.sweep_dir, results) / 60,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
    }
    text, plot_rows = report(args, results, bench, timing)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.md").write_text(text)
    png = plot_paired(
        plot_rows,
        args.out_dir / "paired_differences.png",
        "SoftAlign − CLIP: R@1 on the clean test split",
        "paired difference (points)",
    )
    if args.logger == "wandb":
        log_images_to_wandb([png], args.sweep_dir, "softalign_noise")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
