"""The CLIP objective against open_clip's ClipLoss and a direct formula."""

import open_clip.loss
import torch
import torch.nn.functional as F

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features


def _features(b: int = 16, d: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    return img, txt


def test_clip_matches_open_clip():
    img, txt = _features()
    scale = torch.tensor(1 / 0.07)
    ours = OBJECTIVES.build({"name": "clip"})(gather_features(img, txt), scale, {}, 0.0).loss
    theirs = open_clip.loss.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_clip_matches_formula():
    img, txt = _features(b=8, seed=3)
    s = 10.0 * img @ txt.T
    b = s.shape[0]
    expected = 0.0
    for i in range(b):
        expected -= torch.log(torch.exp(s[i, i]) / torch.exp(s[i]).sum())
        expected -= torch.log(torch.exp(s[i, i]) / torch.exp(s[:, i]).sum())
    expected = expected / (2 * b)
    ours = OBJECTIVES.build("clip")(gather_features(img, txt), torch.tensor(10.0), {}, 0.0)
    torch.testing.assert_close(ours.loss, expected, rtol=1e-5, atol=1e-6)
    assert set(ours.components) == {"loss_i2t", "loss_t2i"}
