"""Concept distillation is itself: its targets are the teacher's, and its head learns them.

The default teacher (the packaged ImageNet EfficientNet-Lite0) labels real photos
through the objective's own path (``setup``: precompute, float16 cache, lookup, softmax).
The targets are checked against the same network rebuilt from its weights file and
run on images preprocessed by hand with PIL and numpy, they must be far from
uniform, and a few optimizer steps on the concept head must lower its loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
CAT_CLASSES = {281, 282, 283, 284, 285}  # ImageNet tabby, tiger cat, Persian, Siamese, Mau
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


class _Photos:
    """A pair source of real photos (captions are placeholders)."""

    def __init__(self) -> None:
        self.images = [Image.fromarray(getattr(skimage_data, n)()).convert("RGB") for n in PHOTOS]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "caption": PHOTOS[i], "index": i}

    @property
    def captions(self) -> list[str]:
        return list(PHOTOS)


def _by_hand(img: Image.Image, size: int = 224, crop_pct: float = 0.875) -> np.ndarray:
    """Bilinear resize of the short side to size / crop_pct, centre crop, (x - .5) / .5."""
    short = int(round(size / crop_pct))
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    arr = np.asarray(img.resize(new, Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    top, left = int(round((arr.shape[0] - size) / 2)), int(round((arr.shape[1] - size) / 2))
    arr = arr[top : top + size, left : left + size]
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """The objective after ``setup`` on the photos, and its targets for all of them."""
    data = _Photos()
    obj = OBJECTIVES.build({"name": "concepts", "loss": "kl", "progress": False}, embed_dim=16)
    obj.setup(data, cache_dir=str(tmp_path_factory.mktemp("cache")))
    index = torch.arange(len(data))
    from vlexp.objectives.concepts.objective import teacher_targets

    targets = teacher_targets(obj.teacher_logits({"index": index}, torch.device("cpu")), False)
    return data, obj, targets


def test_targets_are_the_teachers_own_predictions(distilled):
    from vlexp.encoders.weights import load_efficientnet_lite0

    data, obj, targets = distilled
    reference_net = load_efficientnet_lite0().eval()  # a fresh copy from the weights file
    pixels = torch.from_numpy(np.stack([_by_hand(im) for im in data.images])).float()
    with torch.no_grad():
        reference = torch.softmax(reference_net(pixels).double(), dim=1)
    assert targets.shape == (len(PHOTOS), 1000)
    torch.testing.assert_close(targets.double(), reference, atol=5e-3, rtol=0)
    assert targets.argmax(1).tolist() == reference.argmax(1).tolist()
    top5 = targets.topk(5, dim=1).indices.tolist()
    assert set(top5[0]) & CAT_CLASSES and set(top5[1]) & CUP_CLASSES  # chelsea, coffee


def test_targets_are_far_from_uniform_and_differ_between_images(distilled):
    _, _, targets = distilled
    entropy = -(targets * targets.clamp_min(1e-12).log()).sum(1)
    # uniform targets have entropy log(1000) = 6.91 nats; ImageNet has no "astronaut", so
    # that photo's targets are the least sure, yet still a nat below uniform
    assert entropy.max().item() < math.log(1000) - 1, entropy
    assert entropy.mean().item() < 0.5 * math.log(1000), entropy
    assert targets.max(1).values.min().item() > 0.05  # uniform: 0.001
    off_diagonal = (
        targets @ targets.T / targets.norm(dim=1).outer(targets.norm(dim=1))
    ).fill_diagonal_(0)
    assert off_diagonal.max().item() < 0.9  # each photo gets its own concepts


def test_concept_head_loss_falls_over_a_few_steps(distilled):
    data, obj, targets = distilled
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(len(data), 16, generator=g), dim=-1)  # fixed student images
    feats = gather_features(emb, emb)
    batch = {"index": torch.arange(len(data))}
    # lr 0.01: the scaled head reaches the teacher in about 15 steps (at 0.1 it overshoots
    # on the third)
    opt = torch.optim.Adam(obj.image_head.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss = obj(feats, torch.tensor(1.0), batch, 0.0).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the loss is KL(teacher || head): it starts near log(1000) - H(teacher)
    start = (targets * (targets.clamp_min(1e-12).log() + math.log(1000))).sum(1).mean().item()
    assert losses[0] == pytest.approx(start, rel=0.2)
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in zip(losses[:5], losses[1:6]))  # falls from the first steps
