"""Lightning callbacks and checkpoint I/O: the sampler's curriculum state, the resumable
last checkpoint, and crash-safe checkpoint writes."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("vlexp")

# temporary checkpoint files: ".vlexp-ckpt-<pid>-<token>.partial" next to the target
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".vlexp-ckpt-", ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes every checkpoint to a temporary file in its own directory, then renames it.

    Lightning's default writer stages the bytes in ``$TMPDIR`` and *copies* them into
    place when ``$TMPDIR`` is on another filesystem, so a kill during the copy leaves a
    truncated ``last.ckpt``. Here the file is written, flushed and fsynced next to its
    target and moved over it with ``os.replace`` (atomic within one filesystem): the
    previous checkpoint stays intact until the new one is complete. A write that fails
    removes its temporary file; one killed outright leaves it behind for
    :func:`remove_partial_checkpoints` to clear at the next start.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote: Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = (
            target.parent / f"{PARTIAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        )
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every OS/filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_partial_checkpoints(*dirs: str | Path) -> list[Path]:
    """Delete temporary checkpoint files that a killed write left in ``dirs``; return them."""
    removed = []
    for d in dirs:
        for p in Path(d).glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d unfinished checkpoint file(s) of an interrupted write", len(removed))
    return removed


class SamplerStatsCallback(L.Callback):
    """Logs ``sampler/<key>`` for whatever the train sampler exposes in ``stats``."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        sampler = getattr(trainer.datamodule, "train_sampler", None)
        stats = getattr(sampler, "stats", None) or {}
        if stats and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            for k, v in stats.items():
                pl_module.log(f"sampler/{k}", float(v), batch_size=1)


class LastCheckpoint(L.Callback):
    """Writes ``<dir>/last.ckpt`` after every validation of a fit and when the fit ends.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when
    a top-k checkpoint was saved at the same step, so after a validation that did not
    improve the monitored metric (or a fit that stops between validations) ``last.ckpt``
    would be stale and ``resume=auto`` would lose steps. This callback keeps it current.
    Every rank calls it; the strategy writes on global rank 0 only.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self._saved_at: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if trainer.fast_dev_run or self._saved_at == trainer.global_step:
            return
        for logger in trainer.loggers:
            logger.save()
        # a write, not a load: weights_only=False here means "store the whole state"
        # (optimizer, loops, callbacks) for an exact resume; said explicitly, as Lightning
        # otherwise logs that it defaulted to it. Every load goes through vlexp.io's safe
        # loader (weights_only=True).
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self._saved_at = trainer.global_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            remove_partial_checkpoints(self.path.parent, trainer.default_root_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)
