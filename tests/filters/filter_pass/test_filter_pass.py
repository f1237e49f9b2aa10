"""The standalone filter pass on hand-made shards and tables with known answers.

Known answers (spaCy small English pipeline; rendered text read by Tesseract):
"a dog chasing a ball on the beach" is kept, "a dog" fails complexity, "a cat on a sofa"
fails action, "a man riding a horse" over an image reading MAN RIDING HORSE fails
text-spotting, and with only text-spotting on, "sale" over an image reading SALE is
dropped while "sale" over a blank image is kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.readers.webdataset_reader import WebDatasetPairs
from vlexp.data.shards.tario import tar_members
from vlexp.filters.filter_pass import (
    FilterPassError,
    IncompletePass,
    PassOptions,
    merge_pass,
    run_pass,
    without_timing,
)
from vlexp.filters.filter_pass import shard_unit as shard_unit_module

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract binary missing: apt-get install -y tesseract-ocr tesseract-ocr-eng",
)
needs_spacy = pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None, reason="spaCy missing: pip install 'vlexp[cat]'"
)

CAPTIONS_ONLY = {"name": "cat", "text_spotting": False}
TEXT_ONLY = {"name": "cat", "complexity": False, "action": False}
FULL_CAT = {"name": "cat"}


# --------------------------------------------------------------------- hand-made data
def render(lines: list[str] = (), size: int = 40, seed: int = 0) -> Image.Image:
    """A 224 px image with a few grey shapes and ``lines`` of black text."""
    img = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        x, y = (int(v) for v in rng.integers(150, 200, size=2))
        draw.ellipse((x, y, x + 20, y + 20), fill=(180, 180, 180))
    for i, text in enumerate(lines):
        font = ImageFont.load_default(size=size)
        draw.text((12, 20 + i * (size + 14)), text, fill="black", font=font)
    return img


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> Path:
    """An img2dataset-style shard: per sample ``key.jpg``, ``key.txt``, ``key.json``
    (``caption`` None leaves out the text members; ``image`` may be raw bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for s in samples:
            members = []
            img = s["image"]
            members.append((f"{s['key']}.jpg", img if isinstance(img, bytes) else jpeg(img)))
            if s.get("caption") is not None:
                members.append((f"{s['key']}.txt", s["caption"].encode()))
                meta = {"key": s["key"], "caption": s["caption"], "status": "success"}
                members.append((f"{s['key']}.json", json.dumps(meta).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


KNOWN = [  # key, caption, image text, first failing CAT criterion (None: kept)
    ("000000000", "a dog chasing a ball on the beach", [], None),
    ("000000001", "a dog", [], "complexity"),
    ("000000002", "a cat on a sofa", [], "action"),
    ("000000003", "a man riding a horse", ["MAN", "RIDING", "HORSE"], "text_spotting"),
    ("000000004", "sale", ["SALE"], "complexity"),
    ("000000005", "two people sitting at a table with food", [], None),
]


def known_shards(root: Path) -> Path:
    """Two shards holding the :data:`KNOWN` samples (3 each) plus ``classes.json``."""
    for s, lo in enumerate((0, 3)):
        samples = [
            {"key": k, "caption": c, "image": render(t, seed=i)}
            for i, (k, c, t, _) in enumerate(KNOWN[lo : lo + 3], start=lo)
        ]
        write_shard(root / f"{s:05d}.tar", samples)
    (root / "classes.json").write_text(json.dumps({"class_names": ["dog"], "parents": [-1]}))
    return root


def caption_shards(root: Path, n_shards: int = 4, per_shard: int = 5) -> Path:
    """Shards of text-only-judged captions (images are blank), for fast runs."""
    caps = [c for _, c, _, _ in KNOWN] + ["a brown dog", "a woman riding a bike down the street"]
    blank = jpeg(render())
    for s in range(n_shards):
        samples = [
            {
                "key": f"{s:05d}{i:04d}",
                "caption": caps[(s * per_shard + i) % len(caps)],
                "image": blank,
            }
            for i in range(per_shard)
        ]
        write_shard(root / f"{s:05d}.tar", samples)
    return root


def checksums(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``root``."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def shard_keys(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return list(dict.fromkeys(m.name.split(".")[0] for m in tar_members(f)))


def opts(inp: Path | str, out: Path, flt: dict, **kw) -> PassOptions:
    return PassOptions(input=str(inp), output_dir=str(out), filter=flt, progress=False,
                       **{"workers": 1, **kw})  # fmt: skip


# --------------------------------------------------------------------- shards
@needs_spacy
@needs_tesseract
def test_full_cat_pass_on_known_shards(tmp_path):
    inp = known_shards(tmp_path / "in")
    before = checksums(inp)
    summary = run_pass(opts(inp, tmp_path / "out", FULL_CAT))
    out = tmp_path / "out"
    assert checksums(inp) == before  # the input is never modified

    expected_kept = [k for k, _, _, r in KNOWN if r is None]
    kept = shard_keys(out / "00000.tar") + shard_keys(out / "00001.tar")
    assert kept == expected_kept
    report = summary["report"]
    assert report == json.loads((out / "report.json").read_text())
    assert (report["read"], report["total"], report["kept"]) == (6, 6, 2)
    assert report["dropped"] == {"complexity": 2, "action": 1, "text_spotting": 1}
    assert [e["id"] for e in report["examples"]["text_spotting"]] == ["000000003"]
    assert report["examples"]["text_spotting"][0]["text_overlap"] == 1.0
    assert report["examples"]["complexity"][0] == {
        "id": "000000001", "caption": "a dog", "complexity": 0, "action": False,
    }  # fmt: skip
    assert report["ocr_images"] == 3  # only pairs that passed the caption criteria
    md = (out / "report.md").read_text()
    assert "| dropped: text_spotting | 1 | 16.7% |" in md and "**kept** | **2**" in md

    # kept samples are copied member for member, in order, byte for byte
    with open(inp / "00000.tar", "rb") as f:
        src = {m.name: m.data for m in tar_members(f)}
    with open(out / "00000.tar", "rb") as f:
        dst = [(m.name, m.data) for m in tar_members(f)]
    assert [n for n, _ in dst] == ["000000000.jpg", "000000000.txt", "000000000.json"]
    assert all(src[n] == d for n, d in dst)
    # index files: readers see the new sizes and classes
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 1, "00001.tar": 1}
    assert json.loads((out / "00001_stats.json").read_text())["successes"] == 1
    assert (out / "classes.json").read_text() == (inp / "classes.json").read_text()
    ds = WebDatasetPairs(str(out), shuffle_buffer=0, shuffle_shards=False)
    assert [item["caption"] for item in ds] == [KNOWN[0][1], KNOWN[5][1]]


@needs_tesseract
def test_text_spotting_only_drops_sale_over_sale(tmp_path):
    samples = [
        {"key": "a", "caption": "sale", "image": render(["SALE"], size=48)},
        {"key": "b", "caption": "sale", "image": render()},
        {"key": "c", "caption": "big sale today", "image": render(["SALE"], size=48)},
    ]
    write_shard(tmp_path / "in" / "00000.tar", samples)
    report = run_pass(opts(tmp_path / "in", tmp_path / "out", TEXT_ONLY))["report"]
    assert shard_keys(tmp_path / "out" / "00000.tar") == ["b", "c"]  # 1/3 overlap < 0.5
    assert report["dropped"] == {"text_spotting": 1}
    assert report["examples"]["text_spotting"] == [
        {"id": "a", "caption": "sale", "text_overlap": 1.0}
    ]


@needs_spacy
def test_unreadable_records_are_skipped_and_counted(tmp_path):
    good = jpeg(render())
    write_shard(
        tmp_path / "in" / "00000.tar",
        [
            {"key": "a", "caption": "a dog chasing a ball on the beach", "image": good},
            {"key": "b", "caption": None, "image": good},  # no caption at all
            {"key": "c", "caption": "   ", "image": good},  # empty caption
            {"key": "d", "caption": "a man riding a horse", "image": b"not a jpeg"},
        ],
    )
    # caption-only: images are not decoded, so the broken one is judged and copied as is
    report = run_pass(opts(tmp_path / "in", tmp_path / "out", CAPTIONS_ONLY))["report"]
    assert report["read"] == 4 and report["total"] == 2 and report["kept"] == 2
    assert report["skipped"] == {"empty_caption": 1, "missing_caption": 1}
    assert shard_keys(tmp_path / "out" / "00000.tar") == ["a", "d"]


@needs_spacy
@needs_tesseract
def test_broken_image_is_skipped_when_pixels_are_needed(tmp_path):
    write_shard(
        tmp_path / "in" / "00000.tar",
        [
            {"key": "a", "caption": "a dog chasing a ball on the beach", "image": render()},
            {"key": "d", "caption": "a man riding a horse", "image": b"not a jpeg"},
        ],
    )
    report = run_pass(opts(tmp_path / "in", tmp_path / "out", FULL_CAT))["report"]
    assert report["skipped"] == {"broken_image": 1} and report["kept"] == 1


def test_refuses_to_write_into_the_input(tmp_path):
    inp = caption_shards(tmp_path / "in", n_shards=1)
    before = checksums(inp)
    for out in (inp, inp / "filtered", tmp_path):  # the input folder, inside it, around it
        with pytest.raises(ValueError, match="input"):
            run_pass(opts(inp, out, CAPTIONS_ONLY))
    assert checksums(inp) == before  # nothing was created in the input folder


@needs_spacy
def test_resume_after_a_failing_unit_redoes_only_that_unit(tmp_path, monkeypatch):
    inp = caption_shards(tmp_path / "in", n_shards=4)
    out = tmp_path / "out"
    real = shard_unit_module.process_shard
    calls: list[str] = []

    def flaky(unit, flt, o):
        calls.append(unit.name)
        if unit.name == "00002":
            raise OSError("simulated crash in the middle of unit 00002")
        return real(unit, flt, o)

    monkeypatch.setattr(shard_unit_module, "process_shard", flaky)
    with pytest.raises(FilterPassError, match="1 of 4 units failed .*00002"):
        run_pass(opts(inp, out, CAPTIONS_ONLY))
    assert calls == ["00000", "00001", "00002", "00003"]  # the others went on
    assert sorted(p.name for p in (out / "_units").iterdir()) == [
        "00000.json", "00001.json", "00003.json",
    ]  # fmt: skip
    assert not (out / "00002.tar").exists() and not (out / "report.json").exists()
    assert not list(out.rglob("*.tmp*"))  # no half-written file is left
    with pytest.raises(IncompletePass, match="1 of 4 units .*2:3"):
        merge_pass(out)
    done_before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    calls.clear()
    monkeypatch.setattr(
        shard_unit_module, "process_shard", lambda u, f, o: (calls.append(u.name), real(u, f, o))[1]
    )
    summary = run_pass(opts(inp, out, CAPTIONS_ONLY))
    assert calls == ["00002"] and summary["skipped_done"] == 3
    for p, mtime in done_before.items():
        if p.name not in ("_pass.json",):
            assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten"

    fresh = run_pass(opts(inp, tmp_path / "fresh", CAPTIONS_ONLY, workers=2))["report"]
    assert without_timing(summary["report"]) == without_timing(fresh)
    for s in range(4):
        name = f"{s:05d}.tar"
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


@needs_spacy
def test_shard_range_jobs_then_merge_equal_one_run(tmp_path):
    inp = caption_shards(tmp_path / "in", n_shards=3)
    out = tmp_path / "out"
    first = run_pass(opts(inp, out, CAPTIONS_ONLY, shard_range="0:2"))
    assert first["selected"] == 2 and "report" not in first
    with pytest.raises(IncompletePass):
        merge_pass(out)
    partial = merge_pass(out, allow_partial=True)
    assert partial["complete"] is False and partial["units"] == 2
    second = run_pass(opts(inp, out, CAPTIONS_ONLY, shard_range="2:"))
    assert second["selected"] == 1 and second["report"]["complete"] is True
    merged = merge_pass(out)
    single = run_pass(opts(inp, tmp_path / "single", CAPTIONS_ONLY))["report"]
    assert without_timing(merged) == without_timing(single)
    assert merged["total"] == 15 and sum(merged["dropped"].values()) + merged["kept"] == 15


@needs_spacy
def test_rerun_with_other_settings_is_refused(tmp_path):
    inp = caption_shards(tmp_path / "in", n_shards=1)
    run_pass(opts(inp, tmp_path / "out", CAPTIONS_ONLY))
    again = run_pass(opts(inp, tmp_path / "out", {**CAPTIONS_ONLY, "batch_size": 8}, workers=2))
    assert again["skipped_done"] == 1  # speed-only settings may change
    with pytest.raises(ValueError, match="min_complexity: 2 -> 1"):
        run_pass(opts(inp, tmp_path / "out", {**CAPTIONS_ONLY, "min_complexity": 1}))


# --------------------------------------------------------------------- tables
def known_table(root: Path, fmt: str) -> Path:
    """A table of the :data:`KNOWN` pairs (image files under ``root/img``) plus a row
    whose image is missing and one with an empty caption."""
    (root / "img").mkdir(parents=True)
    rows = []
    for i, (_, caption, text, _) in enumerate(KNOWN):
        render(text, seed=i).save(root / "img" / f"{i}.png")
        rows.append({"filepath": f"img/{i}.png", "caption": caption, "label": str(i)})
    rows.append({"filepath": "img/missing.png", "caption": "a dog chasing a cat", "label": "7"})
    rows.append({"filepath": "img/0.png", "caption": "", "label": "8"})
    df = pd.DataFrame(rows)
    if fmt == "parquet":
        df["label"] = df["label"].astype(int)
        df.to_parquet(root / "pairs.parquet", index=False)
        return root / "pairs.parquet"
    df.to_csv(root / "pairs.csv", index=False)
    return root / "pairs.csv"


@needs_spacy
@needs_tesseract
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_pass_writes_kept_rows_referencing_original_images(tmp_path, fmt):
    table = known_table(tmp_path / "in", fmt)
    before = checksums(tmp_path / "in")
    out = tmp_path / "out"
    report = run_pass(opts(table, out, FULL_CAT, chunk_rows=3, workers=2))["report"]
    assert checksums(tmp_path / "in") == before
    assert report["units"] == 3
    assert report["skipped"] == {"empty_caption": 1, "missing_image": 1}
    assert report["dropped"] == {"complexity": 2, "action": 1, "text_spotting": 1}
    kept = pd.read_parquet(out / table.name) if fmt == "parquet" else pd.read_csv(out / table.name)
    assert kept["caption"].tolist() == [KNOWN[0][1], KNOWN[5][1]]
    assert kept["label"].astype(int).tolist() == [0, 5]  # other columns as they were
    assert kept["filepath"].tolist() == [
        str((tmp_path / "in" / "img" / f"{i}.png").resolve()) for i in (0, 5)
    ]
    assert not list(out.rglob("*.png"))  # no image was copied
    pairs = CsvPairs(out / table.name, min_samples=1)
    assert len(pairs) == 2 and pairs[1]["caption"] == KNOWN[5][1]


@needs_spacy
def test_table_relative_paths_and_tsv(tmp_path):
    (tmp_path / "in" / "img").mkdir(parents=True)
    render().save(tmp_path / "in" / "img" / "a.png")
    pd.DataFrame(
        {
            "path": ["img/a.png", "img/a.png"],
            "text": ["a dog", "a woman riding a bike down the street"],
        }
    ).to_csv(tmp_path / "in" / "pairs.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    o = opts(tmp_path / "in" / "pairs.tsv", out, CAPTIONS_ONLY, image_col="path",
             caption_col="text", image_paths="relative")  # fmt: skip
    run_pass(o)
    kept = pd.read_csv(out / "pairs.tsv", sep="\t")
    assert kept.to_dict("list") == {
        "path": ["../in/img/a.png"],
        "text": ["a woman riding a bike down the street"],
    }
    assert os.path.isfile(out / kept["path"][0])
    with pytest.raises(ValueError, match="no column"):
        run_pass(opts(tmp_path / "in" / "pairs.tsv", tmp_path / "o2", CAPTIONS_ONLY))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_empty_table_gives_an_empty_table(tmp_path, fmt):
    (tmp_path / "in").mkdir()
    df = pd.DataFrame({"filepath": pd.Series([], dtype=str), "caption": pd.Series([], dtype=str)})
    table = tmp_path / "in" / f"pairs.{fmt}"
    df.to_parquet(table) if fmt == "parquet" else df.to_csv(table, index=False)
    report = run_pass(opts(table, tmp_path / "out", CAPTIONS_ONLY))["report"]
    assert (report["units"], report["total"], report["kept"]) == (0, 0, 0)
    out = tmp_path / "out" / table.name
    back = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
    assert list(back.columns) == ["filepath", "caption"] and len(back) == 0
