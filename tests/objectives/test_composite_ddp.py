"""objective=diht (HN-NCE + cached concept distillation) under 2-process gloo DDP."""

import pytest
import torch
import torch.nn.functional as F

from tests.ddp_harness import assert_same, ddp_loss_and_grads, rank_slice
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher
from vlexp.objectives.distributed import gather_features

B_LOCAL, D_IN, D, C = 6, 10, 8, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2 * B_LOCAL, D_IN, generator=g),
        torch.randn(2 * B_LOCAL, D_IN, generator=g),
        torch.randn(2 * B_LOCAL, C, generator=g),
    )


def _objective(teacher_path: str):
    torch.manual_seed(2)  # same head initialisation in every process
    obj = OBJECTIVES.build(
        {
            "name": "composite",
            "terms": {
                "contrastive": {"name": "hnnce", "beta1": 0.5, "beta2": 0.8},
                "concepts": {
                    "name": "concepts",
                    "weight": 0.7,
                    "text_weight": 0.3,
                    "teacher": {"name": "synthetic", "weights": teacher_path},
                },
            },
        },
        embed_dim=D,
    )
    obj.terms["concepts"].set_targets(_inputs()[2])
    return obj


def _loss_and_grads(objective, x_img, x_txt, index):
    torch.manual_seed(1)
    towers = torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)
    img = F.normalize(towers[0](x_img), dim=-1)
    txt = F.normalize(towers[1](x_txt), dim=-1)
    out = objective(gather_features(img, txt), torch.tensor(12.0), {"index": index}, 0.5)
    out.loss.backward()
    params = [*towers[0].parameters(), *towers[1].parameters(), *objective.parameters()]
    return out.loss.detach(), [p.grad.clone() for p in params]


def _rank_loss(rank: int, teacher_path: str):
    x_img, x_txt, _ = _inputs()
    sl = rank_slice(rank, B_LOCAL)
    return _loss_and_grads(
        _objective(teacher_path), x_img[sl], x_txt[sl], torch.arange(2 * B_LOCAL)[sl]
    )


@pytest.mark.slow
def test_diht_two_process_matches_single_process(tmp_path):
    teacher_path = str(tmp_path / "teacher.pt")
    save_synthetic_teacher(
        SmallCNN(C, width=4), [f"c{i}" for i in range(C)], 16, (0.5,) * 3, (0.5,) * 3, teacher_path
    )
    ddp_loss, ddp_grads = ddp_loss_and_grads(_rank_loss, teacher_path)
    x_img, x_txt, _ = _inputs()
    loss, grads = _loss_and_grads(_objective(teacher_path), x_img, x_txt, torch.arange(2 * B_LOCAL))
    assert len(grads) == 10  # 2 towers (w, b) + 2 concept heads (w, b, scale)
    assert_same((ddp_loss, ddp_grads), (loss, grads))
