"""TOnICS groups from what a pair is about: a pair joins an object's group when its caption
names the object (``sampler.tagging.groups=named``), not whenever the image shows it."""

from __future__ import annotations

import numpy as np
import pytest

from vlexp.data.readers.memory import InMemoryPairs
from vlexp.data.sources.synthetic import synthetic_splits
from vlexp.data.tags import CaptionTagger, Ontology
from vlexp.data.types import TagTable
from vlexp.samplers.tagging import named_tags, resolve_train_tags
from vlexp.samplers.tonics import SAME_OBJECT, TonicsBatchSampler


def _cfg(groups: str, **tagging) -> dict:
    base = {"source": "auto", "ontology": "coco", "backend": "rules", "lemmatize": True}
    return {"tagging": {**base, "path": None, "groups": groups, **tagging}, "min_tag_coverage": 0.5}


def _sets(table: TagTable) -> list[set[str]]:
    return [{table.class_names[c] for c in table.tags_of(i)} for i in range(table.num_pairs)]


def test_named_tags_match_a_per_pair_intersection_by_name():
    rng = np.random.default_rng(0)
    data_names = ["dog", "cat", "car", "bench", "kite"]
    cap_names = ["kite", "person", "Dog", "car"]  # another order, a class the data lacks, a case
    data = TagTable.from_lists(
        [rng.choice(5, rng.integers(0, 4), replace=False).tolist() for _ in range(200)], data_names
    )
    caps = TagTable.from_lists(
        [rng.choice(4, rng.integers(0, 3), replace=False).tolist() for _ in range(200)], cap_names
    )
    out = named_tags(data, caps)
    assert out.class_names == data_names
    for i in range(200):
        said = {cap_names[c].lower() for c in caps.tags_of(i)}
        expected = [c for c in data.tags_of(i) if data_names[c] in said]  # data order kept
        assert out.tags_of(i).tolist() == expected
    with pytest.raises(ValueError, match="caption tags"):
        named_tags(data, caps.subset(np.arange(10)))


def test_data_tags_count_only_where_the_caption_names_them():
    captions = ["two men riding bicycles", "a dog on a couch near a cat", "a red car", "a kite"]
    names = ["person", "bicycle", "dog", "cat", "car", "kite", "couch"]
    image_tags = [[0, 1, 2], [2, 3, 6, 4], [4, 0], [5, 0]]  # the images show more
    src = InMemoryPairs([None] * 4, captions, image_tags, class_names=names)  # type: ignore[list-item]
    named = resolve_train_tags(src, None, _cfg("named"))
    # "men" is COCO's synonym of person; the car's driver and the kite's flyer go unnamed
    assert _sets(named.table) == [
        {"person", "bicycle"},
        {"dog", "cat", "couch"},
        {"car"},
        {"kite"},
    ]
    assert named.report.source == "data+captions" and named.report.coverage == 1.0
    anywhere = resolve_train_tags(src, None, _cfg("any"))
    assert _sets(anywhere.table) == [{names[c] for c in t} for t in image_tags]
    with pytest.raises(ValueError, match="sampler.tagging.groups"):
        resolve_train_tags(src, None, _cfg("main"))


@pytest.fixture(scope="module")
def synthetic_train():
    return synthetic_splits(seed=0, num_train=3200, num_val=10, num_test=10).train


def _same_object_named_share(train, groups: str) -> float:
    """Share of same-object batch slots whose caption names the batch's object, read by an
    independent tagger (the synthetic ontology, not the data's class list)."""
    tags = resolve_train_tags(train, None, _cfg(groups))
    always = {"name": "constant", "p": 1.0}
    sampler = TonicsBatchSampler(
        len(train), 16, tags=tags.table, schedule=always, total_steps=200, seed=0
    )
    plan = sampler.epoch_plan(0)
    tagger = CaptionTagger(Ontology.load("synthetic"), backend="rules")
    said = [set(tagger.tag_names(c)) for c in train.captions]
    names = tags.table.class_names
    slots = [
        names[plan.objects[b]] in said[i]
        for b in np.flatnonzero(plan.phase == SAME_OBJECT)
        for i in plan.batches[b]
    ]
    assert len(slots) >= 100 * 16
    return float(np.mean(slots))


def test_same_object_batches_are_about_their_object(synthetic_train):
    # any-object groups: about 86 % of the captions name the batch's object on this data
    assert _same_object_named_share(synthetic_train, "named") == 1.0
    assert _same_object_named_share(synthetic_train, "any") < 0.95


@pytest.mark.parametrize(
    ("preset", "share", "highest"), [("capped", 0.3, 0.5), ("constant", 0.5, 0.5)]
)
def test_presets_that_keep_diverse_batches(preset: str, share: float, highest: float) -> None:
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg
    from vlexp.config import validate_config
    from vlexp.schedules import build_schedule

    cfg = compose_cfg(["sampler=tonics", f"sampler/schedule={preset}"])
    validate_config(cfg)
    s = build_schedule(OmegaConf.to_container(cfg.sampler.schedule))
    grid = np.linspace(0.0, 1.0, 100_001)
    # capped: the ramp 0 -> 0.5 over 0.8 of training, then 0.5: 0.2 + 0.1 = 0.3 in all
    assert np.mean(s(grid)) == pytest.approx(share, abs=1e-4)
    assert s(grid).max() == pytest.approx(highest) and s(1.0) < 1.0
