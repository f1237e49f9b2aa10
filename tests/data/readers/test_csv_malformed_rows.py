"""Malformed CSV/TSV lines (unbalanced quotes, wrong field counts) are counted bad rows
with their line number; they never swallow the rows after them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.readers.delimited import read_delimited


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8), (30, 90, 200)).save(tmp_path / "a.jpg")
    return tmp_path


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_unbalanced_quote_is_one_bad_row_not_a_merge(image_dir):
    n = 600
    rows = [f"a.jpg,caption {i}" for i in range(n)]
    rows[100] = 'a.jpg,"caption 100 opens a quote and never closes it'
    rows[103] = 'a.jpg,"caption 103, quoted"'  # the next quote: a plain parser stops here
    table = _write(image_dir / "pairs.csv", ["filepath,caption", *rows])
    pairs = CsvPairs(table, min_samples=10_000)
    expected = [f"caption {i}" for i in range(n) if i not in (100, 103)] + ["caption 103, quoted"]
    assert len(pairs) == n - 1
    assert sorted(pairs.captions) == sorted(expected)
    assert all("a.jpg" not in c and "\n" not in c for c in pairs.captions)
    report = pairs.bad.as_dict()
    assert report["by_reason"] == {"malformed_row": 1} and report["rows"] == n
    (detail,) = pairs.bad.examples["malformed_row"]
    assert detail.startswith("line 102: unbalanced quote")  # header is line 1


def test_field_counts_and_stray_quotes_are_checked(image_dir):
    lines = [
        "filepath,caption,label",
        "a.jpg,first,1",
        "a.jpg,too,many,fields",  # line 3
        "a.jpg,short",  # line 4
        'a.jpg,"quoted" then text,2',  # line 5: text after a closing quote
        'a.jpg,"a, legal quoted caption",3',
        "a.jpg,last,4",
    ]
    pairs = CsvPairs(_write(image_dir / "p.csv", lines), label_col="label", min_samples=100)
    assert list(pairs.captions) == ["first", "a, legal quoted caption", "last"]
    assert pairs.labels.tolist() == [1, 3, 4]
    lines_bad = sorted(int(d.split(":")[0].split()[1]) for d in pairs.bad.examples["malformed_row"])
    assert lines_bad == [3, 4, 5]
    assert pairs.bad.as_dict()["rows"] == 6 and pairs.bad.num_bad == 3


def test_quoted_multi_line_caption_is_kept(image_dir):
    text = 'filepath,caption\na.jpg,"two\nlines"\na.jpg,next\n'
    (image_dir / "m.csv").write_text(text)
    pairs = CsvPairs(image_dir / "m.csv", min_samples=100)
    assert list(pairs.captions) == ["two\nlines", "next"] and pairs.bad.num_bad == 0


def test_tsv_quote_open_at_the_end_of_file(image_dir):
    lines = ["filepath\tcaption", "a.jpg\tc0", "a.jpg\tc1", 'a.jpg\t"opens', "a.jpg\tc3"]
    pairs = CsvPairs(_write(image_dir / "p.tsv", lines), min_samples=100)
    assert list(pairs.captions) == ["c0", "c1", "c3"]
    assert pairs.bad.examples["malformed_row"][0].startswith("line 4: unbalanced quote")


def test_reader_matches_the_csv_module_on_clean_files(tmp_path):
    import csv

    rows = [["f.jpg", f'cap "{i}", with, commas\tand tabs', str(i)] for i in range(50)]
    path = tmp_path / "clean.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["filepath", "caption", "label"], *rows])
    table = read_delimited(path, ",")
    assert table.header == ["filepath", "caption", "label"]
    assert table.records == rows and table.malformed == []
    assert table.lines == list(range(2, 52))
