"""The DiHT ablation on the synthetic data: its rows (override sets) and how to run them.

    python experiments/diht_ablation/ablation.py commands --out DIR --teacher PATH [--seeds 0 1]
    python experiments/diht_ablation/ablation.py run --out DIR --teacher PATH [--seeds 0 1]
    python experiments/diht_ablation/ablation.py fewshot-config --run RUN_DIR --out FILE

``commands`` prints the exact ``python -m vlexp.run`` command of every (row, seed);
``run`` executes them one after another (a job whose ``metrics.json`` exists is skipped,
so an interrupted sweep resumes), each writing to ``DIR/<row>/seed<k>``.
``fewshot-config`` writes the config the few-shot probe reads (see :func:`fewshot_config`).
``experiments/diht_ablation/run.sh`` chains everything; this module is the single place
the override sets live (``tests/test_diht_ablation_configs.py`` composes and runs them).

Rows (each adds one DiHT piece to CLIP, then all of them; same data and budget):

1. ``clip``: ``objective=clip filter=none``
2. ``cat``: CLIP + the CAT filter (thresholds in :data:`CAT`, chosen for this data; see
   the README and ``cat_check.py``)
3. ``concepts``: CLIP + concept distillation (``objective=composite``: the ``clip`` term
   plus a ``concepts`` term with the same values as ``conf/objective/diht.yaml``'s, from
   the synthetic teacher)
4. ``hnnce``: ``objective=hnnce`` (alpha 1, beta 0.5: the config's defaults)
5. ``all``: ``objective=diht`` (HN-NCE + concept distillation) + CAT
6. ``all_tonics``: ``all`` + ``sampler=tonics``
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DATA_KNOBS: tuple[str, ...] = (
    # what CAT targets: bare-noun captions and images showing their own caption as text
    "data.source.low_complexity_frac=0.3",
    "data.source.text_in_image_frac=0.3",
    # more multi-object scenes with a drawn action (and an action caption)
    "data.source.action_frac=0.5",
)
"""Generator knobs (train split only for the first two; val/test stay clean)."""

BUDGET: tuple[str, ...] = (
    "data.source.num_train=4000",
    "data.source.num_val=300",
    "data.source.num_test=500",
    "data.source.num_test_compositional=250",
    "data.batch_size=64",
    "data.eval_batch_size=128",
    "data.num_workers=1",
    "logger=csv",
    "viz.enabled=false",
)
"""The small per-run budget (2 shared CPU cores), without the step count (``steps_budget``)."""

DEFAULT_STEPS = 400
"""Training steps per run: 400 steps of batch 64 are ~6.4 epochs of the unfiltered data."""


def steps_budget(steps: int) -> list[str]:
    """``steps`` optimizer steps, validation at half-way and at the end, 10 % warm-up."""
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    return [
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps // 2}",
        f"optim.warmup_steps={max(1, steps // 10)}",
    ]


CAT: tuple[str, ...] = (
    "filter=cat",
    # the action criterion keeps only the synthetic 'action' captions (~17 % of the
    # pairs, see cat_check.md): it would remove most clean relation/attribute captions
    "filter.action=false",
    # complexity >= 1 drops exactly the bare-noun captions ("a circle"); the default 2
    # also drops every clean one-attribute caption ("a red circle")
    "filter.min_complexity=1",
    # the 64 px images' rendered text is small and partly misread by OCR: at 0.3 CAT drops
    # 80 % of the text-in-image pairs (0.5: 61 %) and still no pair without text
    "filter.max_text_overlap=0.3",
)
"""CAT as used in the ablation: complexity >= 1 and text-spotting (overlap < 0.3)."""


def concept_term(teacher: str) -> list[str]:
    """Overrides adding concept distillation (DiHT's term values) to ``objective=composite``."""
    t = "+objective.terms.concepts"
    return [
        f"{t}.name=concepts",
        f"{t}.weight=1.0",
        f"{t}.teacher.name=synthetic",
        f"{t}.teacher.weights={teacher}",
        f"{t}.num_workers=${{data.num_workers}}",
    ]


def diht_teacher(teacher: str) -> list[str]:
    """Overrides pointing ``objective=diht``'s concept term at the synthetic teacher."""
    return [
        "objective.terms.concepts.teacher.name=synthetic",
        f"objective.terms.concepts.teacher.weights={teacher}",
    ]


TEACHER_SEED = 1
"""Seed of the synthetic teacher's data (``run.sh``): its training images are the seed-1
train split, so ablation jobs must not use seed 1 with a teacher (``run`` refuses)."""

TEACHER_ROWS: frozenset[str] = frozenset({"concepts", "all", "all_tonics"})

ROW_NAMES: tuple[str, ...] = ("clip", "cat", "concepts", "hnnce", "all", "all_tonics")
ROW_LABELS: dict[str, str] = {
    "clip": "CLIP",
    "cat": "+CAT",
    "concepts": "+concept distillation",
    "hnnce": "+HN-NCE",
    "all": "all (DiHT)",
    "all_tonics": "all + TOnICS sampler",
}


def row_overrides(row: str, teacher: str) -> list[str]:
    """The overrides that define ablation row ``row`` (without data knobs and budget)."""
    rows: dict[str, list[str]] = {
        "clip": ["objective=clip", "filter=none"],
        "cat": ["objective=clip", *CAT],
        "concepts": ["objective=composite", *concept_term(teacher), "filter=none"],
        "hnnce": ["objective=hnnce", "filter=none"],
        "all": ["objective=diht", *diht_teacher(teacher), *CAT],
        "all_tonics": ["objective=diht", *diht_teacher(teacher), *CAT, "sampler=tonics"],
    }
    if row not in rows:
        raise KeyError(f"unknown ablation row {row!r}; rows are {list(ROW_NAMES)}")
    return rows[row]


def job_overrides(
    row: str, teacher: str, seed: int, run_dir: str | Path, steps: int = DEFAULT_STEPS
) -> list[str]:
    """All overrides of one training job: row, data knobs, budget, seed, run directory."""
    return [
        *row_overrides(row, teacher),
        *DATA_KNOBS,
        *BUDGET,
        *steps_budget(steps),
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
    ]


def job_command(
    row: str, teacher: str, seed: int, out: str | Path, steps: int = DEFAULT_STEPS
) -> list[str]:
    """The ``python -m vlexp.run`` argv of one job, writing to ``out/<row>/seed<seed>``."""
    run_dir = Path(out) / row / f"seed{seed}"
    ov = job_overrides(row, teacher, seed, run_dir, steps)
    return [sys.executable, "-m", "vlexp.cli.train", *ov]


def fewshot_config(run_dir: str | Path, out: str | Path, num_val: int = 1200) -> Path:
    """Write the run's config with ``num_val`` validation pairs and no train filter.

    The probe takes its shots from one half of the validation split and chooses its
    radii on the other half, so a larger split gives more shots per class (12 classes:
    300 pairs leave ~12 per class in the pool, fewer than k = 16). Pair ``i`` of a split
    does not depend on the split's size, so the run's own 300 validation pairs are the
    first 300 of these. The train split is not used by the probe: the filter is set to
    ``none`` so that loading the data does not re-run CAT over it.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml")
    cfg.data.source.num_val = int(num_val)
    cfg.filter = OmegaConf.create({"name": "none"})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out)
    return out


def _run_steps(run_dir: Path) -> int | None:
    """``trainer.max_steps`` of a finished run (None if its config cannot be read)."""
    from omegaconf import OmegaConf

    try:
        return int(OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.max_steps)
    except Exception:  # a hand-made or partial run directory: cannot tell
        return None


def _jobs(args: argparse.Namespace) -> list[tuple[str, int, list[str]]]:
    rows = args.rows or list(ROW_NAMES)
    return [
        (r, s, job_command(r, args.teacher, s, args.out, args.steps))
        for s in args.seeds
        for r in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="DiHT ablation on the synthetic data.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("commands", "run"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="sweep directory (jobs in OUT/<row>/seed<k>)")
        p.add_argument("--teacher", required=True, help="synthetic teacher weights file")
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        p.add_argument("--rows", nargs="+", choices=ROW_NAMES, default=None)
        p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run")
    fs = sub.add_parser("fewshot-config")
    fs.add_argument("--run", required=True, help="run directory of the probed checkpoint")
    fs.add_argument("--out", required=True, help="config file to write")
    fs.add_argument("--num-val", type=int, default=1200)
    args = parser.parse_args(argv)

    if args.command == "fewshot-config":
        print(fewshot_config(args.run, args.out, args.num_val))
        return 0
    if args.command == "commands":
        for _, _, cmd in _jobs(args):
            print(shlex.join(["python", *cmd[1:]]))
        return 0
    if not Path(args.teacher).is_file():
        raise SystemExit(
            f"teacher weights {args.teacher} not found; train them with "
            f"`vlexp teacher train-synthetic out={args.teacher}`"
        )
    clash = sorted({r for r, s, _ in _jobs(args) if s == TEACHER_SEED and r in TEACHER_ROWS})
    if clash:
        raise SystemExit(
            f"seed {TEACHER_SEED} is the synthetic teacher's data seed: rows {clash} would "
            "train on the teacher's own training images; use other seeds"
        )
    failed = []
    for row, seed, cmd in _jobs(args):
        run_dir = Path(args.out) / row / f"seed{seed}"
        if (run_dir / "metrics.json").is_file():
            done_steps = _run_steps(run_dir)
            if done_steps != args.steps:
                held = "an unreadable step count" if done_steps is None else f"{done_steps} steps"
                raise SystemExit(
                    f"{run_dir} holds a finished run of {held}, not --steps {args.steps}: "
                    "use another --out (SWEEP_DIR) or move that run away"
                )
            print(f"[skip] {row} seed {seed}: {run_dir}/metrics.json exists", flush=True)
            continue
        print("[run] " + shlex.join(["python", *cmd[1:]]), flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(run_dir / "stdout.log", "w") as log:
            rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        print(f"[done] {row} seed {seed}: exit {rc} after {time.time() - start:.0f}s", flush=True)
        if rc != 0:
            failed.append(f"{row}/seed{seed} (exit {rc}, see {run_dir}/stdout.log)")
            print(f"[fail] {failed[-1]}", flush=True)
    if failed:
        print("failed jobs: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
