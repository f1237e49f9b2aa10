"""TOnICS sampler: phase invariants, schedule use, small-object and untagged policies."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch

from vlexp.data.types import TagTable
from vlexp.samplers import SAMPLERS
from vlexp.samplers.tonics import DIVERSE, SAME_OBJECT, TonicsBatchSampler


def single_tag_table(sizes: list[int], parents: list[int] | None = None, seed: int = 0) -> TagTable:
    """Class ``c`` tags ``sizes[c]`` pairs, one tag per pair, pairs in random order."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(seed).shuffle(labels)
    names = [f"c{i}" for i in range(len(sizes))]
    return TagTable.from_lists([[int(c)] for c in labels], names, parents)


def multi_tag_table(
    n: int, num_classes: int, seed: int = 0, untagged: float = 0.0
) -> tuple[TagTable, list[list[int]]]:
    rng = np.random.default_rng(seed)
    tags = []
    for _ in range(n):
        if rng.random() < untagged:
            tags.append([])
        else:
            tags.append(sorted(set(rng.integers(0, num_classes, rng.integers(1, 4)).tolist())))
    return TagTable.from_lists(tags, [f"c{i}" for i in range(num_classes)]), tags


def make(table: TagTable, batch_size: int, **kw: Any) -> TonicsBatchSampler:
    kw.setdefault("total_steps", 1000)
    return TonicsBatchSampler(table.num_pairs, batch_size, tags=table, **kw)


def tag_sets(table: TagTable) -> list[set[int]]:
    return [set(table.tags_of(i).tolist()) for i in range(table.num_pairs)]


# ----------------------------------------------------------------------------- diverse
def test_diverse_batches_have_distinct_objects_when_possible() -> None:
    table = single_tag_table([40] * 30)  # 1200 pairs, 30 classes of 40
    s = make(table, 16, schedule={"name": "constant", "p": 0.0})
    plan = s.plan_epoch(0)
    assert plan.shape == (75, 16)  # 75 diverse batches >= 40 pairs per class
    labels = table.values  # one tag per pair: pair i's tag is values[i]
    for row in plan:
        assert len(set(labels[row].tolist())) == 16
    assert sorted(plan.ravel().tolist()) == list(range(1200))  # every pair once
    assert s.stats["diverse_distinct_objects"] == 16


def test_diverse_spreads_a_dominant_object_evenly() -> None:
    table = single_tag_table([600, 100, 100, 100, 100])  # one class holds 60%
    s = make(table, 10, schedule={"name": "constant", "p": 0.0})
    plan = s.plan_epoch(0)
    nd = len(plan)  # 100 diverse batches; class 0 has 600 pairs -> 6 per batch
    labels = table.values
    for row in plan:
        counts = Counter(labels[row].tolist())
        assert counts[0] <= math.ceil(600 / nd)
        assert max(counts[c] for c in range(1, 5)) <= 1  # 100 pairs over 100 batches


def test_diverse_uses_each_pairs_sampled_object(monkeypatch: pytest.MonkeyPatch) -> None:
    table, tags = multi_tag_table(960, 200, seed=1)
    s = make(table, 8, schedule={"name": "constant", "p": 0.0})
    seen: dict[int, int] = {}
    original = s._sampled_objects

    def record(rng: np.random.Generator, sel: np.ndarray) -> np.ndarray:
        obj = original(rng, sel)
        seen.update(zip(sel.tolist(), obj.tolist()))
        return obj

    monkeypatch.setattr(s, "_sampled_objects", record)
    plan = s.plan_epoch(0)
    assert len(seen) == plan.size
    for i, o in seen.items():
        assert o in tags[i]
    # 120 diverse batches and no class is sampled by more than 120 pairs: all distinct
    assert max(Counter(seen.values()).values()) <= len(plan)
    for row in plan:
        objs = [seen[i] for i in row.tolist()]
        assert len(set(objs)) == len(objs)


def test_rarest_tag_choice() -> None:
    tags = [[0, 1], [0], [0], [0, 2], [1, 2], [2]] * 20
    table = TagTable.from_lists(tags, ["a", "b", "c"])  # counts a 80, b 40, c 60
    s = make(table, 4, schedule={"name": "constant", "p": 0.0}, diverse_tag_choice="rarest")
    np.testing.assert_array_equal(s._rarest[:6], [1, 0, 0, 2, 1, 2])


# ----------------------------------------------------------------------------- same object
def test_same_object_batches_share_one_object() -> None:
    table, tags = multi_tag_table(3000, 12, seed=2)
    s = make(table, 20, schedule={"name": "constant", "p": 1.0}, small_object_policy="skip")
    plan = s.epoch_plan(0)
    assert np.all(plan.phase == SAME_OBJECT)
    for row, obj in zip(plan.batches, plan.objects):
        assert obj >= 0
        assert all(obj in tags[i] for i in row.tolist())
        assert len(set(row.tolist())) == len(row)
    # half same-object batches leave enough unused pairs: nothing is used twice
    s = make(table, 20, schedule={"name": "constant", "p": 0.5}, small_object_policy="skip")
    plan = s.epoch_plan(0)
    assert 0 < plan.phase.mean() < 1
    assert len(np.unique(plan.batches)) == plan.batches.size
    assert s.stats["repeated_pair_share"] == 0.0


