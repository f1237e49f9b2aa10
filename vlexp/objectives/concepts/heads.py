"""Concept heads on unit-norm embeddings, and how well they fit their teacher.

A plain ``nn.Linear`` on a unit-norm embedding starts with logits near 0 and, under the
shared learning rate and weight decay, stays within about +-1.5 for a few hundred steps:
it cannot reach a confident teacher, and its gradient into the embedding stays small.
:class:`ConceptHead` therefore scores ``s * <w_c, x> + b_c`` with a learnable scale ``s``
(initialised to ``scale``), a per-concept bias ``b_c`` and weight rows capped at unit norm
(longer rows are scaled back to 1 in the forward pass). The rows start at zero, so the
head starts uniform and sends no random gradient into the embedding; once a row reaches
unit norm it is a cosine classifier whose logits span +-``s``, and weight decay has
nothing useful to shrink. ``scale=None`` keeps the plain linear head.

:func:`head_fit` measures the fit: the loss minus the teacher's own entropy (the part
the head can still remove; 0 = the teacher reproduced) and the agreement with the
teacher's top concept (and, for multi-label teachers, with its yes/no per concept).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConceptHead(nn.Module):
    """``num_concepts`` logits from a ``dim``-d embedding: scaled, norm-capped rows + bias
    (or a plain linear layer when ``scale`` is None)."""

    def __init__(self, dim: int, num_concepts: int, scale: float | None = 10.0) -> None:
        super().__init__()
        self.in_features, self.out_features = dim, num_concepts
        self.scaled = scale is not None
        if scale is not None and scale <= 0:
            raise ValueError(f"objective.head_scale must be > 0 or null, got {scale}")
        if self.scaled:
            self.weight = nn.Parameter(torch.zeros(num_concepts, dim))
            self.bias = nn.Parameter(torch.zeros(num_concepts))
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        else:
            self.linear = nn.Linear(dim, num_concepts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.scaled:
            return self.linear(x)
        w = self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1.0)
        return self.log_scale.exp() * (x @ w.T) + self.bias

    def scale(self) -> float:
        """The current logit scale (1.0 for the plain linear head)."""
        return float(self.log_scale.detach().exp()) if self.scaled else 1.0


def teacher_entropy(targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Mean per row of the targets' entropy: summed binary entropies, or the softmax's."""
    p = targets.float()
    h = -torch.xlogy(p, p)
    if multilabel:
        h = h - torch.xlogy(1 - p, 1 - p)
    return h.sum(1).mean()


@torch.no_grad()
def head_fit(
    logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor, loss_name: str
) -> dict[str, torch.Tensor]:
    """Diagnostics of one head on one batch (detached scalars).

    ``excess``: the loss above its floor (``kl`` already is; ``soft_ce`` and ``bce`` minus
    the teacher's entropy); ``top1``: share of rows whose best concept is one the teacher
    ranks first (ties count); ``labels`` (``bce`` only): share of (row, concept) decisions
    at probability 0.5 that match the teacher's.
    """
    floor = 0.0 if loss_name == "kl" else teacher_entropy(targets, loss_name == "bce")
    best = targets.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
    out = {
        "excess": loss.detach() - floor,
        "top1": (best >= targets.max(1).values).float().mean(),
    }
    if loss_name == "bce":
        out["labels"] = ((logits > 0) == (targets > 0.5)).float().mean()
    return out
