"""Gather embeddings across ranks with gradients (the 'local loss' layout).

Each rank keeps its own rows and sees every rank's columns: logits are
``B_local x B_global`` and the positives of local row ``i`` sit at column
``offset + i``. Gradients flowing into gathered copies are routed back to the rank
that owns them, so the summed gradient equals that of one process holding the
whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class GatheredFeatures:
    """Local and gathered embeddings of one training step."""

    image: torch.Tensor  # (B_local, D)
    text: torch.Tensor  # (B_local, D)
    image_all: torch.Tensor  # (B_global, D)
    text_all: torch.Tensor  # (B_global, D)
    offset: int  # global index of local row 0
    world_size: int = 1

    @property
    def labels(self) -> torch.Tensor:
        """Global column of each local row's positive."""
        return torch.arange(self.image.shape[0], device=self.image.device) + self.offset


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_features(
    image: torch.Tensor, text: torch.Tensor, dtype: torch.dtype | None = None
) -> GatheredFeatures:
    """Gather both modalities from every rank (identity outside distributed runs).

    All ranks must hold the same local batch size (the samplers guarantee it). With
    ``dtype`` both modalities are cast first (differentiably), so the local rows and the
    gathered columns hold the very same numbers in one dtype whatever precision the
    towers ran in (mixed precision may hand back bfloat16 from one tower and float32
    from the other).

    The backward all-reduce sums, for each rank's features, the gradients of every
    rank's local loss. Each local loss is a mean over local rows, so the ranks' losses
    sum to ``world_size`` times the full-batch loss, and DDP's averaging of parameter
    gradients over ranks gives exactly the single-process gradient.
    """
    if dtype is not None:
        image, text = image.to(dtype), text.to(dtype)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return GatheredFeatures(image, text, image, text, 0, 1)
    world, rank = dist.get_world_size(), dist.get_rank()
    image_all = _AllGatherWithGrad.apply(image)
    text_all = _AllGatherWithGrad.apply(text)
    return GatheredFeatures(image, text, image_all, text_all, rank * image.shape[0], world)
