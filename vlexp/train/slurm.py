"""Cluster glue: process rank from the environment, SLURM requeue, checkpoint resume.

Preemption on SLURM works in three steps, none of which needs vlexp code inside the
training loop:

1. the job is submitted with ``--signal=USR1@<s>`` (``hydra/launcher=slurm`` sets it), so
   SLURM sends SIGUSR1 ``s`` seconds before the time limit;
2. Lightning's ``SLURMEnvironment(auto_requeue=True)`` (active whenever Lightning runs
   under SLURM) catches it, saves ``<run dir>/hpc_ckpt_<n>.ckpt`` and calls
   ``scontrol requeue``;
3. the requeued job re-runs the same submission, lands in the same run directory
   (the sweep directory was resolved once at submission) and :func:`find_resume_point`
   picks the newest readable one of ``hpc_ckpt_*.ckpt``, ``checkpoints/last.ckpt`` and
   the periodic ``checkpoints/step-<N>.ckpt``
   (``checkpoints/best.ckpt`` when none can be read), logging which file and step.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vlexp.io import UnreadableFileError
from vlexp.train.checkpoints import checkpoint_step
from vlexp.train.periodic_checkpoints import periodic_checkpoints

log = logging.getLogger("vlexp")

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


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Resumable checkpoints of a run directory, newest first.

    ``checkpoints/last.ckpt`` (rewritten at every validation), the periodic
    ``checkpoints/step-<N>.ckpt`` (``checkpoint.*``) and Lightning's SLURM preemption
    checkpoints ``hpc_ckpt_<n>.ckpt``, ordered by modification time (ties: the higher hpc
    number, then last.ckpt); ``checkpoints/best.ckpt`` comes last, as the fallback when
    none of those can be read.
    """
    run_dir = Path(run_dir)
    primary = [p for p in run_dir.glob("hpc_ckpt_*.ckpt") if _hpc_number(p) >= 0]
    primary += [p for _, p in periodic_checkpoints(run_dir / "checkpoints")]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        primary.append(last)
    primary.sort(key=lambda p: (p.stat().st_mtime_ns, _hpc_number(p)), reverse=True)
    best = run_dir / "checkpoints" / "best.ckpt"
    return primary + ([best] if best.is_file() else [])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest resumable checkpoint of a run directory (unchecked), or None."""
    found = checkpoint_candidates(run_dir)
    return found[0] if found and found[0].name != "best.ckpt" else None


@dataclass
class ResumePoint:
    """Where a fit starts: ``path`` (None: fresh) at ``step``, and the files skipped."""

    path: str | None = None
    step: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    searched: str | None = None  # the run directory that was searched, if any

    def describe(self) -> str:
        """One line for the log: resumed from which file at which step, or fresh."""
        if self.path is not None:
            return f"resuming from {self.path} at step {self.step}"
        where = f" in {self.searched}" if self.searched else ""
        return f"no usable checkpoint{where}: starting fresh"


def newest_good_checkpoint(run_dir: Path) -> ResumePoint:
    """The newest candidate (:func:`checkpoint_candidates`) that loads, with its step.

    Unreadable files (truncated by a crash, 0 bytes) are skipped and listed in
    ``skipped``; a file that would run code when loaded is refused (raises).
    """
    point = ResumePoint(searched=str(run_dir))
    for path in checkpoint_candidates(run_dir):
        try:
            step = checkpoint_step(path)
        except UnreadableFileError as err:
            point.skipped.append((str(path), str(err)))
            continue
        point.path, point.step = str(path), step
        break
    return point


def find_resume_point(resume: str | None, run_dir: Path) -> ResumePoint:
    """Resolve ``resume`` (None, a .ckpt file, a run dir, or 'auto') to a :class:`ResumePoint`.

    ``auto`` resumes from the newest readable checkpoint of ``run_dir``
    (:func:`newest_good_checkpoint`) and starts fresh when there is none (what a
    requeued SLURM job wants). An unset ``resume`` inside a requeued SLURM job is
    treated as ``auto``: a requeue always means "continue". A run directory is searched
    the same way; an explicit .ckpt file is used as given.
    """
    if resume in (None, "", "none", "null"):
        resume = "auto" if is_requeued() else None
    if resume is None:
        return ResumePoint()
    if resume == "auto":
        return newest_good_checkpoint(Path(run_dir))
    path = Path(str(resume))
    if path.is_dir():
        point = newest_good_checkpoint(path)
        if point.path is not None:
            return point
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume={resume!r}: no readable checkpoint at {path}. Pass a .ckpt file, a run "
            "directory holding checkpoints/last.ckpt, or resume=auto."
        )
    return ResumePoint(path=str(path), step=checkpoint_step(path))


def resume_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """Checkpoint path to resume from (see :func:`find_resume_point`), or None."""
    return find_resume_point(resume, run_dir).path


def log_resume_point(point: ResumePoint, resume: str | None) -> None:
    """Log each skipped (unreadable) checkpoint, then one line: resumed or fresh."""
    for path, why in point.skipped:
        log.warning("skipping unreadable checkpoint %s: %s", path, why)
    if point.path is not None or resume not in (None, "", "none", "null") or is_requeued():
        log.info("resume=%s: %s", resume, point.describe())
