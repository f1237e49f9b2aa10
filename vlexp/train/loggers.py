"""Experiment loggers: a CSV log always, wandb (offline by default) or TensorBoard when chosen."""

from __future__ import annotations

import csv
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

from vlexp.io import write_atomic
from vlexp.train.slurm import checkpoint_step, env_rank
from vlexp.train.sweep import run_group, run_name

log = logging.getLogger("vlexp")

# where a run directory keeps the id of its wandb run (a resumed run continues it)
WANDB_ID_FILE = Path("wandb") / "run_id.txt"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as one flat dict (``a.b.c`` keys) for experiment trackers."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def build_loggers(
    cfg: DictConfig, run_dir: Path, resume_from: str | Path | None = None
) -> list[Logger]:
    """CSV logger in ``run_dir`` plus the configured tracker.

    ``resume_from`` is the checkpoint the fit resumes from (None for a fresh start); a
    resume from this run directory's own checkpoint continues its wandb run and appends
    to its ``csv/metrics.csv`` (:class:`HistoryCSVLogger`).
    """
    resumed_at = checkpoint_step(resume_from) if _resumes_in_place(resume_from, run_dir) else None
    loggers: list[Logger] = [HistoryCSVLogger(run_dir, resumed_at=resumed_at)]
    name = cfg.logger.name
    if name == "wandb":
        loggers.append(_wandb_logger(cfg, run_dir, _resumes_in_place(resume_from, run_dir)))
    elif name == "tensorboard":
        loggers.append(tensorboard_logger(cfg, run_dir, resumed_at))
    return loggers


def tensorboard_logger(cfg: DictConfig, run_dir: Path, resumed_at: int | None = None) -> Logger:
    """Lightning's TensorBoard logger writing ``<run_dir>/tensorboard/events.out.tfevents.*``.

    A run resumed in place at step ``g`` passes ``purge_step=g``: TensorBoard hides what
    the interrupted run logged from step ``g`` on, which the resumed run logs again.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    extra = {} if resumed_at is None else {"purge_step": int(resumed_at)}
    logger = TensorBoardLogger(
        str(run_dir), name="tensorboard", version="", default_hp_metric=False, **extra
    )
    logger.log_hyperparams(flat_config(cfg))
    return logger


def _resumes_in_place(resume_from: str | Path | None, run_dir: Path) -> bool:
    """True when the fit resumes from a checkpoint inside ``run_dir`` itself."""
    if resume_from is None:
        return False
    return Path(resume_from).resolve().is_relative_to(Path(run_dir).resolve())


def wandb_run_id(run_dir: Path, resume: bool) -> tuple[str, bool]:
    """The wandb run id for ``run_dir`` and whether it continues the directory's run.

    A run resumed in place reuses the id stored in ``<run_dir>/wandb/run_id.txt``;
    otherwise a new id is drawn and stored there (by rank 0 only).
    """
    path = Path(run_dir) / WANDB_ID_FILE
    if resume and path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored, True
    run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))  # wandb's id format
    if env_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id, False


def finish_wandb(exit_code: int = 0) -> None:
    """Close this process's wandb run, if one is open, so the next job starts its own."""
    if "wandb" not in sys.modules:  # never imported: no run can be open
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def _wandb_logger(cfg: DictConfig, run_dir: Path, resume: bool = False) -> Logger:
    """One wandb run per job: its own id, config and name; group = the sweep."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    if wandb.run is not None:  # left open by an earlier job of this process
        log.info("closing the open wandb run %s before this job starts its own", wandb.run.id)
        finish_wandb()
    mode = cfg.logger.get("mode") or os.environ.get("WANDB_MODE") or "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    tags = [
        f"objective:{cfg.objective.name}",
        f"sampler:{cfg.sampler.name}",
        f"filter:{cfg.filter.name}",
        f"encoder:{cfg.encoder.name}",
        *cfg.get("tags", []),
    ]
    run_id, resumed = wandb_run_id(run_dir, resume)
    if resumed:
        log.info("resuming wandb run %s", run_id)
    logger = WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.get("entity"),
        group=run_group(cfg),
        name=run_name(cfg),
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        mode=mode,
        tags=tags,
        config=flat_config(cfg),
        settings=_wandb_settings(),
    )
    return logger


def _wandb_settings() -> Any:
    import wandb

    # never block on the network or a login prompt
    return wandb.Settings(init_timeout=60, silent=True, console="off")


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is trimmed, not deleted.

    Lightning logs the metrics of optimizer step ``s`` (0-based) and of a validation
    that follows it with ``step=s``; a checkpoint at ``global_step=g`` holds steps
    ``0..g-1``. Rows with ``step >= resumed_at`` (logged by the interrupted run after its
    last checkpoint) are dropped, since the resumed run logs those steps again; the
    other rows and the header are kept and new rows are appended.
    """

    def __init__(self, log_dir: str, resumed_at: int) -> None:
        self.resumed_at = resumed_at
        self._kept_keys: list[str] = []
        super().__init__(log_dir)  # calls _check_log_dir_exists, which trims
        self.metrics_keys = list(self._kept_keys)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _row_step(r) < self.resumed_at]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)

        write_atomic(path, write)
        self._kept_keys = keys


def _row_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class HistoryCSVLogger(CSVLogger):
    """``<run_dir>/csv/metrics.csv``; continues the file when resuming in place.

    With ``resumed_at`` None this is Lightning's ``CSVLogger`` (a fresh run starts a
    fresh file). A run resumed from its own checkpoint at ``global_step=g`` passes
    ``resumed_at=g``: the rows of steps before ``g`` are kept and the resumed run appends
    to them, so the file holds every step of the run once.
    """

    def __init__(self, run_dir: str | Path, resumed_at: int | None = None) -> None:
        super().__init__(str(run_dir), name="csv", version="")
        self.resumed_at = resumed_at

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resumed_at is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(self.log_dir, self.resumed_at)
        return super().experiment
