"""Training augmentation (``aug``): seeded draws, grayscale, colour jitter, presets."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from tests.conftest import compose_cfg
from vlexp.data.augment import Augment
from vlexp.data.pipeline import TrainTransform, augmentation_seed, image_transform

HALF = (0.5, 0.5, 0.5)
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
COLOUR = Augment(color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=0.8, gray_scale_prob=0.2)


def _image(seed: int = 0, h: int = 90, w: int = 120) -> Image.Image:
    """A smooth colour image (gradients plus noise): jitter and crops both show in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + 20
    pixels = base + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _aug(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.aug, resolve=True)


def _redecoded(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("fused", [True, False])
def test_seeded_sample_equals_the_same_sample_redecoded(fused: bool) -> None:
    tf = TrainTransform(32, MEAN, STD, fused=fused, aug=COLOUR)
    image, seed = _image(), augmentation_seed(0, 2, 41)
    torch.manual_seed(0)
    first = tf(image, seed)
    torch.rand(100)  # other draws of the process do not matter
    again = tf(_redecoded(image), seed)
    assert torch.equal(first, again)
    others = [tf(image, augmentation_seed(0, e, 41)) for e in range(3, 9)]
    assert all(not torch.equal(first, o) for o in others)


def test_seeded_draw_leaves_the_global_rng_alone_and_keeps_the_crop() -> None:
    image, seed = _image(), augmentation_seed(3, 1, 7)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    draw = COLOUR.draw(image, seed)
    assert torch.equal(torch.get_rng_state(), state)
    # colour draws come after the crop: switching colour on never moves a crop
    assert draw.box == Augment().draw(image, seed).box
    # the crop of the seed is torchvision's RandomResizedCrop drawn from that seed
    torch.manual_seed(seed)
    assert draw.box == T.RandomResizedCrop.get_params(image, [0.9, 1.0], [0.9, 1.1])


def test_gray_scale_p1_gives_equal_channels_p0_does_not() -> None:
    image = _image()
    gray = TrainTransform(32, HALF, HALF, aug=Augment(gray_scale_prob=1.0))(image, 5)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    plain = TrainTransform(32, HALF, HALF, aug=Augment())(image, 5)
    assert not torch.allclose(plain[0], plain[1], atol=0.05)
    # ITU-R 601 luma of the same crop, computed here from the ungrayed pixels
    rgb = plain * 0.5 + 0.5
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    torch.testing.assert_close(gray[0] * 0.5 + 0.5, luma, atol=2e-3, rtol=0)


def test_brightness_jitter_scales_every_pixel_by_one_drawn_factor() -> None:
    image = _image()
    aug = Augment(color_jitter=(0.4, 0.0, 0.0, 0.0), color_jitter_prob=1.0)
    seeds = [augmentation_seed(0, 0, i) for i in range(8)]
    factors = []
    for seed in seeds:
        jittered = TrainTransform(32, HALF, HALF, aug=aug)(image, seed) * 0.5 + 0.5
        plain = TrainTransform(32, HALF, HALF, aug=Augment())(image, seed) * 0.5 + 0.5
        inside = plain > 0.05
        ratio = jittered[inside] / plain[inside]
        unclipped = jittered[inside] < 0.999
        factor = float(ratio[unclipped].median())
        torch.testing.assert_close(  # one factor for the whole image
            ratio[unclipped], torch.full_like(ratio[unclipped], factor), atol=1e-4, rtol=1e-4
        )
        factors.append(factor)
    assert all(0.6 - 1e-6 <= f <= 1.4 + 1e-6 for f in factors)  # 1 -/+ brightness 0.4
    assert len({round(f, 4) for f in factors}) == len(factors) and np.std(factors) > 0.05


def test_jitter_changes_pixels_with_its_probability() -> None:
    image = _image()
    plain = TrainTransform(32, MEAN, STD, aug=Augment())
    jitter = TrainTransform(32, MEAN, STD, aug=Augment(color_jitter=0.4, color_jitter_prob=0.5))
    changed = [
        not torch.equal(plain(image, s), jitter(image, s))
        for s in (augmentation_seed(1, 0, i) for i in range(200))
    ]
    assert 70 <= sum(changed) <= 130  # p = 0.5 of 200 (binomial: 100 +- 3.5 sd)
    never = TrainTransform(32, MEAN, STD, aug=Augment(color_jitter=0.4, color_jitter_prob=0.0))
    assert torch.equal(never(image, 3), plain(image, 3))


@pytest.mark.parametrize("fused", [True, False])
def test_everything_off_is_the_crop_only_transform_bit_for_bit(fused: bool) -> None:
    """``aug=default`` = a seeded RandomResizedCrop box, resize, ToTensor and Normalize."""
    cfg = compose_cfg([])
    aug = Augment.from_config(_aug(cfg))
    assert aug == Augment() and not aug.colour
    tf = image_transform(48, MEAN, STD, True, aug=aug)
    assert isinstance(tf, TrainTransform)
    tf.fused = fused
    legacy = TrainTransform(48, MEAN, STD, crop_scale=(0.9, 1.0), fused=fused)
    finish = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    for i in range(6):
        image, seed = _image(i, 70 + 9 * i, 60 + 13 * i), augmentation_seed(0, 1, i)
        torch.manual_seed(seed)
        top, left, h, w = T.RandomResizedCrop.get_params(image, [0.9, 1.0], [0.9, 1.1])
        out = tf(image, seed)
        assert torch.equal(out, legacy(image, seed))
        if not fused:
            ref = finish(TF.resized_crop(image, top, left, h, w, [48, 48], antialias=True))
            assert torch.equal(out, ref)


def test_none_preset_is_the_evaluation_transform() -> None:
    aug = Augment.from_config(_aug(compose_cfg(["aug=none"])))
    assert aug.fixed
    fixed = image_transform(32, MEAN, STD, True, aug=aug)
    evaluation = image_transform(32, MEAN, STD, False)
    image = _image()
    assert torch.equal(fixed(image, 1), evaluation(image)) and torch.equal(
        fixed(image, 2), fixed(image, 1)
    )
    # colour without a crop keeps the evaluation geometry and still varies per seed
    colour = TrainTransform(32, HALF, HALF, aug=Augment(scale=None, gray_scale_prob=1.0))
    g = colour(image, 4) * 0.5 + 0.5
    rgb = image_transform(32, HALF, HALF, False)(image) * 0.5 + 0.5
    torch.testing.assert_close(
        g[0], 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], atol=2e-3, rtol=0
    )


