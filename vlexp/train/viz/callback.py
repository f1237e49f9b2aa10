"""VizCallback: pictures of a run in ``<run dir>/viz/`` (and wandb images when active).

After every validation (not the sanity check), on global rank 0 only:

* ``similarity_step<N>.png``: cosine similarities of a fixed val batch (the first
  ``num_images`` images of the first val set against their own captions);
* ``retrieval_step<N>.png``: the top-k captions of the whole val set retrieved for the
  first ``num_queries`` images.

At the end of fit: ``schedules.png`` from the CSV log (loss components, ``sampler/*``
curriculum state, objective schedules, learning rate).

The extra forward passes call the unwrapped towers on rank 0 only, so no collective is
involved and other ranks never wait on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from vlexp.train.viz.plots import (
    Retrieved,
    retrieval_examples,
    schedules_figure,
    similarity_heatmap,
)

log = logging.getLogger(__name__)


class VizCallback(L.Callback):
    """Writes similarity, retrieval and schedule plots; logs them to wandb if present."""

    def __init__(
        self, out_dir: str | Path, num_images: int = 16, num_queries: int = 4, top_k: int = 5
    ) -> None:
        self.out_dir = Path(out_dir)
        self.num_images = int(num_images)
        self.num_queries = int(num_queries)
        self.top_k = int(top_k)
        self.written: list[Path] = []

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        sets = getattr(trainer.datamodule, "val_sets", None) or []
        if not sets:
            return
        try:
            self._eval_plots(trainer, pl_module, sets[0])
        except Exception as exc:  # a picture must never kill a training run
            log.warning("viz: could not draw the validation plots: %s", exc)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv is None:
            return
        csv.save()
        metrics = Path(csv.log_dir) / "metrics.csv"
        if not metrics.is_file():
            return
        try:
            path = schedules_figure(
                metrics,
                self.out_dir / "schedules.png",
                title=f"training schedules (step {trainer.global_step})",
            )
        except Exception as exc:
            log.warning("viz: could not draw the schedules: %s", exc)
            return
        if path is not None:
            self._publish(trainer, "viz/schedules", path)

    # ------------------------------------------------------------------ plots
    @torch.no_grad()
    def _eval_plots(self, trainer: L.Trainer, pl_module: Any, eval_set: Any) -> None:
        step = trainer.global_step
        n = min(self.num_images, eval_set.num_images)
        if n == 0 or not eval_set.captions:
            return
        model = pl_module.model
        items = [eval_set.images[i] for i in range(n)]
        batch = trainer.datamodule.eval_collate(items)
        with trainer.strategy.precision_plugin.forward_context():
            image_emb = model.encode_image(batch["image"].to(pl_module.device)).float()
            text_emb = pl_module.encode_captions(list(eval_set.captions)).float()
        cap_img = np.asarray(eval_set.caption_image)
        # the fixed batch: each image against its first caption
        first_cap = [int(np.flatnonzero(cap_img == i)[0]) for i in range(n)]
        sim = (image_emb @ text_emb[first_cap].T).cpu().numpy()
        captions = [eval_set.captions[j] for j in first_cap]
        path = similarity_heatmap(
            sim,
            self.out_dir / f"similarity_step{step:06d}.png",
            captions,
            title=f"{eval_set.name} val batch, step {step}",
        )
        self._publish(trainer, "viz/similarity", path)

        q = min(self.num_queries, n)
        k = min(self.top_k, len(eval_set.captions))
        scores = image_emb[:q] @ text_emb.T
        top = scores.topk(k, dim=1)
        results = [
            [
                Retrieved(eval_set.captions[int(j)], float(s), int(cap_img[int(j)]) == i)
                for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())
            ]
            for i in range(q)
        ]
        images = [
            np.asarray(items[i]["image"].convert("RGB"))
            if hasattr(items[i]["image"], "convert")
            else _to_hwc(items[i]["image"])
            for i in range(q)
        ]
        path = retrieval_examples(
            images,
            results,
            self.out_dir / f"retrieval_step{step:06d}.png",
            title=f"top-{k} captions, {eval_set.name} val, step {step}",
            truths=captions[:q],
        )
        self._publish(trainer, "viz/retrieval", path)

    def _publish(self, trainer: L.Trainer, key: str, path: Path) -> None:
        self.written.append(path)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)


def _to_hwc(image: Any) -> np.ndarray:
    """A CHW/HWC tensor or array as an HWC uint8-displayable array."""
    arr = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    return arr
