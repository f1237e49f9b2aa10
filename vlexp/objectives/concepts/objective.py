"""`objective=concepts`: concept distillation from a frozen image teacher (DiHT).

A frozen teacher (:mod:`~vlexp.objectives.concepts.teachers`) scores a concept vocabulary
for every training image; heads on the student's normalised embeddings
(:mod:`~vlexp.objectives.concepts.heads`: a learnable scaled cosine plus bias, with their
own learning rate) learn those scores with KL, soft cross-entropy or BCE, and log their
fit to the teacher every step. Targets are cached per sample
(:mod:`~vlexp.objectives.concepts.targets`). Usable alone or as a term of
``objective=composite`` (``objective=diht`` is HN-NCE + this). Target and loss formulas:
docs/DESIGN.md ("Concept distillation").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.concepts.heads import ConceptHead, head_fit
from vlexp.objectives.concepts.targets import (
    LazyTargets,
    TargetStore,
    open_targets,
)
from vlexp.objectives.concepts.teachers import ImageTeacher, build_teacher
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Opt

log = logging.getLogger(__name__)

LOSSES = ("auto", "kl", "soft_ce", "bce")


# --------------------------------------------------------------------------- targets
def teacher_targets(
    logits: torch.Tensor, multilabel: bool, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """Target probabilities ``(B, C)`` from teacher logits (see the module docstring)."""
    z = logits.float() / temperature
    keep = None
    if top_k is not None and 0 < top_k < z.shape[1]:
        keep = torch.zeros_like(z, dtype=torch.bool)
        keep.scatter_(1, z.topk(top_k, dim=1).indices, True)
    if multilabel:
        p = torch.sigmoid(z)
        return p if keep is None else p * keep
    if keep is not None:
        z = z.masked_fill(~keep, float("-inf"))
    return torch.softmax(z, dim=1)


def distillation_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, loss: str
) -> torch.Tensor:
    """Mean over rows of the chosen loss between student logits and target probabilities."""
    if loss == "bce":
        return (
            F.binary_cross_entropy_with_logits(student_logits.float(), targets, reduction="none")
            .sum(1)
            .mean()
        )
    log_q = torch.log_softmax(student_logits.float(), dim=1)
    if loss == "soft_ce":
        return -(targets * log_q).sum(1).mean()
    if loss == "kl":
        return (torch.xlogy(targets, targets) - targets * log_q).sum(1).mean()
    raise ValueError(f"objective.loss must be one of {LOSSES}, got {loss!r}")


# --------------------------------------------------------------------------- objective
@OBJECTIVES.register(
    "concepts",
    schema={
        "teacher": Opt(
            dict,
            nullable=True,
            fields={
                "name": Opt(str),
                "weights": Opt(str, nullable=True),
                "concepts": Opt((str, list), nullable=True),
                "input_size": Opt(int, lo=1, nullable=True),
                "multilabel": Opt(bool, nullable=True),
                "build_if_missing": Opt(bool),
            },
        ),
        "loss": Opt(choices=LOSSES),
        "temperature": Opt(float, lo=0.0, open_lo=True),
        "top_k": Opt(int, lo=1, nullable=True),
        "image_weight": Opt(float, lo=0.0),
        "text_weight": Opt(float, lo=0.0),
        "head_scale": Opt(float, lo=0.0, open_lo=True, nullable=True),
        "head_lr_scale": Opt(float, lo=0.0, open_lo=True),
        "head_weight_decay": Opt(float, lo=0.0, nullable=True),
        "on_the_fly": Opt(bool),
        "precompute": Opt(bool),
        "store_topk": Opt(int, lo=1, nullable=True),
        "batch_size": Opt(int, lo=1),
        "num_workers": Opt(int, lo=0),
        "device": Opt(str, nullable=True),
        "progress": Opt(bool),
    },
)
class ConceptDistillation(Objective):
    """Linear concept heads on the student's embeddings trained to match a frozen teacher.

    Options (defaults are our choices; DiHT's are not verified):

    - ``teacher``: ``{name, weights, concepts, input_size, multilabel, build_if_missing}`` for
      :func:`vlexp.objectives.concepts.teachers.build_teacher` (default: packaged EfficientNet-Lite0);
    - ``loss``: ``auto`` | ``kl`` | ``soft_ce`` | ``bce``; ``temperature`` (teacher, 1.0);
      ``top_k`` (targets restricted to the teacher's k best concepts; null = all);
    - ``image_weight`` (1.0) and ``text_weight`` (0.0: no text head) weigh the two heads;
    - ``head_scale`` (10.0): initial logit scale of the heads' learnable scaled cosine
      (:class:`~vlexp.objectives.concepts.heads.ConceptHead`; null = plain linear head);
      ``head_lr_scale`` (10.0): the heads' learning rate as a multiple of ``optim.lr``;
      ``head_weight_decay`` (0.0; null = ``optim.weight_decay``) for the heads' weights;
    - ``on_the_fly`` (false): teacher on each batch's augmented images, no cache;
      ``precompute`` (false): fill the cache for the whole training set before training
      (otherwise each step computes only its batch's missing rows);
      ``store_topk`` (null): cache only each image's top-k logits (for huge datasets);
      ``batch_size``/``num_workers``/``device``/``progress`` for the precompute pass.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        teacher: Mapping[str, Any] | None = None,
        loss: str = "auto",
        temperature: float = 1.0,
        top_k: int | None = None,
        image_weight: float = 1.0,
        text_weight: float = 0.0,
        head_scale: float | None = 10.0,
        head_lr_scale: float = 10.0,
        head_weight_decay: float | None = 0.0,
        on_the_fly: bool = False,
        precompute: bool = False,
        store_topk: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        device: str | None = None,
        progress: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"objective.loss must be one of {LOSSES}, got {loss!r}")
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"objective.top_k must be >= 1 or null, got {top_k}")
        if image_weight < 0 or text_weight < 0 or image_weight + text_weight == 0:
            raise ValueError("objective.image_weight and text_weight must be >= 0, not both 0")
        tcfg = dict(teacher or {})
        tcfg.pop("_target_", None)
        # an ImageTeacher is not an nn.Module: it stays out of the module tree (frozen,
        # never checkpointed, moved to the batch's device on demand)
        self.teacher: ImageTeacher = build_teacher(**tcfg)
        n = self.teacher.num_concepts
        self.loss_name = ("bce" if self.teacher.multilabel else "kl") if loss == "auto" else loss
        self.temperature = float(temperature)
        self.top_k = top_k
        self.image_weight = float(image_weight)
        self.text_weight = float(text_weight)
        if head_lr_scale <= 0:
            raise ValueError(f"objective.head_lr_scale must be > 0, got {head_lr_scale}")
        if head_weight_decay is not None and head_weight_decay < 0:
            raise ValueError(
                f"objective.head_weight_decay must be >= 0 or null, got {head_weight_decay}"
            )
        self.head_lr_scale = float(head_lr_scale)
        self.head_weight_decay = head_weight_decay
        self.image_head = ConceptHead(embed_dim, n, head_scale) if image_weight > 0 else None
        self.text_head = ConceptHead(embed_dim, n, head_scale) if text_weight > 0 else None
        self.on_the_fly = bool(on_the_fly)
        self.precompute = bool(precompute)
        self.store_topk = store_topk
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.precompute_device = device
        self.progress = bool(progress)
        self.student_mean = tuple(image_mean) if image_mean is not None else (0.5, 0.5, 0.5)
        self.student_std = tuple(image_std) if image_std is not None else (0.5, 0.5, 0.5)
        self.targets: LazyTargets | TargetStore | None = None
        self.cache_path: Path | None = None

    @property
    def concept_names(self) -> list[str]:
        return self.teacher.concept_names

    def setup(self, train_set: Any, cache_dir: str | None = None) -> None:
        """Open the teacher-target cache of ``train_set`` (nothing computed unless
        ``precompute``: then every missing row now). No-op when ``on_the_fly``."""
        if self.on_the_fly:
            return
        self.targets = open_targets(
            self.teacher, train_set, cache_dir, self.store_topk, self.batch_size, self.num_workers
        )
        self.cache_path = self.targets.directory
        if self.precompute:
            device = self.precompute_device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.teacher.to(device)
            try:
                self.targets.precompute(self.progress)
            finally:
                self.teacher.to("cpu")

    def set_targets(self, logits: torch.Tensor | np.ndarray) -> None:
        """Use given teacher logits ``(N, C)`` (row ``i`` = training pair ``i``)."""
        self.targets = TargetStore.from_logits(logits, self.store_topk)

    def teacher_logits(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        """Teacher logits of this batch's pairs, from the cache or the batch images."""
        if self.on_the_fly:
            if "image" not in batch:
                raise KeyError("concept distillation on the fly needs batch['image']")
            if self.teacher.device != device:
                self.teacher.to(device)
            return self.teacher.logits_from_student(
                batch["image"], self.student_mean, self.student_std
            )
        if self.targets is None:
            raise RuntimeError(
                "concept distillation targets are not prepared: call objective.setup(train_set, "
                "cache_dir) before training (vlexp.train.run does), or set objective.on_the_fly=true"
            )
        if "index" not in batch:
            raise KeyError("concept distillation needs batch['index'] (rows of the training set)")
        return self.targets.lookup(torch.as_tensor(batch["index"]), device)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The heads' optimiser groups: ``head_lr_scale * lr``; their weight matrices get
        ``head_weight_decay`` (null: ``weight_decay``), biases and scales none."""
        heads = [h for h in (self.image_head, self.text_head) if h is not None]
        decay = [p for h in heads for p in h.parameters() if p.ndim >= 2]
        rest = [p for h in heads for p in h.parameters() if p.ndim < 2]
        wd = weight_decay if self.head_weight_decay is None else self.head_weight_decay
        head_lr = lr * self.head_lr_scale
        return [
            {"params": decay, "lr": head_lr, "weight_decay": float(wd)},
            {"params": rest, "lr": head_lr, "weight_decay": 0.0},
        ]

    def teacher_work(self) -> dict[str, int]:
        """How much teacher work this process did (calls, rows); for logs and tests."""
        t = self.targets
        if isinstance(t, LazyTargets):
            return {"teacher_calls": t.teacher_calls, "rows_computed": t.rows_computed}
        return {"teacher_calls": 0, "rows_computed": 0}

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        device = features.image.device
        targets = teacher_targets(
            self.teacher_logits(batch, device),
            self.teacher.multilabel,
            self.temperature,
            self.top_k,
        )
        loss = features.image.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for side, head, weight, emb in (
            ("image", self.image_head, self.image_weight, features.image),
            ("text", self.text_head, self.text_weight, features.text),
        ):
            if head is None:
                continue
            logits = head(emb)
            term = distillation_loss(logits, targets, self.loss_name)
            loss = loss + weight * term
            parts[f"loss_{side}"] = term
            fit = head_fit(logits, targets, term, self.loss_name)
            parts.update({f"{name}_{side}": v for name, v in fit.items()})
            parts[f"scale_{side}"] = torch.tensor(head.scale())
        return ObjectiveOutput(loss, parts)

    def extra_repr(self) -> str:
        return (
            f"teacher={self.teacher.identity.get('name')}, concepts={self.teacher.num_concepts}, "
            f"loss={self.loss_name}, T={self.temperature}, top_k={self.top_k}, "
            f"head_lr_scale={self.head_lr_scale}, on_the_fly={self.on_the_fly}"
        )
