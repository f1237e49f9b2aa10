"""2-process gloo DDP local loss == one process holding the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

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


def _worker(rank: int, port: int, name: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x_img, x_txt = _inputs()
    sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    loss, grads = _loss_and_grads(
        OBJECTIVES.build(CONFIGS.get(name, name)), *_towers(), x_img[sl], x_txt[sl]
    )
    # what DDP does with parameter gradients: average over ranks
    for g in grads:
        dist.all_reduce(g)
        g /= 2
    dist.all_reduce(loss)
    if rank == 0:
        queue.put((loss / 2, grads))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["clip", "hnnce", "softalign"])
def test_two_process_matches_single_process(name):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, name, queue)) for r in range(2)]
    for p in procs:
        p.start()
    ddp_loss, ddp_grads = queue.get()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    loss, grads = _loss_and_grads(OBJECTIVES.build(CONFIGS.get(name, name)), *_towers(), *_inputs())
    torch.testing.assert_close(ddp_loss, loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(ddp_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
