"""Locking (LiT) for open_clip towers, frozen norm statistics, and their validation.

open_clip is the oracle for which parameters a lock leaves trainable: its own
``lock_image_tower`` / ``lock_text_tower`` on the same architecture. Training steps
check that locked tensors keep their values and unlocked ones move.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CustomTextCLIP

from tests.conftest import compose_cfg
from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.open_clip_tower import tiny_open_clip_config
from vlexp.encoders.trunk_cache import TrunkInputs, build_trunk_cache

CFG = tiny_open_clip_config(
    embed_dim=24, image_size=32, vision_width=32, vision_layers=3, vision_head_width=16,
    text_width=32, text_layers=3, text_heads=2, context_length=16,
)  # fmt: skip
CAPTIONS = ["a red cube", "two dogs on the grass", "a blue star", "x"]


def _model(image: dict | None = None, text: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS.build({"name": "open_clip", "model_cfg": CFG, "image": image, "text": text})


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad} - {"log_logit_scale"}


def _open_clip_trainable(unlocked_groups: int, unlocked_layers: int) -> set[str]:
    """open_clip's own lock on the same architecture, in vlexp's parameter names."""
    clip = CustomTextCLIP(CFG["embed_dim"], CFG["vision_cfg"], CFG["text_cfg"])
    clip.lock_image_tower(unlocked_groups=unlocked_groups)
    clip.lock_text_tower(unlocked_layers=unlocked_layers)
    rename = {"visual.proj": "image_proj.weight", "text.text_projection": "text_proj.weight"}
    out = set()
    for name, p in clip.named_parameters():
        if p.requires_grad and name != "logit_scale":
            name = rename.get(name, name)
            name = name.replace("visual.", "image_tower.model.", 1)
            out.add(name.replace("text.", "text_tower.text.", 1))
    return out


@pytest.mark.parametrize("last_n", [0, 1, 2])
def test_last_n_leaves_what_open_clip_unlocks(last_n):
    model = _model({"freeze": "last_n", "last_n": last_n}, {"freeze": "last_n", "last_n": last_n})
    assert _trainable(model) == _open_clip_trainable(last_n + 1, last_n + 1)
    assert model.freeze_reports["image"].num_blocks == (3 if last_n else 0)


def test_freeze_all_and_none():
    locked = _model({"freeze": "all"}, {"freeze": "all"})
    assert _trainable(locked) == {"image_proj.weight", "text_proj.weight"}
    assert locked.image_tower.frozen_module_names == ("",)
    free = _model()  # the preset's default: both towers train whole
    assert _trainable(free) == {n for n, _ in free.named_parameters()} - {"log_logit_scale"}


def _batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tokens = model.tokenize(CAPTIONS)
    images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=gen)
    return {"image": images, **tokens, "index": torch.arange(len(CAPTIONS))}


def _steps(model: torch.nn.Module, batch: dict, cache=None, steps: int = 2) -> list[dict]:
    """AdamW steps on a CLIP loss; the gradients of each step."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    grads = []
    for _ in range(steps):
        if cache is None:
            image = model.encode_image(batch["image"])
            text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        else:
            image, text = cache.encode(model, batch)
        logits = model.logit_scale() * image @ text.T
        target = torch.arange(len(logits))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        opt.step()
    return grads


def test_training_moves_only_the_unlocked_parameters():
    model = _model({"freeze": "last_n", "last_n": 1}, {"freeze": "all"})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _steps(model, _batch(model))
    unlocked = _trainable(model) | {"log_logit_scale"}
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (name in unlocked), name
    assert any(n.startswith("image_tower.model.transformer.resblocks.2.") for n in unlocked)
    assert not any(n.startswith("text_tower.") for n in unlocked)


def _inputs() -> TrunkInputs:
    return TrunkInputs(
        num_samples=len(CAPTIONS),
        dataset="d",
        images_deterministic=True,
        image_preprocessing={"size": 32},
        text_preprocessing={"context_length": 16},
    )


@pytest.mark.parametrize("freeze", ["last_n", "all"])
def test_trunk_cache_of_locked_towers_gives_the_uncached_gradients(freeze, tmp_path):
    model = _model({"freeze": freeze, "last_n": 1}, {"freeze": freeze, "last_n": 1})
    ref, cached = copy.deepcopy(model), copy.deepcopy(model)
    cache = build_trunk_cache(cached, "true", _inputs(), tmp_path)
    assert cache.image is not None and cache.text is not None
    if freeze == "all":
        assert cache.image.store.shape == (32,) and cache.text.store.shape == (32,)
    else:  # tokens after two of three blocks: (1 class + 16 patches, width) and (16, width)
        assert cache.image.store.shape == (17, 32) and cache.text.store.shape == (16, 32)
    batch = _batch(model)
    ref_grads, grads = _steps(ref, batch), _steps(cached, batch, cache)
    assert cache.image.rows_computed == len(CAPTIONS)  # the second step read stored rows
    for want, got in zip(ref_grads, grads):
        assert want.keys() == got.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_freeze_norm_stats_keeps_running_statistics_of_trainable_batch_norms():
    def bn_means(model):
        return {
            n: m.running_mean.clone()
            for n, m in model.image_tower.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d)
        }

    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for fixed in (False, True):
        image = {"freeze": "last_n", "last_n": 1, "freeze_norm_stats": fixed}
        model = ENCODERS.build({"name": "pretrained_small", "image_size": 64, "image": image})
        last = [n for n in bn_means(model) if n.startswith("model.bn2") or ".6.0." in n]
        assert last, "the last block holds BatchNorm layers"
        before = bn_means(model)
        model.train()
        model.encode_image(images)
        after = bn_means(model)
        for name in before:
            frozen_block = name not in last
            unchanged = torch.equal(before[name], after[name])
            assert unchanged == (frozen_block or fixed), (fixed, name)
        assert model.freeze_reports["image"].norm_stats_frozen == (len(last) if fixed else 0)


def test_freeze_norm_stats_without_batch_norm_is_refused():
    with pytest.raises(ValueError, match=r"encoder\.image\.freeze_norm_stats=true .*no BatchNorm"):
        _model({"freeze": "last_n", "freeze_norm_stats": True})


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("encoder.image.freeze=most", r"encoder\.image\.freeze=most: expected one of none, all"),
        ("encoder.text.last_n=-1", r"encoder\.text\.last_n=-1: expected an integer in \[0"),
        ("encoder.image.freeze_norm_stats=2", r"encoder\.image\.freeze_norm_stats=2: expected"),
        ("+encoder.text.unlocked=1", r"encoder\.text\.unlocked: unknown option"),
        ("encoder.trunk_cache=sometimes", r"encoder\.trunk_cache=sometimes: expected one of"),
    ],
)
def test_new_options_are_validated_in_one_line(override, match):
    cfg = compose_cfg(["encoder=open_clip", override])
    with pytest.raises(ConfigError, match=match) as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset", ["pretrained_small", "hf_timm"])
def test_pretrained_presets_validate_their_tower_sections(preset):
    cfg = compose_cfg([f"encoder={preset}", "encoder.image.freeze_norm_stats=yes"])
    with pytest.raises(ConfigError, match=r"encoder\.image\.freeze_norm_stats=yes: expected"):
        validate_config(cfg)
    validate_config(compose_cfg([f"encoder={preset}"]))  # the preset itself is valid


def test_open_clip_preset_composes_with_locked_towers():
    cfg = compose_cfg(["encoder=open_clip", "encoder.image.freeze=all", "encoder.text.freeze=all"])
    validate_config(cfg)
    assert cfg.encoder.image.freeze == cfg.encoder.text.freeze == "all"