def test_object_weighting() -> None:
    table = single_tag_table([200, 800])
    counts = {}
    for weighting in ("pairs", "uniform"):
        s = make(table, 4, schedule={"name": "constant", "p": 1.0}, object_weighting=weighting)
        objects = s.epoch_plan(0).objects
        counts[weighting] = np.bincount(objects, minlength=2) / len(objects)
    # 250 batches; binomial sd about 0.03
    assert counts["pairs"][1] == pytest.approx(0.8, abs=0.1)
    assert counts["uniform"][1] == pytest.approx(0.5, abs=0.1)


def test_phase_follows_schedule() -> None:
    table = single_tag_table([100] * 40)
    s = make(
        table,
        4,
        total_steps=2000,
        schedule={"name": "linear", "p_max": 0.8, "start": 0.0, "end": 1.0},
    )
    nb = s.batches_per_epoch()  # 1000
    for epoch in (0, 1):
        plan = s.epoch_plan(epoch)
        steps = epoch * nb + np.arange(nb)
        np.testing.assert_allclose(plan.prob, 0.8 * steps / 2000)  # independent formula
        share = plan.phase.mean()
        assert share == pytest.approx(plan.prob.mean(), abs=0.05)
    # epoch 0 has mean p 0.2, epoch 1 mean p 0.6
    assert s.epoch_plan(0).phase.mean() < s.epoch_plan(1).phase.mean()


def test_stats_and_batch_phase() -> None:
    table = single_tag_table([50] * 20)
    s = make(table, 8, total_steps=250, schedule={"name": "linear", "p_max": 1.0, "end": 1.0})
    s.set_epoch(0)
    plan = s.epoch_plan(0)
    for b, _ in enumerate(s):
        assert s.stats["same_object_prob"] == pytest.approx(b / 250)
        assert s.stats["same_object_batch"] == float(plan.phase[b])
        assert s.stats["same_object_share"] == pytest.approx(plan.phase[: b + 1].mean())
        assert s.batch_phase(b) == ("same_object" if plan.phase[b] else "diverse")
    assert s.stats["epoch_same_object_share"] == pytest.approx(plan.phase.mean())
    assert set(s.stats) >= {"untagged_pairs", "untagged_share", "diverse_distinct_objects"}
    assert all(isinstance(v, float) for v in s.stats.values())


# ----------------------------------------------------------------------------- small objects
def test_skip_policy_never_draws_small_objects() -> None:
    table = single_tag_table([5, 100, 7, 200])
    s = make(table, 16, schedule={"name": "constant", "p": 1.0}, small_object_policy="skip")
    assert s.group_index().eligible.tolist() == [1, 3]
    assert set(s.epoch_plan(0).objects.tolist()) <= {1, 3}
    with pytest.raises(ValueError, match="no object group"):
        make(
            single_tag_table([5] * 20),
            16,
            schedule={"name": "constant", "p": 1.0},
            small_object_policy="skip",
        )


def test_replacement_policy_fills_small_objects_with_repeats() -> None:
    table = single_tag_table([3, 300, 1])
    s = make(
        table,
        8,
        schedule={"name": "constant", "p": 1.0},
        small_object_policy="replacement",
        object_weighting="uniform",
    )
    assert s.group_index().eligible.tolist() == [0, 1]  # class 2 has 1 < min_object_pairs
    plan = s.epoch_plan(0)
    small = [row for row, o in zip(plan.batches, plan.objects) if o == 0]
    assert small, "uniform weighting should draw the 3-pair class"
    members = set(np.flatnonzero(table.values == 0).tolist())
    for row in small:
        assert set(row.tolist()) == members  # all 3 pairs, the rest repeats of them
    assert s.stats["repeated_pair_share"] > 0


def test_parent_policy_merges_small_objects_into_their_parent() -> None:
    # classes 0..3 are small leaves of parent 4; class 5 is a big leaf of parent 4
    parents = [4, 4, 4, 4, -1, 4]
    table = single_tag_table([6, 5, 4, 3, 0, 200], parents)
    s = make(
        table,
        16,
        schedule={"name": "constant", "p": 1.0},
        small_object_policy="parent",
        object_weighting="uniform",
    )
    idx = s.group_index()
    assert idx.eligible.tolist() == [4, 5]
    assert sorted(idx.members(4).tolist()) == sorted(np.flatnonzero(table.values < 4).tolist())
    plan = s.epoch_plan(0)
    assert set(plan.objects.tolist()) == {4, 5}
    for row, obj in zip(plan.batches, plan.objects):
        for i in row.tolist():
            tag = int(table.values[i])
            assert tag == obj or parents[tag] == obj  # the object or a descendant of it


def test_parent_policy_drops_small_roots() -> None:
    table = single_tag_table([3, 100])  # flat ontology: class 0 has no parent to merge into
    s = make(table, 8, schedule={"name": "constant", "p": 1.0})
    assert s.group_index().eligible.tolist() == [1]


