"""The training progress bar: Lightning's rich bar with an epoch total that is true.

Lightning writes ``Epoch 5/<max_epochs - 1>``, which reads ``Epoch 5/-2`` when training
is bounded by ``trainer.max_steps`` (``max_epochs=-1``). Here the last epoch is the one
in which the run actually stops: the smaller of ``max_epochs - 1`` and the epoch that
holds step ``max_steps``.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import RichProgressBar


def last_epoch(
    max_epochs: int | None, max_steps: int | None, batches_per_epoch: float
) -> int | None:
    """Index of the last epoch a run trains (0-based), or None when it is unbounded.

    ``max_epochs`` of None or below 0 and ``max_steps`` of None or below 1 mean "no limit";
    an infinite ``batches_per_epoch`` (a stream of unknown length) makes the step limit
    say nothing about epochs.
    """
    bounds: list[int] = []
    if max_epochs is not None and max_epochs >= 1:
        bounds.append(max_epochs - 1)
    finite = math.isfinite(batches_per_epoch) and batches_per_epoch >= 1
    if max_steps is not None and max_steps >= 1 and finite:
        bounds.append(math.ceil(max_steps / int(batches_per_epoch)) - 1)
    return min(bounds) if bounds else None


def epoch_description(current_epoch: int, last: int | None) -> str:
    """``Epoch <current>/<last>`` (0-based, Lightning's convention), or ``Epoch <current>``."""
    return f"Epoch {current_epoch}" if last is None else f"Epoch {current_epoch}/{last}"


def epoch_batches(epoch: int, max_steps: int | None, batches_per_epoch: float) -> float:
    """Batches epoch ``epoch`` trains: all of them, or fewer when ``max_steps`` ends it.

    Every epoch of a planned sampler has ``batches_per_epoch`` batches, so epoch ``e``
    starts at step ``e * batches_per_epoch`` whether or not the run was resumed.
    """
    if max_steps is None or max_steps < 1 or not math.isfinite(batches_per_epoch):
        return batches_per_epoch
    left = max_steps - epoch * int(batches_per_epoch)
    return max(0, min(int(batches_per_epoch), left))


class EpochProgressBar(RichProgressBar):
    """Rich progress bar whose epoch total follows ``max_steps`` as well as ``max_epochs``.

    The bar of a run resumed mid-epoch counts from the batch it resumed at, so its total
    is the epoch's last batch, not the steps left.
    """

    @property
    def total_train_batches(self) -> int | float:
        """Batches of the current epoch (see :func:`epoch_batches`)."""
        trainer = self.trainer
        return epoch_batches(trainer.current_epoch, trainer.max_steps, trainer.num_training_batches)

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        last = last_epoch(trainer.max_epochs, trainer.max_steps, trainer.num_training_batches)
        text = epoch_description(current_epoch, last)
        # as long as the "Validation" label, so the bar does not jump when it switches
        return f"{text:{len(self.validation_description)}}"
