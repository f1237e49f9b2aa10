"""Image transforms and batch collation (tokenisation happens here, in loader workers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision import transforms as T


def image_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    crop_scale: Sequence[float] = (0.9, 1.0),
) -> Callable:
    """Train: random resized crop (no flips: they would falsify 'left of' captions).
    Eval: resize + centre crop. Both end with tensor conversion and normalisation."""
    if train:
        geo = [
            T.RandomResizedCrop(
                image_size, scale=tuple(crop_scale), ratio=(0.9, 1.1), antialias=True
            )
        ]
    else:
        geo = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    return T.Compose([*geo, T.ToTensor(), T.Normalize(mean, std)])


class PairCollator:
    """Turns a list of pair items into the batch dict every objective sees.

    Keys: ``image`` (B,3,H,W) float, ``input_ids``/``attention_mask`` (B,L), ``index`` (B,),
    ``label`` (B,), ``tags`` (B,T) padded with -1.
    """

    def __init__(
        self, transform: Callable, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]
    ):
        self.transform = transform
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([self.transform(it["image"]) for it in items])
        tokens = self.tokenize([it["caption"] for it in items])
        max_tags = max([len(it.get("tags", ())) for it in items] + [1])
        tags = torch.full((len(items), max_tags), -1, dtype=torch.long)
        for i, it in enumerate(items):
            t = list(it.get("tags", ()))
            if t:
                tags[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return {
            "image": images,
            **tokens,
            "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long),
            "label": torch.as_tensor([it.get("label", -1) for it in items], dtype=torch.long),
            "tags": tags,
        }


class ImageCollator:
    """Collates evaluation images: ``image``, ``label`` and ``index`` (position in the set)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "image": torch.stack([self.transform(it["image"]) for it in items]),
            "label": torch.as_tensor([it.get("label", -1) for it in items], dtype=torch.long),
            "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long),
        }
