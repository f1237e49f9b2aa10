"""Uniform random minibatches (the CLIP baseline)."""

from __future__ import annotations

import numpy as np

from vlexp.samplers.base import SAMPLERS, PlannedBatchSampler


@SAMPLERS.register("random", schema={})
class RandomBatchSampler(PlannedBatchSampler):
    """A fresh permutation per epoch, cut into global batches (the remainder is dropped)."""

    def plan_epoch(self, epoch: int) -> np.ndarray:
        n = self.batches_per_epoch() * self.global_batch_size
        perm = self.epoch_rng(epoch).permutation(self.num_samples)[:n]
        return perm.reshape(-1, self.global_batch_size)
