"""Object tags for TOnICS on data without tags: caption tagging chosen by config, the tag
pass and its tag file, coverage reports, and the coverage / small-group refusals."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from vlexp.data.readers.memory import InMemoryPairs
from vlexp.data.tags import TagCoverage, class_pair_counts, load_tag_file
from vlexp.data.types import TagTable
from vlexp.samplers.tagging import resolve_train_tags
from vlexp.samplers.tonics import TonicsBatchSampler

ROOT = Path(__file__).resolve().parents[2]

# hand-labelled with the COCO ontology (the reference the tagger must reproduce)
CAPTIONS = {
    "a dog sleeping on a couch": {"dog", "couch"},
    "two men riding bicycles": {"person", "bicycle"},
    "a slice of pizza on a table": {"pizza", "dining table"},
    "a cat": {"cat"},
    "sunset over the mountains": set(),
    "an empty street at night": set(),
    "a red car parked near a bench": {"car", "bench"},
    "abstract painting in blue": set(),
}
CAPS = list(CAPTIONS)


def shipped_cfg(**tagging: Any) -> dict[str, Any]:
    from tests.conftest import compose_cfg

    cfg = OmegaConf.to_container(compose_cfg(["sampler=tonics"]).sampler)
    cfg["tagging"] |= tagging  # type: ignore[index]
    return cfg  # type: ignore[return-value]


def pairs(captions: list[str], tags: list[list[int]] | None = None, names=()) -> InMemoryPairs:
    return InMemoryPairs([None] * len(captions), captions, tags, class_names=names)  # type: ignore[list-item]


def names_of(table: TagTable) -> list[set[str]]:
    return [{table.class_names[c] for c in table.tags_of(i)} for i in range(table.num_pairs)]


# ----------------------------------------------------------------------------- coverage
def test_coverage_and_class_counts_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    lists = [sorted(rng.integers(0, 6, rng.integers(0, 3)).tolist()) for _ in range(300)]
    lists[5] = [2, 2]  # a class listed twice counts the pair once
    table = TagTable.from_lists(lists, [f"c{i}" for i in range(6)])
    cov = TagCoverage.of(table, 300, "data")
    assert cov.num_tagged == sum(1 for t in lists if t)
    assert cov.coverage == pytest.approx(sum(1 for t in lists if t) / 300)
    brute = [sum(1 for t in lists if c in t) for c in range(6)]
    assert class_pair_counts(table).tolist() == brute
    d = cov.as_dict()
    assert d["class_pairs"] == {f"c{c}": brute[c] for c in range(6)}
    text = cov.table_text(top=3)
    assert f"{cov.num_tagged} of 300 pairs tagged" in text
    assert "... and 3 more classes" in text
    assert TagCoverage.of(None, 10, "data").coverage == 0.0


# ----------------------------------------------------------------------------- sources
def test_captions_source_tags_the_captions_on_the_fly() -> None:
    src = pairs(CAPS * 3)
    tags = resolve_train_tags(src, None, shipped_cfg(source="captions", backend="rules"))
    assert names_of(tags.table) == [CAPTIONS[c] for c in CAPS * 3]
    assert tags.report.source == "captions"
    assert tags.report.coverage == pytest.approx(5 / 8)
    assert tags.report.as_dict()["class_pairs"]["person"] == 3
    assert "tagging" not in tags.sampler_options  # the sampler never sees it
    # the filter's kept indices select the same rows
    kept = np.array([0, 3, 4, 9])
    sub = resolve_train_tags(src, kept, shipped_cfg(source="captions", backend="rules"))
    assert names_of(sub.table) == [CAPTIONS[(CAPS * 3)[i]] for i in kept]


def test_auto_prefers_data_tags_that_cover_enough_else_captions() -> None:
    names = ["thing"]
    full = pairs(CAPS, [[0]] * 8, names)  # no caption names "thing": groups=any keeps the tags
    tags = resolve_train_tags(full, None, shipped_cfg(backend="rules", groups="any"))
    assert tags.report.source == "data" and tags.table.class_names == names
    sparse = pairs(CAPS, [[0]] + [[]] * 7, names)  # data covers 1/8 < 0.5; captions 5/8
    tags = resolve_train_tags(sparse, None, shipped_cfg(backend="rules"))
    assert tags.report.source == "captions"
    assert names_of(tags.table) == [CAPTIONS[c] for c in CAPS]
    untagged = pairs(CAPS)  # no tag table at all
    assert resolve_train_tags(untagged, None, shipped_cfg(backend="rules")).report.source == (
        "captions"
    )
    # source=data never tags captions
    tags = resolve_train_tags(untagged, None, shipped_cfg(source="data"))
    assert tags.table is None and tags.report.coverage == 0.0


def test_bad_tagging_options_are_named() -> None:
    with pytest.raises(ValueError, match="not one of"):
        resolve_train_tags(pairs(CAPS), None, shipped_cfg(source="detector"))
    cfg = shipped_cfg()
    cfg["tagging"]["ontolgy"] = "coco"
    with pytest.raises(ValueError, match="unknown option.*ontolgy"):
        resolve_train_tags(pairs(CAPS), None, cfg)


# ----------------------------------------------------------------------------- refusals
def test_low_coverage_refuses_with_how_to_tag_and_can_be_overridden(caplog) -> None:
    lists = [[i % 4] if i % 10 < 3 else [] for i in range(400)]  # 30% tagged
    table = TagTable.from_lists(lists, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="30.0% of the 400") as err:
        TonicsBatchSampler(400, 8, tags=table, total_steps=50)
    msg = str(err.value)
    assert "\n" not in msg
    assert "sampler.tagging.source=captions" in msg and "vlexp.cli.tag" in msg
    assert "sampler.allow_low_coverage=true" in msg
    with caplog.at_level(logging.WARNING, logger="vlexp.samplers.tonics"):
        s = TonicsBatchSampler(400, 8, tags=table, total_steps=50, allow_low_coverage=True)
    assert "diverse" in caplog.text and "30.0%" in caplog.text
    assert len(s.plan_epoch(0)) == 50
    # the threshold is configurable
    TonicsBatchSampler(400, 8, tags=table, total_steps=50, min_tag_coverage=0.25)
    with pytest.raises(ValueError, match="vlexp.cli.tag"):
        TonicsBatchSampler(400, 8, tags=None, total_steps=50)


def _apply(fix: str, kw: dict[str, Any]) -> dict[str, Any]:
    """Turn the first option the error suggests into constructor arguments."""
    key, value = fix.split("=")
    if key == "data.batch_size":
        return kw | {"batch_size": int(value)}
    return kw | {key.removeprefix("sampler."): int(value) if value.isdigit() else value}


@pytest.mark.parametrize("policy", ["parent", "skip", "replacement"])
def test_small_group_error_suggests_options_that_work(policy: str) -> None:
    table = TagTable.from_lists([[i % 20] for i in range(200)], [f"c{i}" for i in range(20)])
    kw: dict[str, Any] = {
        "batch_size": 16,
        "small_object_policy": policy,
        "min_object_pairs": 12 if policy == "replacement" else 2,
    }
    with pytest.raises(ValueError, match="largest: 10") as err:
        TonicsBatchSampler(200, tags=table, total_steps=20, **kw)
    msg = str(err.value)
    assert f"small_object_policy={policy}" not in msg.split("; ", 1)[1]  # no no-op advice
    fixes = [w.rstrip(",") for w in msg.split() if "=" in w and not w.startswith("small")]
    fixes = [f for f in fixes if f.startswith(("sampler.", "data."))]
    assert fixes
    for fix in fixes:  # every suggestion, applied alone, lets the sampler start
        s = TonicsBatchSampler(200, tags=table, total_steps=20, **_apply(fix, kw))
        assert s.plan_epoch(0).shape[0] == s.batches_per_epoch()


# ----------------------------------------------------------------------------- tag pass
def write_csv(path: Path, captions: list[str]) -> None:
    rows = ["filepath,caption"] + [f"img{i}.jpg,{c}" for i, c in enumerate(captions)]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_tag_pass_writes_tags_next_to_the_data_and_training_reads_them(tmp_path: Path) -> None:
    table_path = tmp_path / "pairs.csv"
    captions = CAPS * 5
    write_csv(table_path, captions)
    before = hashlib.sha256(table_path.read_bytes()).hexdigest()
    cmd = [
        sys.executable, "-m", "vlexp.cli.tag", "data=csv",
        f"data.source.path={table_path}", "data.source.check_files=false",
        "tagging.backend=rules", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    assert hashlib.sha256(table_path.read_bytes()).hexdigest() == before  # input untouched
    tag_file = tmp_path / "pairs.tags.npz"
    report = json.loads((tmp_path / "pairs.tags.json").read_text())
    assert report["pairs"] == 40 and report["tagged"] == 25
    assert report["coverage"] == pytest.approx(25 / 40)
    assert report["class_pairs"]["dog"] == 5 and report["class_pairs"]["giraffe"] == 0

    table, header = load_tag_file(tag_file, captions)
    assert names_of(table) == [CAPTIONS[c] for c in captions]
    assert header["ontology"] == "coco"
    # training reads the file (through the filter's kept indices) ...
    kept = np.arange(0, 40, 3)
    tags = resolve_train_tags(pairs(captions), kept, shipped_cfg(path=str(tag_file)))
    assert tags.report.source == "file"
    assert names_of(tags.table) == [CAPTIONS[captions[i]] for i in kept]
    # ... and refuses a file made for other pairs
    with pytest.raises(ValueError, match="other pairs"):
        resolve_train_tags(pairs(captions[:20]), None, shipped_cfg(path=str(tag_file)))
    # a second run does not overwrite silently
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "overwrite=true" in again.stderr


@pytest.mark.slow
def test_datamodule_tags_untagged_csv_from_captions(tmp_path: Path) -> None:
    from vlexp.train.datamodule import VLDataModule

    table_path = tmp_path / "pairs.csv"
    captions = CAPS * 8
    write_csv(table_path, captions)

    def module(**tagging: Any) -> VLDataModule:
        data = {
            "source": {"name": "csv", "path": str(table_path), "check_files": False},
            "batch_size": 4,
            "num_workers": 0,
        }
        dm = VLDataModule(
            data, shipped_cfg(**tagging), {"name": "none"}, tokenize=lambda c: {},
            image_size=32, image_mean=(0.5,) * 3, image_std=(0.5,) * 3, total_steps=20,
        )  # fmt: skip
        dm.setup("fit")
        return dm

    dm = module(backend="rules")  # default source=auto: the table has no tags column
    sampler = dm.build_train_sampler()
    assert names_of(sampler.tags) == [CAPTIONS[c] for c in captions]
    report = dm.tag_report
    assert report["source"] == "captions" and report["tagged"] == 40
    with pytest.raises(ValueError, match="need|have object tags"):
        module(source="data").build_train_sampler()
