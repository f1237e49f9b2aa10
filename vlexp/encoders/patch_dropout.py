"""Patch dropout (FLIP): a ViT sees a random subset of its patch tokens while training.

FLIP (Li et al., 2023) drops 50-75 % of each image's patch tokens at random in every
training step, so a step costs a fraction of the image tower's compute; evaluation sees
every patch. :func:`set_patch_dropout` installs the module of the ViT's own library
(open_clip's ``PatchDropout``, timm's ``PatchDropout``) at the place the architecture
applies it (after the position embeddings, class token kept); any other image tower is
refused in one line, since it has no patch tokens to drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from vlexp.registry import Opt

# the share of patch tokens dropped per image in training (FLIP: 0.5 to 0.75)
PATCH_DROPOUT = Opt(
    float, lo=0.0, hi=1.0, open_hi=True, nullable=True, doc="a share in [0, 1) of patch tokens"
)

IMAGE_SECTION_DOC = (
    "a mapping of the image tower's options, where patch_dropout needs a tower that trains "
    "(one frozen whole runs in eval mode and drops no patch)"
)


def drops_only_while_training(section: Any) -> bool:
    """False for an ``encoder.image`` section setting ``patch_dropout`` on a tower frozen
    whole (the schema test of :data:`IMAGE_SECTION_DOC`)."""
    if not isinstance(section, Mapping) or not section.get("patch_dropout"):
        return True
    freeze, last_n = section.get("freeze"), section.get("last_n", 1)
    return not (freeze == "all" or (freeze == "last_n" and last_n == 0))


def set_patch_dropout(vit: nn.Module, prob: float | None, where: str) -> None:
    """Make ``vit`` drop the share ``prob`` of its patch tokens in training (``None``: leave it).

    ``vit`` is an open_clip or timm ``VisionTransformer``; ``0`` removes a patch dropout
    its config had. Raises ``ValueError`` (one line, naming ``where``) for other towers.
    """
    if prob is None:
        return
    prob = float(prob)
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"{where}={prob}: expected a share in [0, 1) of patch tokens")
    from open_clip.transformer import PatchDropout as OpenClipPatchDropout
    from open_clip.transformer import VisionTransformer as OpenClipViT
    from timm.layers import PatchDropout as TimmPatchDropout
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    if isinstance(vit, OpenClipViT):
        vit.patch_dropout = OpenClipPatchDropout(prob) if prob > 0 else nn.Identity()
    elif isinstance(vit, TimmViT):
        vit.patch_drop = (
            TimmPatchDropout(prob, num_prefix_tokens=vit.num_prefix_tokens)
            if prob > 0
            else nn.Identity()
        )
    else:
        raise ValueError(
            f"{where}={prob} needs a ViT image tower (patch tokens to drop); this one is "
            f"{type(vit).__name__}: remove {where} or pick a ViT"
        )


def has_patch_dropout(tower: nn.Module) -> bool:
    """True when ``tower`` holds a patch dropout that drops tokens in training."""
    from open_clip.transformer import PatchDropout as OpenClipPatchDropout
    from timm.layers import PatchDropout as TimmPatchDropout

    return any(
        isinstance(m, OpenClipPatchDropout | TimmPatchDropout) and m.prob > 0
        for m in tower.modules()
    )
