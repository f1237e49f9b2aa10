"""Hydra run/multirun glue: sweep names, failed jobs, rank-0-only logs, DDP relaunch.

Everything here is about *how* ``vlexp.cli.train.main`` is launched, not about training:
the functions read Hydra's runtime config when Hydra runs the job and fall back to
plain defaults when :func:`vlexp.train.run.train` is called directly (tests, notebooks).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("vlexp")


def hydra_cfg() -> DictConfig | None:
    """Hydra's own config of the running job, or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except (ImportError, ValueError):
        return None


def is_multirun() -> bool:
    """True when this job is one of a Hydra multirun (``-m``, a sweeper, a launcher)."""
    hc = hydra_cfg()
    return hc is not None and str(hc.mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def sweep_name() -> str | None:
    """``<task>/<sweep dir name>`` of a multirun (one wandb group per sweep), else None."""
    hc = hydra_cfg()
    if hc is None or not is_multirun():
        return None
    sweep_dir = Path(str(hc.sweep.dir))
    return f"{sweep_dir.parent.name}/{sweep_dir.name}" if sweep_dir.parent.name else sweep_dir.name


def group_choices() -> dict[str, str]:
    """The config-group presets this job was composed from (``{"objective": "tonics", ...}``).

    Groups left at null are omitted; empty outside a Hydra app.
    """
    hc = hydra_cfg()
    if hc is None:
        return {}
    return {str(k): str(v) for k, v in hc.runtime.choices.items() if v not in (None, "null")}


def experiment_name() -> str | None:
    """The ``experiment=`` choice of this run, or None."""
    return group_choices().get("experiment")


def run_group(cfg: DictConfig) -> str:
    """Group of a run in experiment trackers.

    ``logger.group`` when set, else the sweep (multirun directory), else the experiment,
    else ``task_name``.
    """
    explicit = cfg.logger.get("group") if "logger" in cfg else None
    return str(explicit or sweep_name() or experiment_name() or cfg.get("task_name", "train"))


def run_name(cfg: DictConfig) -> str | None:
    """Display name of a run in experiment trackers.

    ``logger.run_name`` when set, else the job's overrides as Hydra writes them
    (``hydra.job.override_dirname``, e.g. ``objective=hnnce,optim.lr=0.001``), else None
    (the tracker picks a name).
    """
    explicit = cfg.logger.get("run_name") if "logger" in cfg else None
    if explicit:
        return str(explicit)
    hc = hydra_cfg()
    overrides = str(hc.job.get("override_dirname") or "") if hc is not None else ""
    return overrides or None


def record_failure(run_dir: Path, exc: BaseException) -> Path:
    """Write ``error.txt`` (the traceback) in ``run_dir`` and close wandb with exit code 1."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "error.txt"
    path.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.finish(exit_code=1)
    except Exception as wandb_exc:  # never mask the job's own error
        log.warning("could not close the wandb run: %s", wandb_exc)
    return path


def quiet_nonzero_rank(rank: int) -> None:
    """On ranks other than 0, drop the file handlers Hydra attached to the root logger.

    Rank 0 owns the run directory; other ranks still log to the console (stderr).
    """
    if rank == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


def prepare_ddp_relaunch() -> None:
    """Make Lightning's per-rank relaunch of a multirun job re-run *that job only*.

    With ``strategy=ddp`` outside SLURM, Lightning starts ranks 1.. by re-running
    ``sys.argv`` plus ``hydra.run.dir=<HydraConfig.run.dir>``. In a multirun that command
    would start the whole sweep again in a new timestamped directory. Here ``sys.argv``
    becomes this job's own overrides and ``run.dir`` its output directory, so every rank
    of job *k* runs job *k* in job *k*'s directory.
    """
    hc = hydra_cfg()
    if hc is None or not is_multirun():
        return
    overrides = [str(o) for o in hc.overrides.task]
    # hydra.mode=RUN: a preset such as hparams_search=... sets hydra.mode=MULTIRUN itself
    sys.argv = [sys.argv[0], *overrides, "hydra.mode=RUN"]
    with read_write(hc), open_dict(hc):
        hc.run.dir = str(hc.runtime.output_dir)


@contextmanager
def isolated_job() -> Iterator[None]:
    """Run one job so that the next job of the same process starts clean.

    A multirun with the basic launcher runs its jobs one after another in one process.
    Lightning's DDP launcher leaves a process group and rank variables (``LOCAL_RANK``,
    ``MASTER_PORT``, ...) behind, which would make the next job believe its processes
    already exist. Afterwards this destroys the process group and restores the
    environment and ``sys.argv`` as they were before the job.
    """
    env = dict(os.environ)
    argv = list(sys.argv)
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(env):
            del os.environ[key]
        for key, value in env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        sys.argv = argv
