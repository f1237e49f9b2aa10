"""`objective=siglip`: the pairwise sigmoid loss (Zhai et al., ICCV 2023, arXiv 2303.15343).

Every image-text pair of the batch is its own binary problem::

    L = -1/B sum_i sum_j log sigmoid( z_ij (t x_i . y_j + b) ),   z_ij = +1 if i == j else -1

summed over all texts per image and averaged over the images (open_clip's ``SigLipLoss``
normalisation). Both start at the paper's initialisation, ``t = exp(t')`` with
``t' = log 10`` and ``b = -10`` (``init_scale``, ``init_bias``). Where they live: ``t`` is
the model's logit scale (as for CLIP, so logging, few-shot probes and open_clip
checkpoints read it unchanged; clamped at ``encoder.max_logit_scale``); ``b`` is used by
this loss alone, so it is this objective's parameter (optimised and checkpointed with it,
taken from an open_clip checkpoint's ``logit_bias`` when the towers come with one).

Distributed, as in the paper: each rank scores its images against its own texts (the
positives), then passes text chunks around the ring (:func:`ring_shift`) and scores its
images against each other rank's chunk (negatives only): no ``B_global`` matrix, no
gather. Each block's loss recomputes its logits in backward, so a step holds one
``B_local x B_local`` block at a time.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures, ring_shift
from vlexp.registry import Opt

log = logging.getLogger("vlexp")

PAPER_INIT_SCALE = 10.0  # t = exp(t'), t' = log 10
PAPER_INIT_BIAS = -10.0


def _block_terms(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, diagonal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarities, logits and signs ``z`` of one block (``z = +1`` on the diagonal if asked)."""
    sim = image @ text.T
    logits = scale * sim + bias
    z = -torch.ones_like(logits)
    if diagonal:
        z.diagonal().fill_(1.0)
    return sim, logits, z


class _SigmoidBlockLoss(torch.autograd.Function):
    """``-sum log sigmoid(z (t X Y^T + b))`` of one block; backward recomputes the logits."""

    @staticmethod
    def forward(ctx, image, text, scale, bias, diagonal: bool):  # type: ignore[override]
        ctx.save_for_backward(image, text, scale, bias)
        ctx.diagonal = diagonal
        _, logits, z = _block_terms(image, text, scale, bias, diagonal)
        return -torch.nn.functional.logsigmoid(z * logits).sum()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        image, text, scale, bias = ctx.saved_tensors
        sim, logits, z = _block_terms(image, text, scale, bias, ctx.diagonal)
        # d/dl [-log sigmoid(z l)] = -z sigmoid(-z l)
        g = grad * (-z * torch.sigmoid(-z * logits))
        d_image = scale * (g @ text) if ctx.needs_input_grad[0] else None
        d_text = scale * (g.T @ image) if ctx.needs_input_grad[1] else None
        d_scale = (g * sim).sum().reshape(scale.shape) if ctx.needs_input_grad[2] else None
        d_bias = g.sum().reshape(bias.shape) if ctx.needs_input_grad[3] else None
        return d_image, d_text, d_scale, d_bias, None


def sigmoid_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    world_size: int = 1,
) -> torch.Tensor:
    """SigLIP loss of this rank's ``(B_local, D)`` image rows against every rank's texts.

    ``text`` is this rank's own texts (row ``i`` the positive of image ``i``); with
    ``world_size > 1`` the other ranks' texts arrive over the ring. Divided by
    ``B_local``: the ranks' losses average to the full-batch loss, and DDP's gradient
    average is the single-process gradient.
    """
    scale, bias = scale.to(image.dtype), bias.to(image.dtype)
    total = _SigmoidBlockLoss.apply(image, text, scale, bias, True)
    chunk = text
    for _ in range(world_size - 1):
        chunk = ring_shift(chunk)
        total = total + _SigmoidBlockLoss.apply(image, chunk, scale, bias, False)
    return total / image.shape[0]


@OBJECTIVES.register(
    "siglip",
    schema={
        "init_scale": Opt(float, lo=0.0, open_lo=True, nullable=True),
        "init_bias": Opt(float),
    },
    hooks={"checks": lambda opts, ctx: config_errors(opts, ctx.get("encoder"))},
)
class SigLipObjective(Objective):
    """Pairwise sigmoid loss with the model's logit scale and a learnable bias ``b``.

    ``init_scale`` sets the model's initial logit scale (replacing
    ``encoder.init_temperature``; null keeps it), ``init_bias`` the initial ``b``. A model
    loaded from a sigmoid-loss open_clip checkpoint keeps that checkpoint's scale and bias.
    """

    def __init__(
        self, init_scale: float | None = PAPER_INIT_SCALE, init_bias: float = PAPER_INIT_BIAS
    ) -> None:
        super().__init__()
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"objective.init_scale must be > 0 or null, got {init_scale}")
        self.init_scale = None if init_scale is None else float(init_scale)
        self.logit_bias = nn.Parameter(torch.tensor(float(init_bias)))

    def prepare_model(self, model: nn.Module) -> None:
        """Start the model's logit scale at ``init_scale``, or take a checkpoint's bias."""
        pretrained = getattr(model, "pretrained_logit_bias", None)
        with torch.no_grad():
            if pretrained is not None:
                self.logit_bias.fill_(float(pretrained))
                log.info(
                    "objective=siglip: logit scale %.4g and bias %.4g from the checkpoint",
                    float(model.logit_scale()),
                    float(pretrained),
                )
            elif self.init_scale is not None:
                model.log_logit_scale.fill_(math.log(self.init_scale))

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        loss = sigmoid_loss(
            features.image, features.text, logit_scale, self.logit_bias, features.world_size
        )
        return ObjectiveOutput(loss, {"logit_bias": self.logit_bias.detach()})

    def extra_repr(self) -> str:
        return f"init_scale={self.init_scale}"


def config_errors(cfg: Mapping[str, Any], encoder: Mapping[str, Any] | None) -> list[str]:
    """Why a siglip objective config cannot train with this encoder (empty if it can).

    An ``init_scale`` above ``encoder.max_logit_scale`` would start clamped, with no
    gradient reaching the scale.
    """
    defaults = {
        k: p.default
        for k, p in inspect.signature(SigLipObjective.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    scale = {**defaults, **dict(cfg)}.get("init_scale")
    cap = dict(encoder or {}).get("max_logit_scale")
    try:
        if scale is not None and cap is not None and float(scale) > float(cap):
            return [
                f"init_scale={scale} exceeds encoder.max_logit_scale={cap}, where the logit "
                "scale is clamped (no gradient); lower it or raise encoder.max_logit_scale"
            ]
    except (TypeError, ValueError):
        pass  # malformed values: the schema names them
    return []
