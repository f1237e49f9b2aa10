"""The two-tower model interface shared by every encoder choice."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlexp.registry import Registry


class TwoTower(nn.Module):
    """Image tower + text tower + linear projections into one embedding space.

    ``image_tower(images) -> (B, D_img)`` and ``text_tower(input_ids, attention_mask) ->
    (B, D_txt)`` return pooled features; the projections map both to ``embed_dim``.
    ``encode_image`` / ``encode_text`` return L2-normalised embeddings (the interface
    zero-shot evaluation and CLIP_benchmark call). ``tokenize(list[str])`` returns the
    tensors ``encode_text`` takes. ``image_mean``/``image_std``/``image_size`` tell the
    data pipeline how to preprocess images for this image tower.
    ``pretrained_logit_bias`` is the logit bias of a sigmoid-loss checkpoint the towers
    were loaded from (None otherwise); ``objective=siglip`` starts from it.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        image_dim: int,
        text_dim: int,
        tokenizer: Any,
        *,
        embed_dim: int = 128,
        context_length: int = 32,
        image_size: int = 64,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=False)
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim
        self.context_length = context_length
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.max_logit_scale = max_logit_scale
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learn_temperature
        )
        self.pretrained_logit_bias: float | None = None

    def logit_scale(self) -> torch.Tensor:
        """``1 / tau``, clamped to ``max_logit_scale`` (as CLIP does)."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        # float32 pixels into a tower cast to bfloat16/float16/float64 (``*-true``)
        params = itertools.chain(self.image_proj.parameters(), self.image_tower.parameters())
        param = next(params, None)
        dtype = images.dtype if param is None else param.dtype
        if images.is_floating_point() and images.dtype != dtype:
            images = images.to(dtype)
        z = self.image_proj(self.image_tower(images))
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        z = self.text_proj(self.text_tower(input_ids, attention_mask))
        return F.normalize(z, dim=-1) if normalize else z

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded/truncated to ``context_length``."""
        out = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def freeze_summary(self) -> dict[str, int]:
        """Trainable and total parameter counts (for the run banner)."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params_total": total, "params_trainable": trainable}


class HFTextTower(nn.Module):
    """Wraps a Hugging Face encoder model; pools with the [CLS] token or a masked mean."""

    def __init__(self, model: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"encoder.text.pooling must be 'cls' or 'mean', got '{pooling}'")
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` last hidden states -> ``(B, D)`` by [CLS] or the masked mean."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


ENCODERS: Registry[TwoTower] = Registry("encoder")
