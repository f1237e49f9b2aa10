"""The fused uint8 training transform gives the pixels of the PIL path and of open_clip's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vlexp.data.pipeline import TrainTransform
from vlexp.data.records import decode_image

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
GREY = 255 * torch.tensor(STD).view(3, 1, 1)  # normalised units -> grey levels


def _jpeg(h: int, w: int, seed: int) -> bytes:
    """A textured JPEG: smooth colour gradients plus noise, quality 95."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([200 * xx, 200 * yy, 100 + 80 * np.sin(6 * xx + 3 * yy)], -1)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize(("h", "w"), [(224, 224), (300, 260), (180, 240)])
def test_fused_equals_pil_path(h: int, w: int) -> None:
    """Same crop box, same filter: the fused path equals resized_crop + ToTensor +
    Normalize on PIL up to uint8 rounding (upscaling, downscaling, non-square)."""
    image = decode_image(_jpeg(h, w, seed=h + w))
    fused = TrainTransform(224, MEAN, STD, crop_scale=(0.3, 1.0))
    pil = TrainTransform(224, MEAN, STD, crop_scale=(0.3, 1.0), fused=False)
    for seed in range(8):
        a, b = fused(image, seed), pil(image, seed)
        assert a.shape == b.shape == (3, 224, 224) and a.dtype == torch.float32
        assert float(((a - b) * GREY).abs().max()) < 1.01  # uint8 rounding: one grey level
        assert float(((a - b) * GREY).abs().mean()) < 0.35
    # the comparison can fail: another crop of the same image is far off
    assert float(((fused(image, 0) - pil(image, 1)) * GREY).abs().mean()) > 5


def test_fused_matches_open_clip_preprocess() -> None:
    """open_clip's training preprocess (PIL decode, bicubic RandomResizedCrop, ToTensor,
    Normalize) on the same JPEG bytes and the same crop box: within JPEG tolerance."""
    open_clip = pytest.importorskip("open_clip")
    preprocess = open_clip.image_transform(224, is_train=True, mean=MEAN, std=STD)
    ours = TrainTransform(224, MEAN, STD, crop_scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
    for seed in range(6):
        data = _jpeg(224, 224, seed)
        with Image.open(io.BytesIO(data)) as img:
            theirs_in = img.convert("RGB")  # webdataset's "pilrgb" decoder
        torch.manual_seed(seed)  # their crop box comes from the global RNG ...
        theirs = preprocess(theirs_in)
        mine = ours(decode_image(data), seed)  # ... ours from the seed alone: same draw
        assert float(((mine - theirs) * GREY).abs().mean()) < 2.0  # bilinear vs bicubic
