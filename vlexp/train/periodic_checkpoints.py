"""Periodic checkpoints (``checkpoint.*``): ``checkpoints/step-<N>.ckpt`` every N optimizer
steps and/or at the end of every N-th epoch, the newest ``keep`` of them kept.

They sit beside ``last.ckpt`` and ``best.ckpt`` (which they never touch), are written
through the trainer like those (so atomically, by ``AtomicCheckpointIO``) and resume like
them: ``resume=<file>``, or ``resume=auto``, which also considers them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("vlexp")

_NAME = re.compile(r"step-(\d+)\.ckpt")


def periodic_checkpoint_path(dirpath: str | Path, step: int) -> Path:
    """Where the periodic checkpoint of global step ``step`` goes."""
    return Path(dirpath) / f"step-{step:08d}.ckpt"


def periodic_checkpoints(dirpath: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the periodic checkpoints in ``dirpath``, oldest step first."""
    found = []
    for path in Path(dirpath).glob("step-*.ckpt"):
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


class PeriodicCheckpoint(L.Callback):
    """Saves ``step-<N>.ckpt`` every ``every_n_steps`` steps and/or after the last step of
    every ``every_n_epochs``-th epoch; keeps the newest ``keep`` (``-1``: all).

    Files of steps after the current one (left by a run this one resumed from an
    earlier point) are removed when the next checkpoint is written, so ``keep`` counts
    only this run's history. Every rank calls it; global rank 0 writes and deletes.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        keep: int = 3,
    ) -> None:
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("PeriodicCheckpoint needs every_n_steps or every_n_epochs")
        if keep == 0 or keep < -1:
            raise ValueError(f"checkpoint.keep must be >= 1 or -1 (all), got {keep}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.keep = keep
        self._saved_at: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        step = trainer.global_step
        if trainer.fast_dev_run or step == 0 or self._saved_at == step:
            return
        for logger in trainer.loggers:  # the metric history up to here, as last.ckpt does
            logger.save()
        trainer.save_checkpoint(str(periodic_checkpoint_path(self.dirpath, step)))
        self._saved_at = step
        if trainer.is_global_zero:
            self._prune(step)

    def _prune(self, step: int) -> None:
        found = periodic_checkpoints(self.dirpath)
        stale = [p for s, p in found if s > step]
        kept = [p for s, p in found if s <= step]
        if self.keep != -1:
            stale += kept[: max(0, len(kept) - self.keep)]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.debug("removed periodic checkpoint(s) %s", ", ".join(p.name for p in stale))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        steps, epochs = self.every_n_steps, self.every_n_epochs
        if steps is not None and trainer.global_step % steps == 0:
            self._save(trainer)
        # an epoch's checkpoint is written after its last step, here, not in
        # on_train_epoch_end: one written there resumes into another batch plan
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if epochs is not None and last and (trainer.current_epoch + 1) % epochs == 0:
            self._save(trainer)
