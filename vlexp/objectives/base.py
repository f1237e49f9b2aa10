"""The objective interface every training loss implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Registry


@dataclass
class ObjectiveOutput:
    """The loss to minimise plus named scalar components for logging."""

    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """A loss over one (possibly distributed) minibatch of image/text embeddings.

    ``forward(features, logit_scale, batch, progress)`` gets

    - ``features``: :class:`GatheredFeatures` -- this rank's L2-normalised embeddings and
      the embeddings of every rank, gathered with gradients when first read;
    - ``logit_scale``: the scalar ``1 / tau`` (already exponentiated and clamped);
    - ``batch``: the collated batch dict (``index``, ``tags``, ``label``, ...);
    - ``progress``: fraction of training done in [0, 1] (schedules read it).

    Objectives may own parameters (e.g. concept heads); the module optimises them.
    Those that keep state across steps (an EMA teacher) expose it via ``state_dict``.
    """

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def setup(self, train_set: Any, cache_dir: str | None = None) -> None:
        """Called once with the (filtered) training set before fitting, on every rank.

        ``batch["index"]`` indexes ``train_set``. Objectives that need per-pair data (e.g.
        cached teacher predictions for concept distillation) prepare it here.
        """

    def prepare_model(self, model: nn.Module) -> None:
        """Called once with the freshly built two-tower model, before the optimiser exists.

        Objectives that start the model's logit scale elsewhere (SigLIP) set it here.
        """

    def on_train_batch_end(self, module: nn.Module) -> None:
        """Called after each optimiser step (e.g. to update an EMA teacher)."""

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups (``params`` plus ``lr``/``weight_decay``) for parameters of this
        objective that need their own settings (e.g. concept heads); given the run's ``lr``
        and ``weight_decay``. Parameters not listed get the module's default groups."""
        return []


OBJECTIVES: Registry[Objective] = Registry("objective")
