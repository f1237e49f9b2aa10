"""`objective=composite`: a weighted sum of registered objectives.

Config::

    name: composite
    terms:
      contrastive: {weight: 1.0, name: hnnce, alpha: 1.0, beta1: 0.5}
      concepts:    {weight: 1.0, name: concepts, teacher: {name: efficientnet_lite0}}

Each term is an ordinary objective config (``name`` + options) plus an optional
``weight`` (default 1.0). ``L = sum_t weight_t * L_t``; every term's components are
logged as ``<term>/<component>`` along with ``<term>/loss``. A term with weight 0 is not
built at all (so ``objective.terms.concepts.weight=0`` removes concept distillation and
its heads; ``~objective.terms.concepts`` does the same). ``setup``, ``prepare_model`` and
``on_train_batch_end`` reach every term. Runtime context (the embedding size, the
student's image mean/std and encoder config) is passed on to the terms that accept it.

Every ``grad_share_every``-th training call (0 = never) each term's weighted gradient into
the local embeddings is measured (``torch.autograd.grad``, through the loss only, not the
towers) and logged as ``<term>/grad_norm`` and ``<term>/grad_share`` (its norm over the
sum of all terms' norms): a term whose share is a few percent barely acts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Opt


def embedding_grad_norms(
    losses: Mapping[str, torch.Tensor], features: GatheredFeatures
) -> dict[str, torch.Tensor]:
    """``||d loss / d (image, text)||`` of each loss over this rank's embeddings (detached).

    Under data parallelism every rank must call it at the same steps: the gather's
    backward is a collective.
    """
    inputs = [features.image, features.text]
    out = {}
    for key, loss in losses.items():
        squares = loss.new_zeros((), dtype=torch.float64)
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
            for g in grads:
                if g is not None:
                    squares = squares + (g.detach().double() ** 2).sum()
        out[key] = squares.sqrt().float()
    return out


@OBJECTIVES.register(
    "composite",
    schema={
        "terms": Opt(dict, each=Opt(registry=OBJECTIVES, fields={"weight": Opt(float, lo=0.0)})),
        "grad_share_every": Opt(int, lo=0),
    },
)
class CompositeObjective(Objective):
    """``sum_t weight_t * L_t`` over the configured terms (see the module docstring)."""

    def __init__(
        self,
        terms: Mapping[str, Mapping[str, Any]],
        grad_share_every: int = 50,
        embed_dim: int = 128,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        encoder_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("objective=composite needs at least one entry under objective.terms")
        if int(grad_share_every) < 0:
            raise ValueError(
                f"objective.grad_share_every must be an integer >= 0, got {grad_share_every}"
            )
        self.grad_share_every = int(grad_share_every)
        self._calls = 0
        context: dict[str, Any] = {"embed_dim": embed_dim}
        if image_mean is not None:
            context["image_mean"] = image_mean
        if image_std is not None:
            context["image_std"] = image_std
        if encoder_config is not None:
            context["encoder_config"] = encoder_config
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for key, term_cfg in terms.items():
            if not isinstance(term_cfg, Mapping) or "name" not in term_cfg:
                raise ValueError(
                    f"objective.terms.{key} must be an objective config with a `name`, e.g. "
                    f"{{weight: 1.0, name: clip}}; got {term_cfg!r}"
                )
            cfg = dict(term_cfg)
            weight = float(cfg.pop("weight", 1.0))
            if weight < 0:
                raise ValueError(f"objective.terms.{key}.weight must be >= 0, got {weight}")
            if weight == 0:
                continue
            try:
                self.terms[key] = OBJECTIVES.build(cfg, **context)
            except TypeError as err:
                raise TypeError(f"objective.terms.{key}: {err}") from err
            self.weights[key] = weight
        if not self.terms:
            raise ValueError("objective=composite: every term has weight 0; nothing to train")

    def setup(self, train_set: Any, cache_dir: str | None = None) -> None:
        for term in self.terms.values():
            term.setup(train_set, cache_dir)  # type: ignore[operator]

    def prepare_model(self, model: nn.Module) -> None:
        for term in self.terms.values():
            term.prepare_model(model)  # type: ignore[operator]

    def on_train_batch_end(self, module: nn.Module) -> None:
        for term in self.terms.values():
            term.on_train_batch_end(module)  # type: ignore[operator]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return [
            g
            for term in self.terms.values()
            for g in term.param_groups(lr, weight_decay)  # type: ignore[operator]
        ]

    def _measure_grads(self, features: GatheredFeatures) -> bool:
        """Whether this call measures the terms' embedding gradients (and count the call)."""
        if not (self.training and torch.is_grad_enabled() and features.image.requires_grad):
            return False
        self._calls += 1
        every = self.grad_share_every
        # calls every, 2 * every, ...: the steps a logger writes when ``every`` is a multiple
        # of its interval (Lightning writes after batches n - 1, 2n - 1, ...)
        return every > 0 and len(self.terms) > 1 and self._calls % every == 0

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        total: torch.Tensor | None = None
        components: dict[str, torch.Tensor] = {}
        weighted_losses: dict[str, torch.Tensor] = {}
        for key, term in self.terms.items():
            out = term(features, logit_scale, batch, progress)
            weighted = self.weights[key] * out.loss
            weighted_losses[key] = weighted
            total = weighted if total is None else total + weighted
            components[f"{key}/loss"] = out.loss
            components.update({f"{key}/{name}": v for name, v in out.components.items()})
        assert total is not None
        if self._measure_grads(features):
            norms = embedding_grad_norms(weighted_losses, features)
            whole = sum(norms.values())
            for key, norm in norms.items():
                components[f"{key}/grad_norm"] = norm
                components[f"{key}/grad_share"] = norm / whole if whole > 0 else whole
        return ObjectiveOutput(total, components)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {w}" for k, w in self.weights.items())
