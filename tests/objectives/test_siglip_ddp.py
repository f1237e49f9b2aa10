"""SigLIP over gloo ranks (text chunks passed around the ring) == one process.

Loss and the gradients of both towers, the logit scale and the bias are compared; the
ranks never all-gather (the exchange is point to point). Three ranks make the ring's
direction matter: with two, the previous and the next rank are the same one.
"""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tests.ddp_harness import assert_same, ddp_loss_and_grads, rank_slice
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features

B_LOCAL, D_IN, D = 5, 10, 8


def _inputs(world: int):
    g = torch.Generator().manual_seed(0)
    n = world * B_LOCAL
    return torch.randn(n, D_IN, generator=g), torch.randn(n, D_IN, generator=g)


def _setup():
    torch.manual_seed(1)
    img_tower, txt_tower = torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)
    objective = OBJECTIVES.build({"name": "siglip", "init_bias": -2.0})  # non-saturated terms
    log_scale = torch.tensor(1.5, requires_grad=True)
    return img_tower, txt_tower, objective, log_scale


def _loss_and_grads(x_img, x_txt):
    img_tower, txt_tower, objective, log_scale = _setup()
    img = F.normalize(img_tower(x_img), dim=-1)
    txt = F.normalize(txt_tower(x_txt), dim=-1)
    out = objective(gather_features(img, txt), log_scale.exp(), {}, 0.0)
    out.loss.backward()
    params = (*img_tower.parameters(), *txt_tower.parameters(), log_scale, objective.logit_bias)
    return out.loss.detach(), [p.grad.clone() for p in params]


def _no_gather(*args, **kwargs):
    raise AssertionError("SigLIP must not all-gather the batch")


def _rank_loss(rank: int, world: int):
    dist.all_gather = _no_gather  # this spawned process only
    dist.all_gather_into_tensor = _no_gather
    x_img, x_txt = _inputs(world)
    sl = rank_slice(rank, B_LOCAL)
    return _loss_and_grads(x_img[sl], x_txt[sl])


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_ring_over_ranks_matches_one_process(world):
    ddp = ddp_loss_and_grads(_rank_loss, world, world_size=world)
    single = _loss_and_grads(*_inputs(world))
    assert_same(ddp, single)


def test_one_process_batch_has_the_other_ranks_negatives():
    """Without the ring a rank would score only its own texts: its loss would be smaller."""
    x_img, x_txt = _inputs(2)
    full = _loss_and_grads(x_img, x_txt)[0]
    halves = [_loss_and_grads(x_img[rank_slice(r, B_LOCAL)], x_txt[rank_slice(r, B_LOCAL)])[0]
              for r in range(2)]  # fmt: skip
    assert full > sum(halves) / 2 + 1e-3
