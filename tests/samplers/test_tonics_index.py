"""The TOnICS sampler's ontology helpers and per-group pair index, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from vlexp.data.types import TagTable
from vlexp.samplers.tonics import (
    build_group_index,
    class_depths,
    level_mapping,
    merge_small_groups,
)

# a three-level toy ontology:  0 animal -> 1 dog -> 3 puppy ; 0 animal -> 2 cat ; 4 vehicle -> 5 car
PARENTS = np.array([-1, 0, 0, 1, -1, 4])


def brute_force_groups(
    tags: list[list[int]], mapping: np.ndarray, num_groups: int
) -> list[list[int]]:
    groups: list[set[int]] = [set() for _ in range(num_groups)]
    for i, ts in enumerate(tags):
        for t in ts:
            groups[int(mapping[t])].add(i)
    return [sorted(g) for g in groups]


def test_class_depths() -> None:
    np.testing.assert_array_equal(class_depths(PARENTS), [0, 1, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="cycle"):
        class_depths(np.array([1, 0, -1]))
    with pytest.raises(ValueError, match="parents must be"):
        class_depths(np.array([5, -1]))


def test_level_mapping() -> None:
    depth = class_depths(PARENTS)
    np.testing.assert_array_equal(level_mapping(PARENTS, depth, 0), [0, 0, 0, 0, 4, 4])
    np.testing.assert_array_equal(level_mapping(PARENTS, depth, 1), [0, 1, 2, 1, 4, 5])
    np.testing.assert_array_equal(level_mapping(PARENTS, depth, 2), np.arange(6))


def test_merge_small_groups_deepest_first() -> None:
    depth = class_depths(PARENTS)
    occurrences = np.array([1, 3, 10, 2, 0, 9])
    # min size 6: puppy (2) -> dog (3 + 2 = 5, still small) -> animal; cat (10) stays;
    # car (9) stays; animal is a root and stays whatever its size
    out = merge_small_groups(np.arange(6), occurrences, PARENTS, depth, 6)
    np.testing.assert_array_equal(out, [0, 0, 2, 0, 4, 5])
    # min size 5: dog + puppy = 5 is enough
    out = merge_small_groups(np.arange(6), occurrences, PARENTS, depth, 5)
    np.testing.assert_array_equal(out, [0, 1, 2, 1, 4, 5])


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_group_index_matches_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(3)
    tags = [sorted(set(rng.integers(0, 6, rng.integers(0, 4)).tolist())) for _ in range(300)]
    table = TagTable.from_lists(tags, [str(c) for c in range(6)], PARENTS)
    depth = class_depths(PARENTS)
    for level in (0, 1, 2):
        mapping = level_mapping(PARENTS, depth, level)
        offsets, pairs = build_group_index(table.offsets, table.values, mapping, 6, chunk)
        assert pairs.dtype == np.int32
        expect = brute_force_groups(tags, mapping, 6)
        for g in range(6):
            assert pairs[offsets[g] : offsets[g + 1]].tolist() == expect[g]


def test_group_index_lists_a_pair_once_per_group() -> None:
    # pair 0 has dog and puppy: at level 1 both map to dog, and repeated raw tags too
    tags = [[1, 3], [3, 3], [2], []]
    table = TagTable.from_lists(tags, [str(c) for c in range(6)], PARENTS)
    mapping = level_mapping(PARENTS, class_depths(PARENTS), 1)
    offsets, pairs = build_group_index(table.offsets, table.values, mapping, 6, 2)
    assert pairs[offsets[1] : offsets[2]].tolist() == [0, 1]
    assert pairs[offsets[2] : offsets[3]].tolist() == [2]
    assert offsets[-1] == 3
