"""objective=diht (HN-NCE + cached concept distillation) under 2-process gloo DDP."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features
from vlexp.teachers import SmallCNN, save_synthetic_teacher

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


def _worker(rank: int, port: int, teacher_path: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x_img, x_txt, _ = _inputs()
    sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    loss, grads = _loss_and_grads(
        _objective(teacher_path), x_img[sl], x_txt[sl], torch.arange(2 * B_LOCAL)[sl]
    )
    for g in grads:  # what DDP does with parameter gradients: average over ranks
        dist.all_reduce(g)
        g /= 2
    dist.all_reduce(loss)
    if rank == 0:
        queue.put((loss / 2, grads))
    dist.destroy_process_group()


def test_diht_two_process_matches_single_process(tmp_path):
    teacher_path = str(tmp_path / "teacher.pt")
    save_synthetic_teacher(
        SmallCNN(C, width=4), [f"c{i}" for i in range(C)], 16, (0.5,) * 3, (0.5,) * 3, teacher_path
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(r, port, teacher_path, queue)) for r in range(2)]
    for p in procs:
        p.start()
    ddp_loss, ddp_grads = queue.get()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    x_img, x_txt, _ = _inputs()
    loss, grads = _loss_and_grads(_objective(teacher_path), x_img, x_txt, torch.arange(2 * B_LOCAL))
    torch.testing.assert_close(ddp_loss, loss, rtol=1e-5, atol=1e-5)
    assert len(ddp_grads) == len(grads) == 8  # 2 towers (w, b) + 2 concept heads (w, b)
    for a, b in zip(ddp_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
