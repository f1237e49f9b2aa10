"""HN-NCE against InfoNCE (vlexp's CLIP loss, open_clip's ClipLoss) and a direct loop."""

import math

import open_clip.loss
import pytest
import torch
import torch.nn.functional as F

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import GatheredFeatures, gather_features
from vlexp.objectives.hnnce import hnnce_direction, hnnce_weights


def _features(b: int = 12, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    return img.float(), txt.float()


def _loop_direction(s: list[list[float]], alpha: float, beta: float) -> float:
    """The HN-NCE formula (one direction) written out, one scalar at a time (rows = queries)."""
    b = len(s)
    total = 0.0
    for i in range(b):
        norm = sum(math.exp(beta * s[i][k]) for k in range(b) if k != i)
        den = alpha * math.exp(s[i][i])
        for j in range(b):
            if j != i:
                w = (b - 1) * math.exp(beta * s[i][j]) / norm
                den += w * math.exp(s[i][j])
        total -= math.log(math.exp(s[i][i]) / den)
    return total / b


def test_alpha1_beta0_equals_clip_and_open_clip():
    img, txt = _features()
    scale = torch.tensor(1 / 0.07)
    feats = gather_features(img, txt)
    ours = OBJECTIVES.build({"name": "hnnce", "alpha": 1.0, "beta1": 0.0})(feats, scale, {}, 0.0)
    clip = OBJECTIVES.build("clip")(feats, scale, {}, 0.0)
    theirs = open_clip.loss.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(ours.loss, clip.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.loss, theirs, rtol=1e-6, atol=1e-6)
    for key in ("loss_i2t", "loss_t2i"):
        torch.testing.assert_close(ours.components[key], clip.components[key], rtol=1e-6, atol=1e-6)


def test_alpha1_beta0_gradients_equal_clip():
    img, txt = _features(seed=5)
    grads = []
    for cfg in ({"name": "hnnce", "beta1": 0.0}, {"name": "clip"}):
        i, t = img.clone().requires_grad_(), txt.clone().requires_grad_()
        OBJECTIVES.build(cfg)(gather_features(i, t), torch.tensor(20.0), {}, 0.0).loss.backward()
        grads.append((i.grad, t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, -0.5])
def test_negative_weights_average_to_one(beta):
    g = torch.Generator().manual_seed(1)
    logits = 10 * torch.randn(7, 21, generator=g)
    positives = torch.tensor([0, 3, 6, 9, 12, 15, 20])
    w = hnnce_weights(logits, positives, beta)
    assert torch.all(w[torch.arange(7), positives] == 0)
    torch.testing.assert_close(w.sum(1) / 20, torch.ones(7))
    if beta > 0:  # the hardest negative of each row gets the largest weight
        neg = logits.masked_fill(w == 0, float("-inf"))
        assert torch.equal(neg.argmax(1), w.argmax(1))


@pytest.mark.parametrize(
    ("alpha", "beta1", "beta2", "seed"),
    [(1.0, 0.5, 0.5, 0), (0.5, 1.0, 0.2, 1), (0.0, 0.7, 0.7, 2), (1.0, -0.3, 2.0, 3)],
)
def test_matches_loop_implementation(alpha, beta1, beta2, seed):
    img, txt = _features(b=9, seed=seed)
    scale = 14.0
    s = (scale * img.double() @ txt.double().T).tolist()
    s_t = [list(col) for col in zip(*s)]  # text->image: the columns of s as rows
    expected_i2t = _loop_direction(s, alpha, beta1)
    expected_t2i = _loop_direction(s_t, alpha, beta2)
    obj = OBJECTIVES.build({"name": "hnnce", "alpha": alpha, "beta1": beta1, "beta2": beta2})
    out = obj(gather_features(img, txt), torch.tensor(scale), {}, 0.0)
    assert out.components["loss_i2t"].item() == pytest.approx(expected_i2t, rel=1e-5)
    assert out.components["loss_t2i"].item() == pytest.approx(expected_t2i, rel=1e-5)
    assert out.loss.item() == pytest.approx(0.5 * (expected_i2t + expected_t2i), rel=1e-5)
    summed = OBJECTIVES.build(
        {"name": "hnnce", "alpha": alpha, "beta1": beta1, "beta2": beta2, "reduction": "sum"}
    )(gather_features(img, txt), torch.tensor(scale), {}, 0.0)
    assert summed.loss.item() == pytest.approx(expected_i2t + expected_t2i, rel=1e-5)


def test_local_rows_use_all_gathered_negatives():
    """A rank's rows in the local layout give the same per-row loss as the full batch."""
    img, txt = _features(b=10, seed=4)
    scale = torch.tensor(12.0)
    full = torch.stack(
        [
            hnnce_direction((scale * img @ txt.T)[i : i + 1], torch.tensor([i]), 1.0, 0.5)
            for i in range(10)
        ]
    )
    local = GatheredFeatures(img[5:], txt[5:], img, txt, offset=5, world_size=2)
    obj = OBJECTIVES.build({"name": "hnnce", "beta1": 0.5})
    out = obj(local, scale, {}, 0.0)
    torch.testing.assert_close(out.components["loss_i2t"], full[5:].mean())


def test_detached_weights_same_value_different_gradient():
    img, txt = _features(b=8, seed=6)
    vals, grads = [], []
    for detach in (False, True):
        i = img.clone().requires_grad_()
        obj = OBJECTIVES.build({"name": "hnnce", "beta1": 1.0, "detach_weights": detach})
        loss = obj(gather_features(i, txt), torch.tensor(10.0), {}, 0.0).loss
        loss.backward()
        vals.append(loss.detach())
        grads.append(i.grad)
    torch.testing.assert_close(vals[0], vals[1])
    assert not torch.allclose(grads[0], grads[1])


def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="reduction"):
        OBJECTIVES.build({"name": "hnnce", "reduction": "max"})
    with pytest.raises(ValueError, match="alpha"):
        OBJECTIVES.build({"name": "hnnce", "alpha": -1})
    with pytest.raises(ValueError, match="at least 2"):
        hnnce_direction(torch.zeros(1, 1), torch.tensor([0]), 1.0, 0.5)
