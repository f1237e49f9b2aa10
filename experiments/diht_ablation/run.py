"""The DiHT ablation, end to end: one command, resumable.

    python experiments/diht_ablation/run.py [--sweep-dir multirun/diht_ablation]
        [--steps 300] [--num-train 4000] [--parallel 2] [--logger csv|wandb] [--detailed]

Steps (finished outputs under the sweep directory are reused):

1. the synthetic concept teacher (a small CNN on the generator's object classes, trained
   on the seed-100 train split, so its images are none of the rows' seeds 0-4) and the
   CAT check (what each criterion keeps on the seed-0 training split, ``cat_check.py``),
   side by side;
2. every row of ``ablation.main_rows`` with seeds 0, 1, 2 (``experiments.harness``);
3. seeds 3 and 4 for both rows of every comparison whose mean paired difference is
   under 1 point;
4. the few-shot probes (zero-shot-initialised vs from scratch, ``protocol=kshot``) on
   the ``all`` run of every seed, seeds 3 and 4 added when that difference is under
   1 point at small k;
5. ``results.md``, ``paired.png`` and ``fewshot.png`` next to this file (and the plots
   logged to wandb with ``--logger wandb``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.diht_ablation import analysis  # noqa: E402
from experiments.diht_ablation.ablation import (  # noqa: E402
    DEFAULT_NUM_TRAIN,
    DEFAULT_STEPS,
    ROWS,
    budget,
    comparisons_for,
    main_rows,
    row_overrides,
)
from experiments.harness import (  # noqa: E402
    Job,
    log_images_to_wandb,
    paired_table_md,
    plot_paired,
    print_plan,
    run_jobs,
    seeds_needed,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIRST_SEEDS = (0, 1, 2)
EXTRA_SEEDS = (3, 4)
TEACHER_SEED = 100
FEWSHOT_KS = (0, 1, 2, 4, 8, 16)
FEWSHOT_POOL_VAL = 1200  # validation pairs the shots are drawn from (~100 per class)
SHOT_SEEDS = (0, 1)  # shot-sampling seeds per training seed (averaged)
SINGLE_TEST_SET = 3  # test sets: synthetic, compositional, finegrained, single

# CPU-second estimates, measured on the 2-core development machine (one torch thread
# per run, under load from other jobs): a CLIP run of 300 steps took 103 CPU-s, a CAT
# run of 200 steps that OCR'd 1354 images 97 CPU-s, a text-spotting-only run (2000
# images OCR'd) 100 CPU-s; the teacher 15 CPU-s per epoch of 10,000 images; a few-shot
# probe 35 s per shot seed (all k).
CPU_START, CPU_PER_STEP, CPU_PER_OCR, CPU_PER_PARSE = 16.0, 0.29, 0.014, 0.002
OCR_SHARE = {"cat": 0.68, "cat_text": 1.0, "all": 0.68, "cat_clean": 0.98}
PARSED = {"cat", "cat_complexity", "cat_action", "all", "cat_clean"}
TEACHER_EPOCHS = 4
CPU_TEACHER, CPU_CAT_CHECK_PER_PAIR = 15.0 * TEACHER_EPOCHS, 0.02
CPU_FEWSHOT = 35.0 * len(SHOT_SEEDS)


def job_cpu_estimate(row: str, steps: int, num_train: int) -> float:
    """Estimated CPU seconds of one training job of ``row`` (see the constants above)."""
    cpu = CPU_START + CPU_PER_STEP * steps
    cpu += CPU_PER_OCR * OCR_SHARE.get(row, 0.0) * num_train
    cpu += CPU_PER_PARSE * num_train * (row in PARSED)
    return cpu


def make_jobs(
    rows: list[str], seeds: tuple[int, ...], teacher: str, steps: int, num_train: int
) -> list[Job]:
    """One harness job per (row, seed)."""
    return [
        Job(row, [*row_overrides(row, teacher), *budget(steps, num_train)], seed)
        for seed in seeds
        for row in rows
    ]


def run_logged(cmd: list[str], log: Path, cpu_file: Path) -> float:
    """Run ``cmd`` (from the repository root, one torch thread) with its output in
    ``log``; record and return its CPU seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed; see {log}")
    cpu = usage.ru_utime + usage.ru_stime
    cpu_file.write_text(json.dumps({"cpu_seconds": cpu, "wall_seconds": time.time() - start}))
    return cpu


