"""Patch dropout (FLIP) on ViT towers: fewer tokens in training, nothing changed in eval.

The token count is read at the first transformer block's input (a forward hook), so the
test sees what the blocks compute on, not what the dropout module reports about itself.
"""

from __future__ import annotations

import pytest
import timm
import torch

from tests.conftest import compose_cfg, tiny_encoder
from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.open_clip_tower import tiny_open_clip_config
from vlexp.encoders.patch_dropout import set_patch_dropout
from vlexp.encoders.trunk_cache import TrunkCacheError, TrunkInputs, build_trunk_cache

CFG = tiny_open_clip_config(
    embed_dim=24, image_size=32, vision_width=32, vision_layers=2, vision_head_width=16,
    text_width=32, text_layers=2, text_heads=2, context_length=16,
)  # fmt: skip


def _open_clip(prob: float | None, **image: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.build(
        {"name": "open_clip", "model_cfg": CFG, "image": {"patch_dropout": prob, **image}}
    )


def _tokens_seen(model: torch.nn.Module, block: torch.nn.Module, images: torch.Tensor) -> int:
    """Sequence length at ``block``'s input when ``model`` encodes ``images``."""
    seen: list[int] = []
    handle = block.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            model.encode_image(images)
    finally:
        handle.remove()
    return seen[0]


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_open_clip_vit_drops_patches_in_training_only():
    images = _images(3, 32)
    plain, dropping = _open_clip(None), _open_clip(0.5)
    block = dropping.image_tower.model.transformer.resblocks[0]
    dropping.train()
    assert _tokens_seen(dropping, block, images) == 1 + 8  # class token + half of 16 patches
    torch.manual_seed(2)
    with torch.no_grad():
        trained = dropping.encode_image(images)
        assert not torch.allclose(trained, plain.train().encode_image(images), atol=1e-3)
    dropping.eval(), plain.eval()
    assert _tokens_seen(dropping, block, images) == 17
    with torch.no_grad():
        torch.testing.assert_close(dropping.encode_image(images), plain.encode_image(images))


def test_tiny_timm_vit_drops_patches_in_training_only():
    images = _images(3, 32)
    torch.manual_seed(0)
    plain = ENCODERS.build(tiny_encoder(image_size=32))
    torch.manual_seed(0)
    dropping = ENCODERS.build(tiny_encoder(image_size=32, patch_dropout=0.75))
    block = dropping.image_tower.blocks[0]
    assert _tokens_seen(dropping.train(), block, images) == 4  # a quarter of 16, no class token
    dropping.eval(), plain.eval()
    assert _tokens_seen(dropping, block, images) == 16
    with torch.no_grad():
        torch.testing.assert_close(dropping.encode_image(images), plain.encode_image(images))


def test_a_tower_without_patch_tokens_is_refused():
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match=r"encoder\.image\.patch_dropout=0\.5 needs a ViT") as err:
        set_patch_dropout(resnet, 0.5, "encoder.image.patch_dropout")
    assert "\n" not in str(err.value) and "ResNet" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["encoder=open_clip", "encoder.image.patch_dropout=1.0"], r"patch_dropout=1\.0: expected"),
        (
            ["encoder=open_clip", "encoder.image.freeze=all", "encoder.image.patch_dropout=0.5"],
            r"encoder\.image=.*patch_dropout needs a tower that trains",
        ),
        (["encoder.patch_dropout=-0.1"], r"encoder\.patch_dropout=-0\.1: expected a share"),
        (["encoder=hf_timm", "encoder.image.patch_dropout=x"], r"patch_dropout=x: expected"),
    ],
)
def test_patch_dropout_is_validated_in_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate_config(compose_cfg(overrides))
    assert "\n" not in str(err.value)


def test_a_dropping_image_tower_is_not_cached(tmp_path):
    model = _open_clip(0.5, freeze="last_n", last_n=1)
    inputs = TrunkInputs(4, "d", True, {"size": 32}, {"context_length": 16})
    with pytest.raises(TrunkCacheError, match="drops a random share of its patches"):
        build_trunk_cache(model, "true", inputs, tmp_path)
    assert build_trunk_cache(_open_clip(None, freeze="last_n"), "true", inputs, tmp_path).image
