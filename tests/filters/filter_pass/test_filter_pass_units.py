"""Pure parts of the filter pass: unit ranges, array splits, report merging, config."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from vlexp.cli.filter import CONF_DIR, options_from_config
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import UnitReport, merge_reports, to_markdown, without_timing
from vlexp.filters.filter_pass.units import (
    Unit,
    check_output_dir,
    guess_kind,
    parse_range,
    select_units,
    table_units,
)

UNITS = [Unit(i, f"{i:05d}", f"/data/{i:05d}.tar", rel=f"{i:05d}.tar") for i in range(10)]


def test_parse_range():
    assert parse_range("0:3", 10) == (0, 3)
    assert parse_range("7:", 10) == (7, 10)
    assert parse_range(":4", 10) == (0, 4)
    assert parse_range("8:100", 10) == (8, 10)
    for bad in ("3", "a:b", "5:2", "-1:3", "1:2:3"):
        with pytest.raises(ValueError, match="shard_range"):
            parse_range(bad, 10)
    with pytest.raises(ValueError, match="past the last"):
        parse_range("10:12", 10)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 10, 13])
def test_array_blocks_are_disjoint_contiguous_and_cover_all_units(count):
    blocks = [select_units(UNITS, array_index=k, array_count=count) for k in range(count)]
    flat = [u.index for b in blocks for u in b]
    assert flat == list(range(10))  # disjoint, in order, complete
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="array_index"):
        select_units(UNITS, array_index=count, array_count=count)


def test_shard_range_selects_the_slice():
    assert [u.index for u in select_units(UNITS, shard_range="2:5")] == [2, 3, 4]
    assert select_units(UNITS) == UNITS


def test_table_units_chunk_rows():
    units = table_units("/t/pairs.csv", 25, 10)
    assert [(u.lo, u.hi) for u in units] == [(0, 10), (10, 20), (20, 25)]
    assert units[2].name == "rows_000000020_000000025"
    assert table_units("/t/pairs.csv", 0, 10) == []


def test_guess_kind():
    assert guess_kind("/d/pairs.csv") == "table"
    assert guess_kind("/d/pairs.tsv") == "table"
    assert guess_kind("/d/part-0.snappy.parquet") == "table"
    assert guess_kind("/d/{00000..00009}.tar") == "webdataset"
    assert guess_kind("/d/shards") == "webdataset"


def test_check_output_dir(tmp_path):
    inp = tmp_path / "data" / "shards"
    inp.mkdir(parents=True)
    assert check_output_dir(tmp_path / "out", [inp]) == (tmp_path / "out").resolve()
    for bad in (inp, inp / "x", tmp_path / "data", tmp_path):
        with pytest.raises(ValueError):
            check_output_dir(bad, [inp])
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        check_output_dir(tmp_path / "file", [inp])


def _unit_report(i: int, rng: np.random.Generator) -> UnitReport:
    rep = UnitReport(f"u{i}", i, started=100.0 + i, finished=101.0 + i, seconds=1.0)
    n = 7
    keep = rng.random(n) < 0.4
    reasons = [None if k else ("complexity", "action")[int(rng.integers(2))] for k in keep]
    ids = [f"{i}-{j}" for j in range(n)]
    rep.add(ids, [f"caption {x}" for x in ids], keep, reasons, [{}] * n, max_examples=2)
    rep.read = n + 1
    rep.skipped = Counter({"broken_image": 1})
    return rep


def test_merge_reports_is_independent_of_completion_order():
    rng = np.random.default_rng(0)
    units = [_unit_report(i, rng) for i in range(6)]
    merged = merge_reports(units, ["complexity", "action", "text_spotting"], max_examples=3)
    shuffled = units[:]
    random.Random(1).shuffle(shuffled)
    again = merge_reports(shuffled, ["complexity", "action", "text_spotting"], max_examples=3)
    assert merged == again
    # independent tallies
    assert merged["total"] == 42 and merged["read"] == 48
    assert merged["skipped"] == {"broken_image": 6}
    assert merged["kept"] == sum(u.kept for u in units)
    assert merged["dropped"]["text_spotting"] == 0
    assert merged["kept"] + sum(merged["dropped"].values()) == 42
    first = [e["id"] for u in units for e in u.examples.get("action", [])][:3]
    assert [e["id"] for e in merged["examples"]["action"]] == first
    assert merged["timing"]["wall_seconds"] == 6.0 and merged["timing"]["unit_seconds"] == 6.0
    assert merged["timing"]["pairs_per_second"] == 7.0
    assert "timing" not in without_timing(merged)
    md = to_markdown({**merged, "input": "/x", "filter": {"name": "cat"}})
    assert "| dropped: text_spotting | 0 | 0.0% |" in md


def test_unit_report_round_trips():
    rep = _unit_report(3, np.random.default_rng(1))
    assert UnitReport.from_dict(rep.as_dict()).as_dict() == rep.as_dict()


def test_config_composes_into_options(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="filter_pass",
            overrides=[
                f"input={tmp_path}",
                f"output_dir={tmp_path / 'o'}",
                "shard_range=0:2",
                "filter.min_complexity=1",
                "image_paths=relative",
            ],  # fmt: skip
        )
    o = options_from_config(cfg)
    assert isinstance(o, PassOptions)
    assert o.filter["name"] == "cat" and o.filter["min_complexity"] == 1
    assert o.shard_range == "0:2" and o.image_paths == "relative" and o.workers is None
    assert o.validate() is o
    with pytest.raises(ValueError, match="array_index"):
        PassOptions(input="x", output_dir="y", array_index=1).validate()
    with pytest.raises(ValueError, match="input is not set"):
        PassOptions(input=None, output_dir="y").validate()
    assert Path(CONF_DIR, "filter_pass.yaml").is_file()


def test_cli_explains_a_missing_pass_and_a_missing_input(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vlexp.cli.filter", *args, f"hydra.run.dir={tmp_path / 'logs'}"],
            cwd=repo, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    r = cli("merge", f"output_dir={tmp_path / 'nothing'}")
    assert r.returncode != 0 and "holds no filter pass" in r.stderr + r.stdout
    r = cli(f"output_dir={tmp_path / 'out'}")
    assert r.returncode != 0 and "input is not set" in r.stderr + r.stdout
