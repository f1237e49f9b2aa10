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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Opt


@OBJECTIVES.register(
    "composite",
    schema={
        "terms": Opt(dict, each=Opt(registry=OBJECTIVES, fields={"weight": Opt(float, lo=0.0)}))
    },
)
class CompositeObjective(Objective):
    """``sum_t weight_t * L_t`` over the configured terms (see the module docstring)."""

    def __init__(
        self,
        terms: Mapping[str, Mapping[str, Any]],
        embed_dim: int = 128,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        encoder_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("objective=composite needs at least one entry under objective.terms")
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

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        total: torch.Tensor | None = None
        components: dict[str, torch.Tensor] = {}
        for key, term in self.terms.items():
            out = term(features, logit_scale, batch, progress)
            weighted = self.weights[key] * out.loss
            total = weighted if total is None else total + weighted
            components[f"{key}/loss"] = out.loss
            components.update({f"{key}/{name}": v for name, v in out.components.items()})
        assert total is not None
        return ObjectiveOutput(total, components)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {w}" for k, w in self.weights.items())
