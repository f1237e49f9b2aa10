"""One harness for the 2-process gloo DDP tests: run a loss on each rank, average what
DDP averages, and hand rank 0's result back to the test process.

Results cross the process boundary as numpy arrays (pickled by value): a tensor put on a
queue is shared through the sending process's memory, which is gone once that process
exits.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2

LossAndGrads = tuple[torch.Tensor, list[torch.Tensor]]


def rank_slice(rank: int, local_batch: int) -> slice:
    """The rows of the global batch that ``rank`` holds."""
    return slice(rank * local_batch, (rank + 1) * local_batch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int,
    world: int,
    port: int,
    compute: Callable[..., LossAndGrads],
    args: tuple,
    queue,
):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss, grads = compute(rank, *args)
        for g in grads:  # what DDP does with parameter gradients: average over ranks
            dist.all_reduce(g)
            g /= world
        dist.all_reduce(loss)
        if rank == 0:
            queue.put(((loss / world).numpy(), [g.numpy() for g in grads]))
    finally:
        dist.destroy_process_group()


def ddp_loss_and_grads(
    compute: Callable[..., LossAndGrads],
    *args: Any,
    timeout: float = 120.0,
    world_size: int = WORLD_SIZE,
) -> LossAndGrads:
    """Run ``compute(rank, *args) -> (loss, grads)`` on ``world_size`` (default 2) gloo
    ranks; the rank-averaged loss and gradients (``compute`` must be a module-level
    function: ranks are spawned)."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, world_size, port, compute, args, queue))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    loss, grads = queue.get()
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"rank process exited with {p.exitcode}"
    return torch.from_numpy(loss), [torch.from_numpy(g) for g in grads]


def assert_same(ddp: LossAndGrads, single: LossAndGrads, tol: float = 1e-5) -> None:
    """DDP's averaged loss and gradients equal one process holding the whole batch."""
    torch.testing.assert_close(ddp[0], single[0], rtol=tol, atol=tol)
    assert len(ddp[1]) == len(single[1])
    for a, b in zip(ddp[1], single[1]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
