"""BadSampleCounter arithmetic, ceiling, logging and the map-style substitute helper."""

from __future__ import annotations

import logging

import pytest

from vlexp.data.bad_samples import BadSampleCounter, TooManyBadSamples, first_good
from vlexp.data.records import PackedStrings


def test_counts_fraction_and_notes():
    c = BadSampleCounter(max_bad_fraction=0.5, min_samples=1, name="t")
    c.ok(6)
    c.add("broken_image", "a.jpg")
    c.add("broken_image", "b.jpg")
    c.add("empty_caption")
    c.note("unknown_tag", "x")
    assert c.as_dict() == {
        "seen": 9,
        "good": 6,
        "bad": 3,
        "bad_fraction": 3 / 9,
        "by_reason": {"broken_image": 2, "empty_caption": 1},
        "notes": {"unknown_tag": 1},
    }
    assert c.examples["broken_image"] == ["a.jpg", "b.jpg"]


def test_ceiling_waits_for_min_samples_then_raises_with_reasons():
    c = BadSampleCounter(max_bad_fraction=0.01, min_samples=100)
    for _ in range(5):
        c.add("broken_image", "x.jpg")  # 100% bad, but too few seen to judge
    c.ok(94)
    with pytest.raises(TooManyBadSamples, match=r"5 of 100 samples \(5.00%\).*broken_image"):
        c.ok()  # the 100th sample
    ok = BadSampleCounter(max_bad_fraction=0.01, min_samples=100)
    ok.ok(990)
    for _ in range(10):
        ok.add("empty_caption")  # exactly 1%: allowed
    with pytest.raises(TooManyBadSamples):
        ok.add("empty_caption")


def test_logging_is_bounded(caplog):
    c = BadSampleCounter(max_bad_fraction=1.0, name="src", log_first=2)
    with caplog.at_level(logging.WARNING, logger="vlexp.data.bad_samples"):
        for i in range(10):
            c.add("broken_image", f"{i}.jpg")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("skipped sample (broken_image)" in m for m in msgs) == 2
    assert any("counted, not logged" in m for m in msgs)
    assert c.num_bad == 10


def test_merge_and_validation():
    a, b = BadSampleCounter(1.0), BadSampleCounter(1.0)
    a.ok(3)
    a.add("x")
    b.ok(2)
    b.add("x")
    b.add("y")
    b.note("n")
    a.merge(b)
    assert a.as_dict()["by_reason"] == {"x": 2, "y": 1} and a.seen == 8 and a.notes["n"] == 1
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadSampleCounter(1.5)


def test_first_good_substitutes_deterministically_and_counts_once():
    bad_rows = {3, 4}

    def load(j: int) -> str:
        if j in bad_rows:
            raise OSError(f"row {j} broken")
        return f"v{j}"

    c = BadSampleCounter(1.0)
    known: set[int] = set()
    assert first_good(2, 10, load, c, known, lambda e: "broken_image", (OSError,)) == (2, "v2")
    j, v = first_good(3, 10, load, c, known, lambda e: "broken_image", (OSError,))
    assert j not in bad_rows and v == f"v{j}" and known == {3}
    assert first_good(3, 10, load, c, known, lambda e: "broken_image", (OSError,)) == (j, v)
    assert c.bad["broken_image"] == 1  # row 3 counted once
    with pytest.raises(TooManyBadSamples, match="all bad"):
        first_good(0, 3, lambda j: load(3), c, set(), lambda e: "broken_image", (OSError,), 3)


def test_packed_strings():
    s = PackedStrings.from_strings(["", "héllo", "a;b", "x" * 300])
    assert len(s) == 4 and list(s) == ["", "héllo", "a;b", "x" * 300]
    assert s[-1] == "x" * 300 and s[1:3] == ["héllo", "a;b"]
    assert list(s.take([3, 1])) == ["x" * 300, "héllo"]
    with pytest.raises(IndexError):
        s[4]
