"""HN-NCE does what it is for: beta > 0 moves gradient weight onto the hardest negatives.

Measured on the gradient with respect to the logits, against InfoNCE computed with
``F.cross_entropy`` and against an independent float64 write-out of the formula; plus the
loss scale of objective=diht (both directions summed) against open_clip's ClipLoss.
"""

from __future__ import annotations

import math

import open_clip.loss
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features
from vlexp.objectives.hnnce import hnnce_direction

B, SCALE = 16, 14.0


def _logits(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, 32, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(B, 32, generator=g, dtype=torch.float64), dim=-1)
    return SCALE * img @ txt.T


def _reference_loss(s: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The formula written out densely: w_ij = (N-1) e^{beta s_ij} / sum_{k != i} e^{beta s_ik}."""
    n = s.shape[1]
    neg = ~torch.eye(n, dtype=torch.bool)
    e_beta = torch.exp(beta * s) * neg
    w = (n - 1) * e_beta / e_beta.sum(1, keepdim=True)
    pos = torch.exp(s.diagonal())
    den = alpha * pos + (w * torch.exp(s)).sum(1)
    return -torch.log(pos / den).mean()


def _logit_grad(loss_fn, s: torch.Tensor) -> torch.Tensor:
    x = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x), x)
    return grad


def _hardest_share(grad: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per row: gradient on the most similar negative over the negatives' total.

    The negatives' total equals minus the positive's gradient (both losses are unchanged by
    adding a constant to a row). With the weights differentiated, easy negatives can get a
    negative gradient, so the share can exceed 1.
    """
    neg = ~torch.eye(s.shape[0], dtype=torch.bool)
    hardest = s.masked_fill(~neg, -math.inf).argmax(1)
    mass = (grad * neg).sum(1)
    return grad[torch.arange(s.shape[0]), hardest] / mass


def _labels() -> torch.Tensor:
    return torch.arange(B)


@pytest.mark.parametrize("detach", [False, True])
def test_beta_moves_gradient_onto_the_hardest_negative(detach: bool) -> None:
    s = _logits()
    info = _logit_grad(lambda x: F.cross_entropy(x, _labels()), s)
    base = _hardest_share(info, s)
    shares = []
    for beta in (0.25, 0.5, 1.0):
        grad = _logit_grad(lambda x, b=beta: hnnce_direction(x, _labels(), 1.0, b, detach), s)
        share = _hardest_share(grad, s)
        assert bool((share > base + 1e-3).all()), (beta, share - base)  # every row
        shares.append(float(share.mean()))
    # more hardness, more weight on the hardest negative (on average over rows)
    assert shares[0] < shares[1] < shares[2]
    assert shares[1] > 1.2 * float(base.mean())  # measured: 0.55 -> 0.68 (detached), 0.87


def test_negative_beta_moves_weight_away_and_zero_is_infonce() -> None:
    """The measure can fail both ways: beta < 0 lowers the share, beta = 0 leaves it."""
    s = _logits(seed=1)
    info = _logit_grad(lambda x: F.cross_entropy(x, _labels()), s)
    base = _hardest_share(info, s)
    zero = _logit_grad(lambda x: hnnce_direction(x, _labels(), 1.0, 0.0), s)
    torch.testing.assert_close(zero, info, rtol=1e-5, atol=1e-7)  # HN-NCE runs in float32
    soft = _logit_grad(lambda x: hnnce_direction(x, _labels(), 1.0, -0.5), s)
    assert bool((_hardest_share(soft, s) < base).all())


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.5), (0.5, 1.0), (1.0, 0.0)])
def test_logit_gradient_matches_the_written_out_formula(alpha: float, beta: float) -> None:
    s = _logits(seed=2)
    ours = _logit_grad(lambda x: hnnce_direction(x, _labels(), alpha, beta), s)
    ref = _logit_grad(lambda x: _reference_loss(x, alpha, beta), s)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------- loss scale (DiHT)
def _features(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(B, 32, generator=g), dim=-1)
    txt = F.normalize(torch.randn(B, 32, generator=g), dim=-1)
    return img, txt


def test_infonce_limit_in_both_reductions_against_open_clip() -> None:
    img, txt = _features()
    scale = torch.tensor(SCALE)
    theirs = open_clip.loss.ClipLoss()(img, txt, scale)  # (L_i2t + L_t2i) / 2
    for reduction, factor in (("mean", 1.0), ("sum", 2.0)):
        obj = OBJECTIVES.build({"name": "hnnce", "beta1": 0.0, "reduction": reduction})
        out = obj(gather_features(img, txt), scale, {}, 0.0)
        torch.testing.assert_close(out.loss, factor * theirs, rtol=1e-6, atol=1e-6)


def test_diht_sums_both_directions(make_cfg) -> None:
    """objective=diht's contrastive term is L_i2t + L_t2i (twice open_clip's CLIP loss at beta 0)."""
    cfg = make_cfg(
        [
            "objective=diht",
            "objective.terms.concepts.weight=0",
            "objective.terms.contrastive.beta1=0.0",
        ]
    )
    obj = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=32)
    img, txt = _features(seed=4)
    scale = torch.tensor(SCALE)
    out = obj(gather_features(img, txt), scale, {}, 0.5)
    theirs = open_clip.loss.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(out.loss, 2.0 * theirs, rtol=1e-6, atol=1e-6)
    parts = out.components["contrastive/loss_i2t"] + out.components["contrastive/loss_t2i"]
    torch.testing.assert_close(out.loss, parts)
    # objective=clip keeps CLIP's mean of the two directions
    clip = OBJECTIVES.build("clip")(gather_features(img, txt), scale, {}, 0.5)
    torch.testing.assert_close(clip.loss, theirs, rtol=1e-6, atol=1e-6)
