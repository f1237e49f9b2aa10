"""TOnICS mechanism: over a whole planned training with the shipped default schedule, the
batches move from diverse to same-object and end in same-object batches only.

A batch is classified from the pairs' own tag lists (all pairs share a class, or an
ancestor class with an ontology), never from the sampler's phase flags, and the realised
share per progress window is compared with the schedule written out by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from vlexp.data.types import TagTable
from vlexp.samplers import SAMPLERS
from vlexp.samplers.tagging import split_sampler_config


def shipped_options() -> dict[str, Any]:
    """``sampler=tonics`` as Hydra composes it (the sampler preset + its schedule preset)."""
    from tests.conftest import compose_cfg

    cfg = OmegaConf.to_container(compose_cfg(["sampler=tonics"]).sampler, resolve=True)
    return split_sampler_config(cfg)[0]  # type: ignore[arg-type]


def expected_prob(t: np.ndarray) -> np.ndarray:
    """The documented default: 0 -> 1 linearly over the first 80% of training, then 1."""
    return np.minimum(t / 0.8, 1.0)


def random_tags(n: int, num_classes: int, rng: np.random.Generator) -> list[list[int]]:
    """One primary class per pair, a second one for 30% of the pairs."""
    tags = []
    for _ in range(n):
        t = [int(rng.integers(num_classes))]
        if rng.random() < 0.3:
            t.append(int(rng.integers(num_classes)))
        tags.append(sorted(set(t)))
    return tags


def run_training(table: TagTable, batch_size: int, epochs: int, **kw: Any) -> list[list[int]]:
    """Every batch a trainer would draw over ``epochs`` epochs (set_epoch + iterate)."""
    steps = epochs * (table.num_pairs // batch_size)
    sampler = SAMPLERS.build(
        shipped_options() | kw,
        num_samples=table.num_pairs,
        batch_size=batch_size,
        seed=7,
        tags=table,
        total_steps=steps,
    )
    batches = []
    for e in range(epochs):
        sampler.set_epoch(e)
        batches.extend(sampler)
    assert len(batches) == steps
    return batches


def shared_class(batch: list[int], tag_sets: list[set[int]]) -> bool:
    common = set(tag_sets[batch[0]])
    for i in batch[1:]:
        common &= tag_sets[i]
        if not common:
            return False
    return True


def test_default_schedule_is_followed_to_the_end_and_ends_in_same_object_batches() -> None:
    rng = np.random.default_rng(0)
    tags = random_tags(4000, 40, rng)
    table = TagTable.from_lists(tags, [f"c{i}" for i in range(40)])
    tag_sets = [set(t) for t in tags]
    batches = run_training(table, batch_size=8, epochs=4)  # 2000 steps
    same = np.array([shared_class(b, tag_sets) for b in batches])
    t = np.arange(len(batches)) / len(batches)

    late = t >= 0.8
    assert late.sum() == 400
    assert same[late].all(), "every batch of the last fifth must share one object"
    assert same[-1]

    for w in range(10):  # windows of 10% of training
        rows = (t >= w / 10) & (t < (w + 1) / 10)
        p = expected_prob(t[rows]).mean()
        sd = np.sqrt(p * (1 - p) / rows.sum())
        assert abs(same[rows].mean() - p) <= 4.5 * sd + 1e-9, (w, same[rows].mean(), p)
    # the whole run: 0.6 of the batches are same-object (integral of the schedule)
    assert same.mean() == pytest.approx(0.6, abs=4.5 * np.sqrt(0.24 / len(same)))
    # early diverse batches really are diverse: no shared object in the first 5%
    first = t < 0.05
    assert same[first].mean() <= 0.1


def test_late_batches_share_an_ontology_class_when_small_leaves_merge() -> None:
    """Leaves smaller than a batch merge into their parent (default ``parent`` policy):
    late batches then share the parent class, through each pair's ancestors."""
    rng = np.random.default_rng(1)
    parents = [-1, -1, -1] + [k % 3 for k in range(12)]  # 3 roots, 12 leaves
    sizes = [0, 0, 0] + [int(s) for s in rng.choice([4, 30, 200], size=12)]
    tags = [[c] for c, s in enumerate(sizes) for _ in range(s)]
    order = rng.permutation(len(tags))
    tags = [tags[i] for i in order]
    table = TagTable.from_lists(tags, [f"c{i}" for i in range(15)], parents)
    closure = [{c, parents[c]} - {-1} for t in tags for c in t]
    batches = run_training(table, batch_size=16, epochs=2)
    t = np.arange(len(batches)) / len(batches)
    late = [b for b, tt in zip(batches, t) if tt >= 0.8]
    assert late
    assert all(shared_class(b, closure) for b in late)
