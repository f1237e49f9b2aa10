"""`objective=hnnce`: hard-negative noise-contrastive estimation (DiHT, arXiv 2301.02280).

For a row ``i`` with positive column ``p`` and similarities ``s_ij`` (already multiplied
by the logit scale ``1 / tau``)::

    L_i = -log( e^{s_ip} / (alpha e^{s_ip} + sum_{j != p} w_ij e^{s_ij}) )
    w_ij = (N - 1) e^{beta s_ij} / sum_{k != p} e^{beta s_ik}

over the ``N - 1`` negatives of the row, so the weights of the negatives average to 1:
similar (hard) negatives are up-weighted while the total negative mass is kept.
``alpha = 1, beta = 0`` is exactly InfoNCE. The image->text direction uses ``beta1``,
text->image ``beta2``.

Distributed runs use the local-loss layout of :mod:`vlexp.objectives.distributed`: each
rank holds ``B_local`` rows against all ``N = B_global`` gathered columns, so the weights
of a row are normalised over every gathered negative (``B_global - 1`` of them), exactly
as in one process holding the whole batch.

The weights are differentiated through by default (the formula as written, as the
independent reimplementations we checked do); ``detach_weights=true`` treats them as
constants instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.clip import local_logits
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Opt


def _positive_mask(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, N)`` mask that is True at each row's positive column."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(logits.shape[0], device=logits.device), positives] = True
    return mask


def hnnce_weights(logits: torch.Tensor, positives: torch.Tensor, beta: float) -> torch.Tensor:
    """Importance weights ``w_ij`` of the negatives of each row (0 at the positive).

    ``logits`` is ``(B, N)`` (similarities times the logit scale), ``positives[i]`` the
    column of row ``i``'s positive. Each row's ``N - 1`` negative weights average to 1.
    """
    n = logits.shape[1]
    if n < 2:
        raise ValueError("HN-NCE needs at least 2 pairs in the (global) batch to have negatives")
    pos = _positive_mask(logits, positives)
    scores = (beta * logits.float()).masked_fill(pos, float("-inf"))
    return (n - 1) * torch.softmax(scores, dim=1)


def hnnce_direction(
    logits: torch.Tensor,
    positives: torch.Tensor,
    alpha: float,
    beta: float,
    detach_weights: bool = False,
) -> torch.Tensor:
    """HN-NCE of one direction, mean over the rows of ``logits`` ``(B, N)``.

    Computed in log space: ``log sum_{j != p} w_ij e^{s_ij} = log(N - 1) +
    LSE_{j != p}((1 + beta) s_ij) - LSE_{j != p}(beta s_ij)``, then combined with the
    positive term ``log(alpha) + s_ip`` by ``logaddexp``.
    """
    n = logits.shape[1]
    if n < 2:
        raise ValueError("HN-NCE needs at least 2 pairs in the (global) batch to have negatives")
    if alpha < 0:
        raise ValueError(f"HN-NCE alpha must be >= 0, got {alpha}")
    s = logits.float()
    pos_mask = _positive_mask(s, positives)
    s_pos = s.gather(1, positives[:, None]).squeeze(1)

    def masked(x: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(pos_mask, float("-inf"))

    if beta == 0.0:
        log_neg = torch.logsumexp(masked(s), dim=1)  # the weights are all exactly 1
    else:
        log_norm = torch.logsumexp(masked(beta * s), dim=1) - math.log(n - 1)
        if detach_weights:
            log_norm = log_norm.detach()
            log_weighted = torch.logsumexp(masked(s + (beta * s).detach()), dim=1)
        else:
            log_weighted = torch.logsumexp(masked((1.0 + beta) * s), dim=1)
        log_neg = log_weighted - log_norm
    if alpha == 0.0:
        log_den = log_neg
    else:
        log_den = torch.logaddexp(s_pos + math.log(alpha), log_neg)
    return (log_den - s_pos).mean()


@OBJECTIVES.register(
    "hnnce",
    schema={
        "alpha": Opt(float, lo=0.0),
        "beta1": Opt(float),  # < 0 is allowed: it moves weight away from hard negatives
        "beta2": Opt(float, nullable=True),
        "reduction": Opt(choices=("mean", "sum")),
        "detach_weights": Opt(bool),
    },
)
class HNNCEObjective(Objective):
    """HN-NCE in both directions; ``L = (L_i2t + L_t2i) / 2`` (``reduction=mean``).

    ``reduction=sum`` gives ``L_i2t + L_t2i``, the public formulation (twice CLIP's scale).
    Alone, the two differ by a constant factor, which Adam's update normalisation cancels
    (up to its ``eps`` and gradient clipping), so
    ``objective=hnnce`` keeps ``mean`` (CLIP's scale, equal to ``objective=clip`` at
    ``alpha=1, beta=0``). Next to another term the factor is a relative weight:
    ``objective=diht`` uses ``sum``, so HN-NCE and concept distillation are weighted as in
    ``L = L_i2t + L_t2i + w L_concepts``. ``beta2`` defaults to ``beta1``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta1: float = 0.5,
        beta2: float | None = None,
        reduction: str = "mean",
        detach_weights: bool = False,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"objective.reduction must be 'mean' or 'sum', got {reduction!r}")
        if alpha < 0:
            raise ValueError(f"objective.alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.beta1 = float(beta1)
        self.beta2 = float(beta1 if beta2 is None else beta2)
        self.reduction = reduction
        self.detach_weights = bool(detach_weights)

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        logits_i2t, logits_t2i = local_logits(features, logit_scale)
        labels = features.labels
        l_i2t = hnnce_direction(logits_i2t, labels, self.alpha, self.beta1, self.detach_weights)
        l_t2i = hnnce_direction(logits_t2i, labels, self.alpha, self.beta2, self.detach_weights)
        loss = l_i2t + l_t2i
        if self.reduction == "mean":
            loss = 0.5 * loss
        return ObjectiveOutput(loss, {"loss_i2t": l_i2t, "loss_t2i": l_t2i})

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta1={self.beta1}, beta2={self.beta2}, "
            f"reduction={self.reduction}, detach_weights={self.detach_weights}"
        )
