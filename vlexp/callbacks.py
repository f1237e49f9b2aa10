"""Lightning callbacks: the sampler's curriculum state and the resumable last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


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
        trainer.save_checkpoint(str(self.path))
        self._saved_at = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)
