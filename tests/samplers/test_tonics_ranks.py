"""TOnICS sampler under data parallelism: rank slices, determinism, exact resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vlexp.data.types import TagTable
from vlexp.samplers.tonics import TonicsBatchSampler

SCHEDULE = {"name": "linear", "p_max": 0.6, "start": 0.0, "end": 1.0}


def table() -> TagTable:
    rng = np.random.default_rng(7)
    tags = [sorted(set(rng.integers(0, 15, rng.integers(0, 4)).tolist())) for _ in range(1500)]
    parents = [15 + c % 3 for c in range(15)] + [-1, -1, -1]
    return TagTable.from_lists(tags, [f"c{i}" for i in range(18)], parents)


TABLE = table()


def make(rank: int = 0, world_size: int = 1, seed: int = 0, **kw: Any) -> TonicsBatchSampler:
    kw.setdefault("schedule", SCHEDULE)
    return TonicsBatchSampler(
        TABLE.num_pairs,
        6,
        seed=seed,
        rank=rank,
        world_size=world_size,
        tags=TABLE,
        total_steps=150,
        **kw,
    )


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_are_disjoint_and_equally_long(world_size: int) -> None:
    samplers = [make(r, world_size) for r in range(world_size)]
    for s in samplers:
        s.set_epoch(1)
    per_rank = [list(s) for s in samplers]
    lengths = {len(b) for b in per_rank}
    assert lengths == {len(samplers[0])} == {1500 // (6 * world_size)}
    plan = samplers[0].plan_epoch(1)
    for step, batches in enumerate(zip(*per_rank)):
        assert all(len(b) == 6 for b in batches)
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat)  # no pair on two ranks in one step
        assert flat == plan[step].tolist()  # rank r holds slice r of the global batch
    # every rank planned the same global batches
    for s in samplers[1:]:
        np.testing.assert_array_equal(s.plan_epoch(1), plan)


def test_deterministic_from_seed_and_epoch() -> None:
    a, b = make(seed=3), make(seed=3)
    for epoch in (0, 2):
        np.testing.assert_array_equal(a.plan_epoch(epoch), b.plan_epoch(epoch))
        np.testing.assert_array_equal(a.epoch_plan(epoch).phase, b.epoch_plan(epoch).phase)
    # asking in another order gives the same plans (no hidden state between epochs)
    c = make(seed=3)
    c.plan_epoch(2)
    np.testing.assert_array_equal(c.plan_epoch(0), a.plan_epoch(0))


def test_epochs_and_seeds_differ() -> None:
    s = make(seed=3)
    e0, e1 = s.plan_epoch(0).copy(), s.plan_epoch(1).copy()
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(make(seed=4).plan_epoch(0), e0)


@pytest.mark.parametrize("walk", [False, True])
def test_resume_reproduces_the_remaining_batches(walk: bool) -> None:
    world, rank, k = 2, 1, 17
    full = make(rank, world, ontology_walk=walk)
    full.set_epoch(1)
    expected = list(full)

    first = make(rank, world, ontology_walk=walk)
    first.set_epoch(1)
    it = iter(first)
    done = [next(it) for _ in range(k)]
    assert done == expected[:k]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches_done": k}

    resumed = make(rank, world, ontology_walk=walk)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert rest == expected[k:]
    # the per-batch stats continue where they stopped
    assert resumed.stats["same_object_share"] == pytest.approx(full.stats["same_object_share"])
    # the next epoch starts from its first batch
    resumed.set_epoch(2)
    assert len(list(resumed)) == len(resumed)
