"""Batch samplers: which dataset indices form each rank's minibatches."""

from vlexp.samplers.base import SAMPLERS, PlannedBatchSampler

__all__ = ["SAMPLERS", "PlannedBatchSampler"]

from vlexp.samplers import random, tonics  # noqa: E402,F401  (registration)