# ----------------------------------------------------------------------------- ontology walk
def test_ontology_walk_goes_from_parents_to_leaves() -> None:
    parents = [4, 4, 5, 5, -1, -1]
    table = single_tag_table([100, 100, 100, 100, 0, 0], parents)
    s = make(
        table,
        4,
        total_steps=100,
        schedule={"name": "constant", "p": 1.0},
        ontology_walk={"start": 0.0, "end": 1.0},
    )
    plan = s.epoch_plan(0)  # 100 batches = the whole training
    assert s.num_levels == 2
    np.testing.assert_array_equal(plan.level, (np.arange(100) >= 50).astype(int))
    assert set(plan.objects[:50].tolist()) <= {4, 5}
    assert set(plan.objects[50:].tolist()) <= {0, 1, 2, 3}
    for row, obj in zip(plan.batches[:50], plan.objects[:50]):
        assert all(parents[int(table.values[i])] == obj for i in row.tolist())
    s.set_epoch(0)
    next(iter(s))
    assert s.stats["ontology_level"] == 0.0


# ----------------------------------------------------------------------------- untagged pairs
def test_untagged_diverse_only() -> None:
    table, tags = multi_tag_table(1000, 10, seed=4, untagged=0.2)
    untagged = {i for i, t in enumerate(tags) if not t}
    s = make(table, 10, total_steps=100, schedule={"name": "constant", "p": 0.5})
    assert s.stats["untagged_pairs"] == len(untagged)
    assert s.stats["untagged_share"] == pytest.approx(len(untagged) / 1000)
    plan = s.epoch_plan(0)
    assert len(plan.batches) == 100
    for row, phase in zip(plan.batches, plan.phase):
        if phase == SAME_OBJECT:
            assert not untagged & set(row.tolist())
    diverse_pairs = set(plan.batches[plan.phase == DIVERSE].ravel().tolist())
    assert untagged <= diverse_pairs  # all of them fit in the diverse batches here


def test_untagged_drop() -> None:
    table, tags = multi_tag_table(1000, 10, seed=4, untagged=0.2)
    untagged = {i for i, t in enumerate(tags) if not t}
    s = make(
        table, 10, total_steps=100, schedule={"name": "constant", "p": 0.5}, untagged_policy="drop"
    )
    assert len(s) == (1000 - len(untagged)) // 10
    for e in range(3):
        assert not untagged & set(s.plan_epoch(e).ravel().tolist())
    assert s.stats["untagged_pairs"] == len(untagged)


# ----------------------------------------------------------------------------- config/errors
def test_built_from_config_through_registry() -> None:
    table = single_tag_table([100] * 10)
    s = SAMPLERS.build(
        {
            "name": "tonics",
            "schedule": {"name": "step", "at": 0.5, "p_max": 1.0},
            "small_object_policy": "skip",
            "object_weighting": "sqrt",
        },
        num_samples=1000,
        batch_size=10,
        seed=1,
        rank=0,
        world_size=1,
        tags=table,
        total_steps=200,
    )
    assert isinstance(s, TonicsBatchSampler)
    plan = s.epoch_plan(1)  # progress 0.5..1 -> all same-object
    assert np.all(plan.phase == SAME_OBJECT)
    assert np.all(s.epoch_plan(0).phase == DIVERSE)


def test_clear_errors() -> None:
    table = single_tag_table([100] * 10)
    with pytest.raises(ValueError, match="needs object tags"):
        TonicsBatchSampler(1000, 10, tags=None, total_steps=10)
    with pytest.raises(ValueError, match="1000 pairs"):
        TonicsBatchSampler(1000, 10, tags=single_tag_table([50] * 10), total_steps=10)
    with pytest.raises(ValueError, match="training length"):
        TonicsBatchSampler(1000, 10, tags=table)
    with pytest.raises(ValueError, match="small_object_policy"):
        make(table, 10, small_object_policy="merge")
    # a constant schedule needs no training length; `epochs` supplies one otherwise
    TonicsBatchSampler(1000, 10, tags=table, schedule={"name": "constant", "p": 0.3})
    s = TonicsBatchSampler(1000, 10, tags=table, epochs=4)
    assert s.progress(2, 0) == pytest.approx(0.5)


def test_lightning_trainer_advances_the_sampler_epoch():
    """Lightning only calls ``set_epoch`` on ``batch_sampler.sampler``: epoch e must draw
    ``plan_epoch(e)`` under a real Trainer, not replay epoch 0."""
    import lightning as L
    from torch.utils.data import DataLoader

    sampler = SAMPLERS.build({"name": "random"}, num_samples=64, batch_size=8, seed=3)
    seen: list[list[int]] = []

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append(batch.tolist())
            return (self.w * batch.float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = DataLoader(list(range(64)), batch_sampler=sampler)
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        accelerator="cpu",
    )
    trainer.fit(Recorder(), train_dataloaders=loader)
    expected = [b.tolist() for e in range(3) for b in sampler.plan_epoch(e)]
    assert seen == expected
    assert seen[:8] != seen[8:16]
