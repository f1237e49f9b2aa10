"""Tower splits: a pre-trained tower cut at its freeze point into a frozen trunk and a top.

:class:`TowerSplit` is what :mod:`vlexp.encoders.trunk_cache` caches: ``trunk`` maps a
sample to the frozen part's output, ``top`` finishes the tower on it. Supported cuts:
BERT-style Hugging Face text towers, timm EfficientNet-style image towers, open_clip's
ViT and causal text transformer, and any freezable tower frozen whole (its pooled output).
Each ``*_split`` function returns ``None`` for a tower it cannot cut exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# Hugging Face model types whose layers take only (hidden states, attention mask)
TEXT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")


class TowerSplit:
    """A tower cut at its freeze point: :meth:`trunk` (frozen) then :meth:`top` (trainable).

    ``trunk(*inputs) -> (B, ...)`` per-sample features; ``top(features, *inputs) ->
    (B, D)`` pooled tower output. ``frozen_blocks`` is the number of frozen blocks after
    the stem; :meth:`trunk_modules` the sub-modules whose weights the trunk uses. Plain
    attributes only, so a module holding a split pickles (``ddp_spawn``).
    """

    def __init__(self, tower: nn.Module, frozen_blocks: int) -> None:
        self.tower = tower
        self.frozen_blocks = frozen_blocks

    def trunk_modules(self) -> list[nn.Module]:
        """The stem and the frozen blocks."""
        raise NotImplementedError

    def trunk(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Frozen part: per-sample features."""
        raise NotImplementedError

    def top(self, features: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """Trainable part on the trunk's features: pooled tower output."""
        raise NotImplementedError


class TextSplit(TowerSplit):
    """BERT-style text tower: embeddings + first layers | last layers + pooling."""

    def _layers(self) -> nn.ModuleList:
        return self.tower.model.encoder.layer  # type: ignore[return-value]

    def trunk_modules(self) -> list[nn.Module]:
        return [self.tower.model.embeddings, *self._layers()[: self.frozen_blocks]]

    def _run(self, hidden: torch.Tensor, attention_mask: torch.Tensor, blocks: Any) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(
            config=self.tower.model.config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        for layer in blocks:
            hidden = layer(hidden, mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        hidden = self.tower.model.embeddings(input_ids=input_ids)
        return self._run(hidden, attention_mask, self._layers()[: self.frozen_blocks])

    def top(  # type: ignore[override]
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = self._run(hidden, attention_mask, self._layers()[self.frozen_blocks :])
        return self.tower.pool(hidden, attention_mask)  # type: ignore[operator]


class ImageSplit(TowerSplit):
    """timm EfficientNet-style image tower: stem + first blocks | last blocks + head."""

    def _blocks(self) -> list[nn.Module]:
        return [block for stage in self.tower.model.blocks for block in stage]

    def trunk_modules(self) -> list[nn.Module]:
        model = self.tower.model
        return [model.conv_stem, model.bn1, *self._blocks()[: self.frozen_blocks]]

    def trunk(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        model = self.tower.model
        x = model.bn1(model.conv_stem(images))
        for block in self._blocks()[: self.frozen_blocks]:
            x = block(x)
        return x

    def top(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        model = self.tower.model
        for block in self._blocks()[self.frozen_blocks :]:
            x = block(x)
        return model.forward_head(model.bn2(model.conv_head(x)))


class WholeSplit(TowerSplit):
    """A tower frozen whole (``freeze: all``, the LiT setting): the trunk is the tower's
    pooled output and the top is nothing, so a cached step reads one vector per sample."""

    def trunk_modules(self) -> list[nn.Module]:
        return [self.tower]

    def trunk(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.tower(*inputs)

    def top(self, features: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return features


def _resblocks(transformer: nn.Module, x: torch.Tensor, blocks: Any, attn_mask: Any = None):
    """Run open_clip residual ``blocks`` of ``transformer`` on batch-first ``x``."""
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    return x if transformer.batch_first else x.transpose(0, 1)


class _OpenClipSplit(TowerSplit):
    """Shared by the open_clip cuts: the trunk's weights are the stem and frozen groups."""

    def trunk_modules(self) -> list[nn.Module]:
        groups = self.tower.param_groups()  # type: ignore[operator]
        params = dict(self.tower.named_parameters())
        return [nn.ParameterList([params[n] for g in groups[: self.frozen_blocks + 1] for n in g])]


class OpenClipImageSplit(_OpenClipSplit):
    """open_clip ViT: patch + position embeddings and first blocks | last blocks + pooling."""

    def trunk(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        visual = self.tower.model
        blocks = visual.transformer.resblocks[: self.frozen_blocks]
        return _resblocks(visual.transformer, visual._embeds(images), blocks)

    def top(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        visual = self.tower.model
        x = _resblocks(visual.transformer, x, visual.transformer.resblocks[self.frozen_blocks :])
        pooled, _ = visual._pool(x)
        return pooled if visual.proj is None else pooled @ visual.proj


class OpenClipTextSplit(_OpenClipSplit):
    """open_clip causal text transformer: embeddings and first blocks | last blocks, final
    norm and the end-of-text pooling. Positions after the end of text never reach it
    (causal mask), so dropping padded positions from the top changes nothing."""

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        text = self.tower.text
        x, mask = text._embeds(input_ids)
        return _resblocks(
            text.transformer, x, text.transformer.resblocks[: self.frozen_blocks], mask
        )

    def top(  # type: ignore[override]
        self, x: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        text = self.tower.text
        length = x.shape[1]
        mask = None if text.attn_mask is None else text.attn_mask[:length, :length]
        blocks = text.transformer.resblocks[self.frozen_blocks :]
        x = text.ln_final(_resblocks(text.transformer, x, blocks, mask))
        eos = getattr(text, "eos_id", None)
        pooled = text_global_pool(x, input_ids, pool_type=text.pool_type, eos_token_id=eos)
        return pooled if text.text_projection is None else pooled @ text.text_projection


def open_clip_image_split(tower: Any) -> TowerSplit | None:
    """Split of an open_clip ViT image tower, or ``None`` if unsupported."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(tower, "model", None)
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        return None
    if not isinstance(visual.proj, torch.Tensor | type(None)):
        return None
    frozen = frozen_block_count(tower)
    return None if frozen is None else OpenClipImageSplit(tower, frozen)


def open_clip_text_split(tower: Any) -> TowerSplit | None:
    """Split of an open_clip causal text tower, or ``None`` if unsupported (an appended
    class token or a padding mask)."""
    from open_clip.transformer import TextTransformer

    text = getattr(tower, "text", None)
    if not isinstance(text, TextTransformer) or not hasattr(tower, "param_groups"):
        return None
    if text.cls_emb is not None or getattr(text, "use_pad_mask", False):
        return None
    if not isinstance(text.text_projection, torch.Tensor | type(None)):
        return None
    frozen = frozen_block_count(tower)
    return None if frozen is None else OpenClipTextSplit(tower, frozen)


def whole_split(tower: Any) -> TowerSplit | None:
    """Split of a tower none of whose parameters train, or ``None`` if some do.

    Only towers that keep frozen parts in eval mode (those with ``param_groups``, see
    :mod:`vlexp.encoders.freezing`) qualify: their output is a function of the input.
    """
    params = list(tower.parameters()) if isinstance(tower, nn.Module) else []
    if not params or any(p.requires_grad for p in params) or not hasattr(tower, "param_groups"):
        return None
    return WholeSplit(tower, len(tower.param_groups()))


def frozen_block_count(tower: Any) -> int | None:
    """Blocks (after the stem) frozen by the tower's freeze setting; ``None`` if the stem
    trains (nothing to cache) or the trainable blocks are not the tower's last ones."""
    groups = tower.param_groups()
    params = dict(tower.named_parameters())
    trains = [any(params[n].requires_grad for n in g) for g in groups]
    if not trains or trains[0]:
        return None
    first = next((i for i, t in enumerate(trains) if t), len(groups))
    if not all(all(params[n].requires_grad for n in g) for g in groups[first:]):
        return None
    return first - 1


def _same_params(modules: Sequence[nn.Module], tower: nn.Module, frozen: int) -> bool:
    """True when ``modules`` hold exactly the stem and the first ``frozen`` blocks."""
    groups = tower.param_groups()  # type: ignore[operator]
    want = {id(p) for n, p in tower.named_parameters() if n in set().union(*groups[: frozen + 1])}
    have = {id(p) for m in modules for p in m.parameters()}
    return want == have


def text_split(tower: Any) -> TowerSplit | None:
    """Split of a BERT-style Hugging Face or open_clip text tower, or ``None`` if unsupported."""
    if hasattr(tower, "text"):
        return open_clip_text_split(tower)
    model = getattr(tower, "model", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if (
        model is None
        or not isinstance(layers, nn.ModuleList)
        or not isinstance(getattr(model, "embeddings", None), nn.Module)
        or getattr(model.config, "is_decoder", False)
        or getattr(model.config, "model_type", None) not in TEXT_MODEL_TYPES
        or not hasattr(tower, "param_groups")
        or not hasattr(tower, "pool")
    ):
        return None
    frozen = frozen_block_count(tower)
    if frozen is None:
        return None
    split = TextSplit(tower, frozen)
    return split if _same_params(split.trunk_modules(), tower, frozen) else None


def image_split(tower: Any) -> TowerSplit | None:
    """Split of a timm EfficientNet-style or open_clip ViT image tower, or ``None``."""
    split = open_clip_image_split(tower)
    if split is not None:
        return split
    model = getattr(tower, "model", None)
    names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head")
    if model is None or not all(hasattr(model, n) for n in names):
        return None
    if not hasattr(tower, "param_groups"):
        return None
    frozen = frozen_block_count(tower)
    if frozen is None:
        return None
    split = ImageSplit(tower, frozen)
    return split if _same_params(split.trunk_modules(), tower, frozen) else None