def _recorded_cpu(cpu_file: Path) -> float:
    return float(json.loads(cpu_file.read_text())["cpu_seconds"]) if cpu_file.is_file() else 0.0


def teacher_step(sweep: Path) -> Path:
    """Train the synthetic teacher once (seed-100 data); return its file."""
    out = sweep / "teacher" / f"synthetic_seed{TEACHER_SEED}.pt"
    if not out.is_file():
        cmd = [
            sys.executable, "-m", "vlexp.cli.teacher", "action=train-synthetic", f"out={out}",
            f"seed={TEACHER_SEED}", f"epochs={TEACHER_EPOCHS}", "max_seconds=100000", "quiet=true",
            f"hydra.run.dir={out.parent}",
        ]  # fmt: skip
        run_logged(cmd, out.parent / "teacher.log", out.parent / "cpu.json")
    return out


def cat_check_step(sweep: Path, num_train: int) -> Path:
    """What each CAT criterion keeps on the seed-0 noisy training split (once)."""
    out = sweep / "cat_check.md"
    if not out.is_file():
        cmd = [
            sys.executable, str(HERE / "cat_check.py"), "--num-train", str(num_train),
            "--md", str(out),
        ]  # fmt: skip
        run_logged(cmd, sweep / "cat_check.log", sweep / "cat_check.cpu.json")
    return out


