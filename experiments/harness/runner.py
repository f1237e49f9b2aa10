"""Run an experiment's (row, seed) training jobs as ``python -m vlexp.run`` processes.

Each job gets its own run directory ``<sweep_dir>/<key>/seed<seed>`` and one torch
thread (on a small CPU, several single-thread jobs side by side beat one job with all
threads). A job whose ``metrics.json`` exists is skipped and an interrupted one resumes
from its last checkpoint (``resume=auto``), so re-running an experiment's command only
does what is missing; a run directory made for other overrides (``job.json``) is refused,
never silently reused. The CPU seconds each job used (user + system, from the kernel's
accounting of the child) go to ``<job dir>/cpu.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Job:
    """One training run: a row of a table (``key``), its overrides and its seed."""

    key: str
    overrides: list[str] = field(default_factory=list)
    seed: int = 0


def job_dir(sweep_dir: str | Path, job: Job) -> Path:
    """The run directory of ``job`` under ``sweep_dir``."""
    return Path(sweep_dir) / job.key / f"seed{job.seed}"


def command(job: Job, run_dir: Path, logger: str = "csv") -> list[str]:
    """The ``python -m vlexp.run`` command line of ``job`` writing into ``run_dir``."""
    cmd = [
        sys.executable,
        "-m",
        "vlexp.run",
        *job.overrides,
        f"seed={job.seed}",
        f"logger={logger}",
        "resume=auto",
        f"hydra.run.dir={run_dir}",
    ]
    if logger == "wandb":  # the jobs and the experiment's summary run share one group
        cmd.append(f"logger.group={run_dir.parent.parent.name}")
    return cmd


def print_plan(
    title: str,
    jobs: Sequence[Job],
    cpu_seconds_per_job: float | Mapping[str, float],
    parallel: int = 2,
    extra_cpu_seconds: float = 0.0,
    cores: int = 2,
) -> float:
    """Print, before any work, how many runs and about how much CPU time they take.

    ``cpu_seconds_per_job`` is a measured estimate (one number, or one per job key);
    ``extra_cpu_seconds`` covers steps outside the jobs (teachers, filters, probes).
    Returns the total estimated CPU seconds.
    """
    per = cpu_seconds_per_job
    total = extra_cpu_seconds + sum(
        float(per[j.key] if isinstance(per, Mapping) else per) for j in jobs
    )
    lanes = max(1, min(parallel, cores))
    print(
        f"{title}: {len(jobs)} runs, about {total / 60:.0f} CPU-minutes in total, "
        f"about {total / 60 / lanes:.0f} minutes on an idle {cores}-core CPU "
        f"({parallel} jobs side by side, one torch thread each); finished runs are reused",
        flush=True,
    )
    return total


def _run_one(job: Job, sweep_dir: Path, logger: str, env: dict[str, str]) -> dict[str, Any]:
    run_dir = job_dir(sweep_dir, job)
    metrics_file = run_dir / "metrics.json"
    spec_file = run_dir / "job.json"
    made_for = json.loads(spec_file.read_text())["overrides"] if spec_file.is_file() else None
    if made_for is not None and made_for != list(job.overrides):
        raise RuntimeError(
            f"{job.key} seed {job.seed}: {run_dir} holds a run with other overrides than this "
            "job's; move it away or pass another sweep directory"
        )
    if metrics_file.is_file():
        out = json.loads(metrics_file.read_text())
        cpu_file = run_dir / "cpu.json"
        if cpu_file.is_file():
            out["cpu_seconds"] = json.loads(cpu_file.read_text())["cpu_seconds"]
        return out
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps({"overrides": list(job.overrides)}))
    (run_dir / "error.txt").unlink(missing_ok=True)
    start = time.time()
    with open(run_dir / "job.log", "ab") as log:
        proc = subprocess.Popen(
            command(job, run_dir, logger), cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    wall = time.time() - start
    if not metrics_file.is_file():
        raise RuntimeError(f"{job.key} seed {job.seed} failed; see {run_dir / 'job.log'}")
    (run_dir / "cpu.json").write_text(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall}))
    out = json.loads(metrics_file.read_text())
    out["cpu_seconds"] = cpu
    print(
        f"  done {job.key} seed {job.seed}: {wall / 60:.1f} min wall, {cpu / 60:.1f} CPU-min",
        flush=True,
    )
    return out


def run_jobs(
    jobs: Sequence[Job],
    sweep_dir: str | Path,
    parallel: int = 2,
    logger: str = "csv",
    threads_per_job: int = 1,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (or reuse) every job; return ``{(key, seed): metrics.json content}``.

    Each result also carries ``cpu_seconds`` when the job ran under this harness. All
    jobs are attempted; afterwards one error lists every failed job with its log.
    """
    sweep_dir = Path(sweep_dir).resolve()
    keys = [(j.key, j.seed) for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("two jobs share a (key, seed): give each row its own key")
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads_per_job)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {(j.key, j.seed): pool.submit(_run_one, j, sweep_dir, logger, env) for j in jobs}
        for key, fut in futures.items():
            try:
                results[key] = fut.result()
            except RuntimeError as err:
                failures.append(str(err))
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(jobs)} jobs failed (re-running the command retries only "
            "those):\n  " + "\n  ".join(failures)
        )
    return results


def result_metric(result: Mapping[str, Any], key: str) -> float:
    """A test metric of a job's result (``metrics.json`` content), e.g. ``test/synthetic/i2t_R@1``."""
    tests = result.get("test") or {}
    if key not in tests:
        raise KeyError(f"metric {key!r} not in the job's test metrics; have {sorted(tests)[:12]}")
    return float(tests[key])
