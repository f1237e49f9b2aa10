"""2-process gloo DDP local loss == one process holding the concatenated batch."""

import pytest
import torch
import torch.nn.functional as F

from tests.ddp_harness import assert_same, ddp_loss_and_grads, rank_slice
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features

B_LOCAL, D_IN, D = 6, 10, 8
# softalign's default EMA teacher needs an encoder; its self teacher exercises the same layout
CONFIGS = {
    "softalign": {
        "name": "softalign",
        "teacher": "self",
        "use_student_scale": False,
        "teacher_temperature": 0.1,
    }
}


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * B_LOCAL, D_IN, generator=g), torch.randn(2 * B_LOCAL, D_IN, generator=g)


def _towers():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)


def _loss_and_grads(objective, img_tower, txt_tower, x_img, x_txt):
    img = F.normalize(img_tower(x_img), dim=-1)
    txt = F.normalize(txt_tower(x_txt), dim=-1)
    out = objective(gather_features(img, txt), torch.tensor(12.0), {}, 0.5)
    out.loss.backward()
    grads = [p.grad.clone() for p in (*img_tower.parameters(), *txt_tower.parameters())]
    return out.loss.detach(), grads


def _rank_loss(rank: int, name: str):
    x_img, x_txt = _inputs()
    sl = rank_slice(rank, B_LOCAL)
    return _loss_and_grads(
        OBJECTIVES.build(CONFIGS.get(name, name)), *_towers(), x_img[sl], x_txt[sl]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip", "hnnce", "softalign"])
def test_two_process_matches_single_process(name):
    ddp = ddp_loss_and_grads(_rank_loss, name)
    single = _loss_and_grads(OBJECTIVES.build(CONFIGS.get(name, name)), *_towers(), *_inputs())
    assert_same(ddp, single)