def fewshot_config(run_dir: Path, out: Path) -> Path:
    """The run's config with a larger validation split (the shot pool) and no filter.

    Pair ``i`` of a synthetic split does not depend on the split's size, so the run's own
    validation pairs are the first of these; the probe never reads the train split, and
    ``filter=none`` keeps loading the data from re-running CAT over it.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.source.num_val = FEWSHOT_POOL_VAL
    cfg.filter = OmegaConf.create({"name": "none"})
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out)
    return out


def fewshot_step(sweep: Path, seeds: list[int], parallel: int) -> dict[int, dict[str, Any]]:
    """Few-shot probes of the ``all`` run of each seed (``protocol=kshot``)."""

    def one(seed: int) -> dict[str, Any]:
        run_dir = sweep / "all" / f"seed{seed}"
        out = sweep / "fewshot" / f"seed{seed}.json"
        if not out.is_file():
            cfg = fewshot_config(run_dir, sweep / "fewshot" / f"seed{seed}.yaml")
            ks = "[" + ",".join(str(k) for k in FEWSHOT_KS) + "]"
            cmd = [
                sys.executable, "-m", "vlexp.cli.fewshot",
                f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"config={cfg}", f"ks={ks}",
                f"seeds={list(SHOT_SEEDS)}", "protocol=kshot", f"test_set={SINGLE_TEST_SET}", f"out={out}",
            ]  # fmt: skip
            run_logged(cmd, out.with_suffix(".log"), out.with_suffix(".cpu.json"))
        res = json.loads(out.read_text())
        if res.get("test_set") != "single":
            raise RuntimeError(f"{out}: probe scored on {res.get('test_set')!r}, not 'single'")
        return res

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return dict(zip(seeds, pool.map(one, seeds), strict=True))


def teacher_info(sweep: Path) -> dict[str, Any]:
    """The summary the teacher command printed last (epochs, time, held-out scores)."""
    text = (sweep / "teacher" / "teacher.log").read_text()
    return json.loads(text[text.rindex("\n{") + 1 :])


def extras_cpu(sweep: Path) -> float:
    """CPU seconds recorded for the teacher, the CAT check and the few-shot probes."""
    files = [sweep / "teacher" / "cpu.json", sweep / "cat_check.cpu.json"]
    files += sorted((sweep / "fewshot").glob("seed*.cpu.json"))
    return sum(_recorded_cpu(f) for f in files)


def write_report(
    sweep: Path,
    results: dict[tuple[str, int], dict[str, Any]],
    rows: list[str],
    fewshot: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    wall: float,
) -> list[Path]:
    """results.md, paired.png and fewshot.png next to this file; returns the plots."""
    comps = comparisons_for(rows)
    pairs = [(c.label, analysis.compare(results, c)) for c in comps]
    cpu_jobs = sum(r.get("cpu_seconds", 0.0) for r in results.values())
    cpu_all = cpu_jobs + extras_cpu(sweep)
    plots = [
        plot_paired(
            pairs,
            args.out_dir / "paired.png",
            "DiHT ablation, method minus baseline (same seed)",
            xlabel=f"{analysis.PRIMARY[0]}: paired difference (points)",
        ),
        analysis.plot_fewshot(
            fewshot,
            FEWSHOT_KS,
            args.out_dir / "fewshot.png",
            "few-shot probes of the 'all' (DiHT) runs; single test set, k-shot protocol",
        ),
    ]
    cat_check = (sweep / "cat_check.md").read_text().strip()
    info = teacher_info(sweep)
    text = "\n\n".join(
        [
            "# DiHT ablation: results",
            f"Produced by `experiments/diht_ablation/run.sh` ({args.steps} steps, "
            f"{args.num_train} train pairs per run before filtering, batch 64). All "
            f"{len(results)} training runs and the probes used {cpu_all / 60:.0f} CPU-minutes "
            f"({cpu_jobs / 60:.0f} in training runs); this invocation took "
            f"{wall / 60:.0f} minutes of wall time (0 when everything was reused).",
            f"Concept teacher: trained on the seed-{info['seed']} clean train split "
            f"({info['num_train']} images, {info['epochs_run']} epochs); held-out mean AP "
            f"{info['val']['mean_ap']:.3f}, micro-F1 {info['val']['micro_f1']:.3f}.",
            "## Verdicts",
            "\n".join(analysis.verdict_lines(results, comps, fewshot)),
            f"## Paired differences ({analysis.PRIMARY[0]}, points; method minus baseline, "
            "same seed)",
            paired_table_md(pairs),
            "![paired differences](paired.png)",
            "## The same comparisons on the other metrics (mean paired difference, 95 % CI)",
            analysis.secondary_paired_table(results, comps),
            "## Every row (mean ± sd over seeds, %)",
            analysis.rows_table(results, rows),
            "## What CAT dropped in each filtered run (mean over seeds)",
            analysis.dropped_table(results, rows),
            "## Few-shot probes of the `all` runs",
            "Shots from the `synthetic` validation split (1200 images), accuracy on the "
            "`single` test set (one object per image, 12 classes, chance 8.3 %); per "
            f"training seed, the mean over {len(SHOT_SEEDS)} shot-sampling seeds; "
            "hyper-parameters from the shots alone (`protocol=kshot`).",
            analysis.fewshot_table(fewshot, FEWSHOT_KS),
            "![few-shot curve](fewshot.png)",
            "## CAT check (seed-0 training split)",
            cat_check,
        ]
    )
    (args.out_dir / "results.md").write_text(text + "\n")
    (args.out_dir / "cat_check.md").write_text(cat_check + "\n")
    return plots


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="DiHT ablation on the synthetic data.")
    p.add_argument("--sweep-dir", type=Path, default=REPO / "multirun" / "diht_ablation")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where results.md and plots go")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per run")
    p.add_argument(
        "--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="train pairs before filtering"
    )
    p.add_argument("--parallel", type=int, default=2, help="runs side by side")
    p.add_argument("--logger", choices=("csv", "wandb"), default="csv")
    p.add_argument("--max-seeds", type=int, default=5, choices=(3, 4, 5))
    p.add_argument("--detailed", action="store_true", help="also the detailed-caption condition")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), help="only these rows (smoke tests)")
    args = p.parse_args(argv)
    budget(args.steps, args.num_train)  # checks both
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every step (see the module docstring)."""
    args = parse_args(argv)
    start = time.time()
    sweep = args.sweep_dir.resolve()
    rows = [r for r in main_rows(args.detailed) if not args.rows or r in args.rows]
    comps = comparisons_for(rows)
    teacher_path = str(sweep / "teacher" / f"synthetic_seed{TEACHER_SEED}.pt")
    first = make_jobs(rows, FIRST_SEEDS, teacher_path, args.steps, args.num_train)
    per_job = {r: job_cpu_estimate(r, args.steps, args.num_train) for r in rows}
    extra = CPU_TEACHER + CPU_CAT_CHECK_PER_PAIR * args.num_train + 3 * CPU_FEWSHOT
    total = print_plan("DiHT ablation, seeds 0-2", first, per_job, args.parallel, extra)
    worst = sum(per_job.values()) * len(EXTRA_SEEDS) + len(EXTRA_SEEDS) * CPU_FEWSHOT
    print(
        f"  then seeds 3-4 for the comparisons under 1 point: up to {worst / 60:.0f} "
        f"CPU-minutes more (at most {(total + worst) / 60:.0f} CPU-minutes in all)",
        flush=True,
    )

    print("1. teacher and CAT check", flush=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        t = pool.submit(teacher_step, sweep)
        c = pool.submit(cat_check_step, sweep, args.num_train)
        t.result(), c.result()

    print(f"2. {len(first)} training runs (seeds {FIRST_SEEDS})", flush=True)
    results = run_jobs(first, sweep, parallel=args.parallel, logger=args.logger)

    more = sorted(analysis.rows_to_extend(results, comps, args.max_seeds))
    extra_seeds = EXTRA_SEEDS[: args.max_seeds - len(FIRST_SEEDS)]
    if more:
        print(f"3. seeds {extra_seeds} for rows {more} (differences under 1 point)", flush=True)
        jobs = make_jobs(more, extra_seeds, teacher_path, args.steps, args.num_train)
        results.update(run_jobs(jobs, sweep, parallel=args.parallel, logger=args.logger))

    all_seeds = sorted(s for r, s in results if r == "all")
    print(f"4. few-shot probes of the 'all' runs, seeds {all_seeds}", flush=True)
    fewshot = fewshot_step(sweep, all_seeds, args.parallel)
    p = analysis.fewshot_paired(fewshot, analysis.SMALL_KS)
    missing = [s for s in extra_seeds if s not in all_seeds]
    if p.n < seeds_needed(p, max_seeds=args.max_seeds) and missing:
        print(f"   few-shot difference under 1 point: 'all' seeds {missing}", flush=True)
        jobs = make_jobs(["all"], tuple(missing), teacher_path, args.steps, args.num_train)
        results.update(run_jobs(jobs, sweep, parallel=args.parallel, logger=args.logger))
        fewshot.update(fewshot_step(sweep, missing, args.parallel))

    print("5. results.md, paired.png, fewshot.png", flush=True)
    plots = write_report(sweep, results, rows, fewshot, args, time.time() - start)
    if args.logger == "wandb":
        log_images_to_wandb(plots, sweep, "diht_ablation")
    cpu = sum(r.get("cpu_seconds", 0.0) for r in results.values()) + extras_cpu(sweep)
    print(
        f"done: {(time.time() - start) / 60:.1f} min wall; {cpu / 60:.1f} CPU-minutes recorded "
        f"for all runs and probes; {args.out_dir / 'results.md'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
