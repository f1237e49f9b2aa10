"""`encoder=open_clip`: open_clip's ViT and text transformer towers from a model config.

The config is the dict open_clip keeps in its ``model_configs/*.json`` (``embed_dim``,
``vision_cfg``, ``text_cfg``, ``quick_gelu``), so the same dict builds an open_clip
``CLIP`` (see ``benchmarks/bench_vs_open_clip.py``) and this two-tower model: same
layers, same widths, same parameter count. open_clip's own output projections are
removed and :class:`TwoTower`'s bias-free linear projections take their place (the same
``width x embed_dim`` matrices). Random init only; the BPE tokenizer ships inside the
``open_clip_torch`` wheel, so nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlexp.encoders.base import ENCODERS, TwoTower

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenClipTokenizer:
    """open_clip's ``SimpleTokenizer`` behind the call signature :class:`TwoTower` uses.

    Returns ``input_ids`` (padded with 0 to ``max_length``) and an ``attention_mask`` of
    the non-padding positions; open_clip's text tower itself only reads ``input_ids``
    (causal mask, pooled at the end-of-text token).
    """

    def __init__(self, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.inner = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.vocab_size = len(self.inner.encoder)

    def __call__(
        self, texts: list[str], max_length: int | None = None, **_: Any
    ) -> dict[str, torch.Tensor]:
        ids = self.inner(list(texts), context_length=max_length or self.context_length)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


class OpenClipTextTower(nn.Module):
    """open_clip ``TextTransformer`` without its projection: ``(ids, mask) -> (B, width)``."""

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        self.text = text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the transformer blocks (open_clip's switch)."""
        self.text.set_grad_checkpointing(enable)


def tiny_open_clip_config(
    embed_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 96,
    vision_layers: int = 4,
    vision_head_width: int = 24,
    text_width: int = 96,
    text_layers: int = 2,
    text_heads: int = 4,
    context_length: int = 32,
    mlp_ratio: float = 2.0,
) -> dict[str, Any]:
    """An open_clip model-config dict sized like ``encoder=tiny`` (the benchmark's model)."""
    return {
        "embed_dim": embed_dim,
        "quick_gelu": False,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": vision_width,
            "layers": vision_layers,
            "head_width": vision_head_width,
            "mlp_ratio": mlp_ratio,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
            "mlp_ratio": mlp_ratio,
        },
    }


@ENCODERS.register("open_clip")
def open_clip_two_tower(
    model_cfg: dict[str, Any] | None = None,
    init_temperature: float = 0.07,
    max_logit_scale: float = 100.0,
    learn_temperature: bool = True,
    image_mean: tuple[float, float, float] = OPENAI_MEAN,
    image_std: tuple[float, float, float] = OPENAI_STD,
) -> TwoTower:
    """Two towers from an open_clip model config (``None``: :func:`tiny_open_clip_config`)."""
    from open_clip.model import CustomTextCLIP

    cfg = dict(model_cfg or tiny_open_clip_config())
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise ValueError(f"encoder.model_cfg needs '{key}' (an open_clip model config dict)")
    vision_cfg, text_cfg = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
    if vision_cfg.get("timm_model_name") or text_cfg.get("hf_model_name"):
        raise ValueError(
            "encoder=open_clip builds open_clip's own ViT/text transformer only; for timm or "
            "Hugging Face towers use encoder=hf_timm"
        )
    clip = CustomTextCLIP(
        int(cfg["embed_dim"]), vision_cfg, text_cfg, quick_gelu=bool(cfg.get("quick_gelu", False))
    )
    visual, text = clip.visual, clip.text
    visual.proj = None  # TwoTower's image_proj replaces it (same width x embed_dim map)
    text.text_projection = None  # likewise text_proj
    image_size = vision_cfg.get("image_size", 224)
    context_length = int(text_cfg.get("context_length", 77))
    return TwoTower(
        visual,
        OpenClipTextTower(text),
        int(vision_cfg["width"]),
        int(text_cfg["width"]),
        OpenClipTokenizer(context_length),
        embed_dim=int(cfg["embed_dim"]),
        context_length=context_length,
        image_size=int(image_size if isinstance(image_size, int) else image_size[0]),
        image_mean=tuple(image_mean),
        image_std=tuple(image_std),
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
        learn_temperature=learn_temperature,
    )
