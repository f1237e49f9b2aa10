"""The batch-sampler interface.

A sampler plans each epoch as a list of *global* batches (``batch_size * world_size``
indices each), deterministically from ``(seed, epoch)``; rank ``r`` takes slice ``r`` of
every global batch. So all ranks yield the same number of equally sized batches and
never overlap within a batch. Lightning's automatic distributed sampler is disabled
(``use_distributed_sampler=False``) because this class already splits by rank.

State for exact resume: ``{"epoch", "batches_done"}``; a resumed sampler skips the
batches of the current epoch that were already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vlexp.data.types import TagTable
from vlexp.registry import Registry


class PlannedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Base class: subclasses implement :meth:`plan_epoch`."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tags: TagTable | None = None,
        total_steps: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < batch_size * world_size:
            raise ValueError(
                f"the training set has {num_samples} pairs, fewer than one global batch "
                f"(batch_size {batch_size} x world_size {world_size}); lower data.batch_size"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.tags = tags
        self.total_steps = total_steps
        self.epoch = 0
        self.batches_done = 0  # in the current epoch, for resume
        self._resume_skip = 0
        self.stats: dict[str, float] = {}

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        """Number of batches each rank yields per epoch."""
        return self.num_samples // self.global_batch_size

    def plan_epoch(self, epoch: int) -> np.ndarray:
        """Global batches of epoch ``epoch``: int64 array (num_batches, global_batch_size)."""
        raise NotImplementedError

    @property
    def sampler(self) -> PlannedBatchSampler:
        """This object itself.

        Lightning advances epochs by calling ``set_epoch`` on ``loader.sampler`` and on
        ``loader.batch_sampler.sampler``, never on the batch sampler; exposing ``sampler``
        lets that call reach the plan, so epoch ``e`` draws ``plan_epoch(e)`` under any
        Trainer (without it, every epoch would replay epoch 0).
        """
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next ``iter()`` yields (resets the position)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_done = 0

    def __len__(self) -> int:
        return self.batches_per_epoch()

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan_epoch(self.epoch)
        if plan.shape != (self.batches_per_epoch(), self.global_batch_size):
            raise RuntimeError(f"{type(self).__name__} planned a batch grid of {plan.shape}")
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        start, self._resume_skip = self._resume_skip, 0
        self.batches_done = start
        for b in range(start, len(plan)):
            self.batches_done = b + 1
            yield plan[b, lo:hi].tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])
        self._resume_skip = self.batches_done if self.batches_done < len(self) else 0

    def epoch_rng(self, epoch: int) -> np.random.Generator:
        """The epoch's random generator: the same on every rank."""
        return np.random.default_rng([self.seed, epoch])


SAMPLERS: Registry[PlannedBatchSampler] = Registry("sampler")
