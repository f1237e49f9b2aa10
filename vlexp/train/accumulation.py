"""Gradient accumulation that keeps every negative (``optim.accum_freq=k``).

Plain accumulation (Lightning's ``accumulate_grad_batches``) computes the contrastive
loss per micro-batch, so each row only sees the negatives of its own micro-batch. Here the
batch is cut into ``k`` micro-batches only for the *towers*; the objective still sees the
whole batch, once per optimiser step:

1. each micro-batch's embeddings are computed without keeping activations (only the
   embeddings, ``B x D`` per modality, are kept);
2. the embeddings are concatenated, gathered across ranks and handed to the objective
   with the whole batch, exactly as without accumulation (one call, one loss);
3. in the backward pass, each micro-batch is encoded again *with* activations, one at a
   time, and its slice of the loss gradient is pushed through its towers; parameter
   gradients add up across micro-batches.

The parameter gradient is the full batch's (up to float rounding of the smaller
matrix products), including the logit scale and parameters the objective owns (concept
heads), which enter the loss once. Peak activation memory is one micro-batch's towers
plus the ``B_local x B_global`` loss; the price is a second forward pass of the towers.

Steps 1 and 3 are :func:`torch.utils.checkpoint.checkpoint` per micro-batch (the
non-reentrant variant): it restores the CPU and CUDA random-number state and the autocast
state before recomputing, so dropout masks and random layers give the same output in both
passes, and Lightning's automatic optimisation (logging, clipping, precision plugins,
gradient scaler, LR schedule, DDP) is unchanged.

Same numbers as open_clip's ``--accum-freq`` for the towers, with two differences: the
loss is computed once instead of once per micro-batch, and parameters that enter the
loss directly (the logit scale) receive their gradient once, not ``k`` times.
Normalisation layers that use batch statistics (BatchNorm) see micro-batches, and
update their running statistics in both passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from vlexp.encoders.base import TwoTower


def micro_batch_bounds(batch_size: int, accum_freq: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each micro-batch: ``min(accum_freq, batch_size)`` near-equal parts."""
    if accum_freq < 1:
        raise ValueError(f"optim.accum_freq must be >= 1, got {accum_freq}")
    parts = max(1, min(accum_freq, batch_size))
    base, extra = divmod(batch_size, parts)
    bounds, start = [], 0
    for j in range(parts):
        stop = start + base + (1 if j < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _encode_pair(
    model: TwoTower,
    image: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_image(image), model.encode_text(input_ids, attention_mask)


def encode_accumulated(
    model: TwoTower, batch: dict[str, Any], accum_freq: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of the whole batch, computed micro-batch by micro-batch (see module doc).

    Returns L2-normalised image and text embeddings ``(B, D)`` that carry gradients to
    the towers; backpropagating through them recomputes one micro-batch at a time. With
    ``accum_freq=1`` (or outside autograd) the towers run once on the whole batch.
    """
    image, ids = batch["image"], batch["input_ids"]
    mask = batch.get("attention_mask")
    bounds = micro_batch_bounds(int(image.shape[0]), accum_freq)
    if len(bounds) == 1 or not torch.is_grad_enabled():
        return _encode_pair(model, image, ids, mask)
    images, texts = [], []
    for start, stop in bounds:
        part_mask = None if mask is None else mask[start:stop]
        img, txt = checkpoint(
            _encode_pair,
            model,
            image[start:stop],
            ids[start:stop],
            part_mask,
            use_reentrant=False,
            preserve_rng_state=True,
        )
        images.append(img)
        texts.append(txt)
    return torch.cat(images), torch.cat(texts)
