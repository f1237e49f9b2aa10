"""`objective=clip`: symmetric InfoNCE over the (gathered) minibatch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures


def local_logits(
    features: GatheredFeatures, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image->text and text->image logits of the local rows against all columns.

    Both are ``(B_local, B_global)``; the positive of row ``i`` is column ``offset + i``.
    """
    logits_i2t = logit_scale * features.image @ features.text_all.T
    logits_t2i = logit_scale * features.text @ features.image_all.T
    return logits_i2t, logits_t2i


def info_nce(features: GatheredFeatures, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-direction InfoNCE (mean over local rows)."""
    logits_i2t, logits_t2i = local_logits(features, logit_scale)
    labels = features.labels
    return {
        "i2t": F.cross_entropy(logits_i2t, labels),
        "t2i": F.cross_entropy(logits_t2i, labels),
    }


@OBJECTIVES.register("clip", schema={})
class ClipObjective(Objective):
    """L = (L_i2t + L_t2i) / 2 with the learnable, clamped temperature of the model."""

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        parts = info_nce(features, logit_scale)
        loss = 0.5 * (parts["i2t"] + parts["t2i"])
        return ObjectiveOutput(loss, {"loss_i2t": parts["i2t"], "loss_t2i": parts["t2i"]})
