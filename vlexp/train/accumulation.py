"""Gradient accumulation that keeps every negative (``optim.accum_freq=k``).

The batch is cut into ``k`` micro-batches for the towers only: their embeddings are
computed without activations, the objective sees the whole batch once, and in backward
each micro-batch is re-encoded (non-reentrant checkpointing, RNG and autocast restored)
and receives its slice of the loss gradient. The parameter gradient is the full batch's;
the price is a second forward of the towers. How it differs from open_clip's
``--accum-freq`` and from Lightning's ``accumulate_grad_batches``: docs/DESIGN.md.
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
