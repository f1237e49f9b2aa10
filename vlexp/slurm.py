"""Cluster glue: process rank from the environment, SLURM requeue, checkpoint resume.

Preemption on SLURM works in three steps, none of which needs vlexp code inside the
training loop:

1. the job is submitted with ``--signal=USR1@<s>`` (``hydra/launcher=slurm`` sets it), so
   SLURM sends SIGUSR1 ``s`` seconds before the time limit;
2. Lightning's ``SLURMEnvironment(auto_requeue=True)`` (active whenever Lightning runs
   under SLURM) catches it, saves ``<run dir>/hpc_ckpt_<n>.ckpt`` and calls
   ``scontrol requeue``;
3. the requeued job re-runs the same submission, lands in the same run directory
   (the sweep directory was resolved once at submission) and :func:`resume_checkpoint`
   picks the newest of ``hpc_ckpt_*.ckpt`` and ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# environment variables that carry a process's global rank, in order of trust
_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK")


def env_rank() -> int:
    """Global rank of this process as the launcher announced it (0 when none did).

    Read before any process group exists: ``RANK`` (torchrun, Lightning's relaunch of
    multi-node jobs), ``SLURM_PROCID`` (srun), ``LOCAL_RANK`` (Lightning's relaunch of a
    single node). Any non-zero value means "not the process that owns the outputs".
    """
    for var in _RANK_VARS:
        value = os.environ.get(var)
        if value is not None and value.strip().lstrip("-").isdigit() and int(value) != 0:
            return int(value)
    return 0


def is_requeued() -> bool:
    """True inside a SLURM job that has been requeued (``SLURM_RESTART_COUNT`` > 0)."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return value.isdigit() and int(value) > 0


def _hpc_number(path: Path) -> int:
    m = re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", path.name)
    return int(m.group(1)) if m else -1


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest resumable checkpoint of a run directory, or None.

    Candidates: ``checkpoints/last.ckpt`` (written at every validation by
    ``ModelCheckpoint``) and Lightning's SLURM preemption checkpoints
    ``hpc_ckpt_<n>.ckpt`` in the run directory. The most recently written one wins
    (ties: the higher hpc number, then last.ckpt).
    """
    run_dir = Path(run_dir)
    candidates = [p for p in run_dir.glob("hpc_ckpt_*.ckpt") if _hpc_number(p) >= 0]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        candidates.append(last)
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, _hpc_number(p)))


def resume_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """Checkpoint path to resume from: None, a .ckpt file, a run dir, or 'auto'.

    ``auto`` resumes from :func:`latest_checkpoint` of ``run_dir`` and starts fresh when
    there is none (what a requeued SLURM job wants). An unset ``resume`` inside a
    requeued SLURM job is treated as ``auto``: a requeue always means "continue".
    """
    if resume in (None, "", "none", "null"):
        resume = "auto" if is_requeued() else None
    if resume is None:
        return None
    if resume == "auto":
        found = latest_checkpoint(Path(run_dir))
        return str(found) if found is not None else None
    path = Path(str(resume))
    if path.is_dir():
        found = latest_checkpoint(path)
        path = found if found is not None else path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume={resume!r}: no checkpoint at {path}. Pass a .ckpt file, a run "
            "directory holding checkpoints/last.ckpt, or resume=auto."
        )
    return str(path)