def test_open_clip_preset_equals_open_clip_defaults() -> None:
    open_clip = pytest.importorskip("open_clip")
    from open_clip.transform import AugmentationCfg

    ours = Augment.from_config(_aug(compose_cfg(["aug=open_clip"])))
    cfg = AugmentationCfg()
    assert ours.scale == tuple(cfg.scale)
    assert cfg.color_jitter is None and ours.color_jitter is None
    assert not cfg.gray_scale_prob and ours.gray_scale_prob == 0
    crop = open_clip.image_transform(224, is_train=True).transforms[0]
    assert isinstance(crop, T.RandomResizedCrop)
    assert ours.ratio == pytest.approx(tuple(crop.ratio)) and ours.scale == tuple(crop.scale)


def test_color_preset_and_single_number_jitter() -> None:
    colour = Augment.from_config(_aug(compose_cfg(["aug=color"])))
    assert colour.color_jitter == (0.4, 0.4, 0.4, 0.1) and colour.gray_scale_prob == 0.2
    one = Augment.from_config({"color_jitter": 0.3})
    assert one.color_jitter == (0.3, 0.3, 0.3, 0.0) and one.colour and not one.fixed
    with pytest.raises(ValueError, match="aug.gray_scale_prob"):
        Augment.from_config({"gray_scale_prob": 1.5})


def test_datamodule_trains_with_the_configured_augmentation() -> None:
    from vlexp.train.datamodule import VLDataModule

    cfg = compose_cfg(["aug=color", "aug.gray_scale_prob=1.0"])
    dm = VLDataModule(
        cfg.data, cfg.sampler, cfg.filter, tokenize=lambda c: {}, image_size=32,
        image_mean=HALF, image_std=HALF, aug=cfg.aug,
    )  # fmt: skip
    tf = dm.train_collate.transform
    assert isinstance(tf, TrainTransform) and tf.aug.gray_scale_prob == 1.0
    out = tf(_image(), 3)
    assert torch.equal(out[0], out[2])
