"""Gather embeddings across ranks with gradients (the 'local loss' layout).

Each rank keeps its own rows and sees every rank's columns: logits are
``B_local x B_global`` and the positives of local row ``i`` sit at column
``offset + i``. Gradients flowing into gathered copies are routed back to the rank
that owns them, so the summed gradient equals that of one process holding the
whole batch. The columns are gathered on first access, so an objective that never
reads them (SigLIP, which passes chunks around the ring with :func:`ring_shift`
instead) costs no gather.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GatheredFeatures:
    """Local and gathered embeddings of one training step.

    ``image``/``text`` are this rank's ``(B_local, D)`` rows; ``image_all``/``text_all``
    the ``(B_global, D)`` columns of every rank, given or else all-gathered (with
    gradients) when first read. Every rank must read them in the same order, as the
    built-in objectives do (unconditionally).
    """

    def __init__(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_all: torch.Tensor | None = None,
        text_all: torch.Tensor | None = None,
        offset: int = 0,
        world_size: int = 1,
    ) -> None:
        self.image, self.text = image, text
        self.offset, self.world_size = int(offset), int(world_size)
        if world_size == 1:
            image_all = image if image_all is None else image_all
            text_all = text if text_all is None else text_all
        self._image_all, self._text_all = image_all, text_all

    @property
    def image_all(self) -> torch.Tensor:
        """Every rank's image embeddings ``(B_global, D)``, rank ``r``'s rows at ``r * B_local``."""
        if self._image_all is None:
            self._image_all = _AllGatherWithGrad.apply(self.image)
        return self._image_all

    @property
    def text_all(self) -> torch.Tensor:
        """Every rank's text embeddings ``(B_global, D)``, rank ``r``'s rows at ``r * B_local``."""
        if self._text_all is None:
            self._text_all = _AllGatherWithGrad.apply(self.text)
        return self._text_all

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
    rank = dist.get_rank()
    return GatheredFeatures(
        image, text, offset=rank * image.shape[0], world_size=dist.get_world_size()
    )


def _exchange(x: torch.Tensor, send_to: int, recv_from: int) -> torch.Tensor:
    """Send ``x`` to rank ``send_to`` while receiving a tensor like it from ``recv_from``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    ops = [dist.P2POp(dist.isend, x, send_to), dist.P2POp(dist.irecv, out, recv_from)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return out


class _RingShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.next, ctx.prev = (rank + 1) % world, (rank - 1) % world
        return _exchange(x, ctx.next, ctx.prev)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # the gradient of what came from the previous rank goes back to it; the gradient
        # of what this rank sent arrives from the next one
        return _exchange(grad, ctx.prev, ctx.next)


def ring_shift(x: torch.Tensor) -> torch.Tensor:
    """``x`` of the previous rank (``rank - 1`` mod world), with gradients sent back to it.

    Every rank sends its ``x`` to the next rank at once (point to point, nothing
    gathered); ``k`` successive shifts hand each rank the tensor of rank ``rank - k``.
    All ranks must call it together with same-shaped tensors.
    """
    return _RingShift.apply(x)
