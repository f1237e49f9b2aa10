"""Lightning callbacks: log the sampler's curriculum state and the filter report."""

from __future__ import annotations

from typing import Any

import lightning as L


class SamplerStatsCallback(L.Callback):
    """Logs ``sampler/<key>`` for whatever the train sampler exposes in ``stats``."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        sampler = getattr(trainer.datamodule, "train_sampler", None)
        stats = getattr(sampler, "stats", None) or {}
        if stats and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            for k, v in stats.items():
                pl_module.log(f"sampler/{k}", float(v), batch_size=1)
