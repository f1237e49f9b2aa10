"""TOnICS: ontology-informed curriculum minibatches (``sampler=tonics``).

Srinivasan, Ren, Thomason (arXiv 2207.14525). Each global batch is either *diverse* (its
pairs cover as many distinct objects as possible) or *same object* (every pair belongs
to one object's group, so negatives differ only in context); batch ``b`` is a same-object
batch with probability ``p(progress)`` from a schedule of :mod:`vlexp.schedules`
(``conf/sampler/schedule/``). Plans are deterministic from ``(seed, epoch)``, identical on
every rank, and resume exactly. The options are in :data:`TONICS_SCHEMA` and
docs/OPTIONS.md; the planning rules, small-group policies and logged statistics are in
docs/DESIGN.md ("TOnICS"). Every default is our choice: the paper's are not known to us.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlexp.data.types import TagTable
from vlexp.registry import Opt
from vlexp.samplers.base import SAMPLERS, PlannedBatchSampler
from vlexp.schedules import SCHEDULES, OntologyWalk, Schedule, build_schedule

log = logging.getLogger(__name__)

DIVERSE, SAME_OBJECT = 0, 1
"""Values of :attr:`EpochPlan.phase`."""

SMALL_OBJECT_POLICIES = ("parent", "replacement", "skip")
UNTAGGED_POLICIES = ("diverse_only", "drop")
OBJECT_WEIGHTINGS = ("pairs", "sqrt", "uniform")
TAG_CHOICES = ("uniform", "rarest")

_PROB = Opt(float, lo=0.0, hi=1.0)
_TAGGING_SCHEMA = {
    "source": Opt(choices=("data", "captions", "auto")),
    "ontology": Opt(str),
    "backend": Opt(choices=("auto", "rules", "spacy")),
    "lemmatize": Opt(bool),
    "path": Opt(str, nullable=True),
    "groups": Opt(choices=("named", "any")),
}
TONICS_SCHEMA = {
    "schedule": Opt(registry=SCHEDULES),
    "ontology_walk": Opt(
        (bool, dict), fields={"start": _PROB, "end": _PROB}, doc="true/false or {start, end}"
    ),
    "object_weighting": Opt(choices=OBJECT_WEIGHTINGS),
    "small_object_policy": Opt(choices=SMALL_OBJECT_POLICIES),
    "untagged_policy": Opt(choices=UNTAGGED_POLICIES),
    "diverse_tag_choice": Opt(choices=TAG_CHOICES),
    "min_object_pairs": Opt(int, lo=1),
    "epochs": Opt(int, lo=1, nullable=True),
    "min_tag_coverage": _PROB,
    "allow_low_coverage": Opt(bool),
    "index_chunk_pairs": Opt(int, lo=1),
    "tagging": Opt(dict, fields=_TAGGING_SCHEMA, nullable=True),
}


# --------------------------------------------------------------------------- ontology
def class_depths(parents: np.ndarray) -> np.ndarray:
    """Depth of every class (0 for a root) from its parent array; raises on cycles."""
    parents = np.asarray(parents, dtype=np.int64)
    n = len(parents)
    if n and (parents.min() < -1 or parents.max() >= n):
        raise ValueError("ontology parents must be class ids in [0, num_classes) or -1")
    depth = np.zeros(n, dtype=np.int64)
    cur = parents.copy()
    for _ in range(n + 1):
        up = cur >= 0
        if not up.any():
            return depth
        depth[up] += 1
        cur[up] = parents[cur[up]]
    raise ValueError("ontology parents contain a cycle; every chain must end at a root (-1)")


def level_mapping(parents: np.ndarray, depths: np.ndarray, level: int) -> np.ndarray:
    """Map every class to its ancestor at depth ``min(depth, level)`` (int64)."""
    mapping = np.arange(len(parents), dtype=np.int64)
    steps = np.maximum(depths - level, 0)
    for s in range(int(steps.max(initial=0))):
        move = steps > s
        mapping[move] = parents[mapping[move]]
    return mapping


def merge_small_groups(
    mapping: np.ndarray,
    class_occurrences: np.ndarray,
    parents: np.ndarray,
    depths: np.ndarray,
    min_size: int,
) -> np.ndarray:
    """Redirect groups with fewer than ``min_size`` tag occurrences to their parent.

    Deepest groups first, so a small leaf may end in its grandparent. Roots stay.
    """
    n = len(parents)
    mapping = mapping.copy()
    sizes = np.bincount(mapping, weights=class_occurrences, minlength=n)
    for d in range(int(depths.max(initial=0)), 0, -1):
        small = (depths == d) & (sizes > 0) & (sizes < min_size) & (parents >= 0)
        if not small.any():
            continue
        ids = np.flatnonzero(small)
        np.add.at(sizes, parents[ids], sizes[ids])
        sizes[ids] = 0
        mapping = np.where(small[mapping], parents[mapping], mapping)
    return mapping


def build_group_index(
    offsets: np.ndarray,
    values: np.ndarray,
    mapping: np.ndarray,
    num_groups: int,
    chunk_pairs: int = 1 << 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of every group in CSR form: ``(group_offsets int64, pairs int32)``.

    A pair belongs to group ``g`` if any of its tags ``c`` has ``mapping[c] == g``; it is
    listed once per group, in ascending order. One pass over chunks of ``chunk_pairs``
    pairs places each chunk's (group-sorted, de-duplicated) entries into slots sized by
    tag occurrences; if a pair had two tags in one group the slack is squeezed out at the
    end. Extra memory: the output plus one chunk's temporaries (plus one more output-sized
    copy only when such duplicates exist).
    """
    n = len(offsets) - 1
    if num_groups <= 256:
        key_dtype: type[np.integer] = np.uint8  # small unsigned keys: numpy radix-sorts them
    elif num_groups <= 65536:
        key_dtype = np.uint16
    else:
        key_dtype = np.int32
    keys = mapping.astype(key_dtype)
    occurrences = np.bincount(values, minlength=len(mapping))
    upper = np.bincount(mapping, weights=occurrences, minlength=num_groups).astype(np.int64)
    slot_offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(upper, out=slot_offsets[1:])
    out = np.empty(int(slot_offsets[-1]), dtype=np.int32)
    fill = slot_offsets[:-1].copy()  # next free slot of every group
    step = max(1, chunk_pairs)
    for a in range(0, n, step):
        b = min(n, a + step)
        g = keys[values[offsets[a] : offsets[b]]]
        pair = np.repeat(np.arange(a, b, dtype=np.int32), np.diff(offsets[a : b + 1]))
        order = np.argsort(g, kind="stable")
        g, pair = g[order], pair[order]
        if len(g) > 1:  # a pair whose tags share a group is listed once
            keep = np.empty(len(g), dtype=bool)
            keep[0] = True
            np.not_equal(g[1:], g[:-1], out=keep[1:])
            keep[1:] |= pair[1:] != pair[:-1]
            g, pair = g[keep], pair[keep]
        cnt = np.bincount(g, minlength=num_groups)
        first = np.cumsum(cnt) - cnt  # where each group starts in this chunk
        out[fill[g] + (np.arange(len(g)) - first[g])] = pair
        fill += cnt
    sizes = fill - slot_offsets[:-1]
    group_offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(sizes, out=group_offsets[1:])
    if group_offsets[-1] == len(out):
        return group_offsets, out
    for g in np.flatnonzero(sizes).tolist():  # squeeze out the slack, moving left in place
        src, dst, size = int(slot_offsets[g]), int(group_offsets[g]), int(sizes[g])
        if src != dst:
            out[dst : dst + size] = out[src : src + size]
    return group_offsets, out[: group_offsets[-1]]


@dataclass
class GroupIndex:
    """Pairs of every group at one ontology level, and which groups batches may draw."""

    level: int
    offsets: np.ndarray  # (num_classes + 1,) int64
    pairs: np.ndarray  # (total,) int32 pair ids
    eligible: np.ndarray  # int64 group (class) ids a same-object batch may draw
    weights: np.ndarray  # float64 draw probabilities of ``eligible``

    def members(self, group: int) -> np.ndarray:
        """Pair ids of ``group`` (a view, int32)."""
        return self.pairs[self.offsets[group] : self.offsets[group + 1]]

    def sizes(self) -> np.ndarray:
        """Distinct pairs per group."""
        return np.diff(self.offsets)


@dataclass
class EpochPlan:
    """One epoch's global batches and what each one is."""

    epoch: int
    batches: np.ndarray  # (num_batches, global_batch) int64
    phase: np.ndarray  # (num_batches,) int8: DIVERSE or SAME_OBJECT
    objects: np.ndarray  # (num_batches,) int64 group class id, -1 for diverse batches
    level: np.ndarray  # (num_batches,) int64 ontology level the walk is at
    prob: np.ndarray  # (num_batches,) float64 same-object probability
    same_so_far: np.ndarray  # (num_batches,) int64 same-object batches up to and incl. b
    diverse_distinct_objects: float
    repeated_slots: int


# --------------------------------------------------------------------------- sampler
@SAMPLERS.register("tonics", schema=TONICS_SCHEMA)
class TonicsBatchSampler(PlannedBatchSampler):
    """Diverse batches first, same-object batches progressively (see module docstring)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tags: TagTable | None = None,
        total_steps: int | None = None,
        schedule: str | Mapping[str, Any] | Schedule = "linear",
        ontology_walk: bool | Mapping[str, Any] = False,
        object_weighting: str = "pairs",
        small_object_policy: str = "parent",
        untagged_policy: str = "diverse_only",
        diverse_tag_choice: str = "uniform",
        min_object_pairs: int = 2,
        epochs: int | None = None,
        min_tag_coverage: float = 0.5,
        allow_low_coverage: bool = False,
        index_chunk_pairs: int = 1 << 16,
    ) -> None:
        super().__init__(
            num_samples,
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            tags=tags,
            total_steps=total_steps,
        )
        _check_choice("small_object_policy", small_object_policy, SMALL_OBJECT_POLICIES)
        _check_choice("untagged_policy", untagged_policy, UNTAGGED_POLICIES)
        _check_choice("object_weighting", object_weighting, OBJECT_WEIGHTINGS)
        _check_choice("diverse_tag_choice", diverse_tag_choice, TAG_CHOICES)
        if not 0.0 <= min_tag_coverage <= 1.0:
            raise ValueError(f"sampler.min_tag_coverage must be in [0, 1], got {min_tag_coverage}")
        if tags is None:
            raise ValueError(_NO_TAGS)
        if tags.num_pairs != num_samples:
            raise ValueError(
                f"the tag table has {tags.num_pairs} rows but the training set has "
                f"{num_samples} pairs; build the tags from the same (filtered) source"
            )
        if len(tags.parents) != tags.num_classes:
            raise ValueError(
                f"tags.parents has {len(tags.parents)} entries for {tags.num_classes} classes"
            )
        if min_object_pairs < 1:
            raise ValueError(f"min_object_pairs must be >= 1, got {min_object_pairs}")
        self.schedule = build_schedule(schedule)
        self.walk: OntologyWalk | None = None
        if ontology_walk is True:
            self.walk = OntologyWalk()
        elif isinstance(ontology_walk, Mapping):
            self.walk = OntologyWalk(**dict(ontology_walk))
        self.object_weighting = object_weighting
        self.small_object_policy = small_object_policy
        self.untagged_policy = untagged_policy
        self.diverse_tag_choice = diverse_tag_choice
        self.min_object_pairs = int(min_object_pairs)
        self.epochs = epochs

        self._tag_counts = tags.counts().astype(np.int32)
        self.num_untagged = int(np.count_nonzero(self._tag_counts == 0))
        _check_coverage(
            num_samples - self.num_untagged, num_samples, min_tag_coverage, allow_low_coverage
        )
        self._usable: np.ndarray | None = None
        if untagged_policy == "drop":
            self._usable = self._tag_counts > 0
        self._num_usable = num_samples - (self.num_untagged if self._usable is not None else 0)
        if self._num_usable < self.global_batch_size:
            raise ValueError(
                f"only {self._num_usable} pairs have tags, fewer than one global batch "
                f"({self.global_batch_size}); use untagged_policy=diverse_only or a smaller "
                "batch"
            )

        self._depths = class_depths(tags.parents)
        self.num_levels = int(self._depths.max(initial=0)) + 1
        self._total_batches = self._training_length(total_steps, epochs)
        self._rarest = _rarest_tags(tags) if diverse_tag_choice == "rarest" else None
        self._indices: dict[int, GroupIndex] = {}
        self._max_prob = float(np.max(self.schedule(np.linspace(0.0, 1.0, 1001))))
        levels = range(self.num_levels) if self.walk else [self.num_levels - 1]
        for level in levels:
            self._indices[level] = self._build_index(level, index_chunk_pairs)
        self._plan: EpochPlan | None = None
        self.stats.update(
            untagged_pairs=float(self.num_untagged),
            untagged_share=self.num_untagged / max(1, num_samples),
        )

    # ------------------------------------------------------------------ set-up helpers
    def _training_length(self, total_steps: int | None, epochs: int | None) -> int | None:
        if total_steps is not None and total_steps > 0:
            return int(total_steps)
        if epochs is not None and epochs > 0:
            return int(epochs) * self.batches_per_epoch()
        probe = self.schedule(np.linspace(0.0, 1.0, 1001))
        if self.walk is None and np.ptp(probe) == 0.0:
            return None  # progress does not matter
        raise ValueError(
            "sampler=tonics schedules its curriculum over training progress but knows no "
            "training length: set trainer.max_steps (passed as total_steps) or sampler.epochs"
        )

    def _build_index(self, level: int, chunk_pairs: int) -> GroupIndex:
        tags = self.tags
        assert tags is not None
        num_classes = tags.num_classes
        parents = tags.parents.astype(np.int64)
        mapping = level_mapping(parents, self._depths, level)
        if self.small_object_policy == "parent":
            occurrences = np.bincount(tags.values, minlength=num_classes)
            mapping = merge_small_groups(
                mapping, occurrences, parents, self._depths, self.global_batch_size
            )
        offsets, pairs = build_group_index(
            tags.offsets, tags.values, mapping, num_classes, chunk_pairs
        )
        sizes = np.diff(offsets)
        floor = (
            self.min_object_pairs
            if self.small_object_policy == "replacement"
            else (self.global_batch_size)
        )
        eligible = np.flatnonzero(sizes >= max(1, floor))
        if len(eligible) == 0 and self._max_prob > 0:
            largest = int(sizes.max(initial=0))
            raise ValueError(
                f"no object group at ontology level {level} has {floor} pairs (largest: "
                f"{largest}) so same-object batches of {self.global_batch_size} are impossible "
                f"under small_object_policy={self.small_object_policy!r}; "
                + self._small_group_fix(largest)
            )
        w = sizes[eligible].astype(np.float64)
        if self.object_weighting == "sqrt":
            w = np.sqrt(w)
        elif self.object_weighting == "uniform":
            w = np.ones_like(w)
        weights = w / w.sum() if len(w) else w
        return GroupIndex(level, offsets, pairs, eligible, weights)

    def _small_group_fix(self, largest: int) -> str:
        """Options that make some group eligible, given the largest group's pair count."""
        if largest == 0:
            return "no pair has a tag at this level: tag the data (sampler.tagging.source=captions)"
        if self.small_object_policy == "replacement":
            return f"set sampler.min_object_pairs={largest} (or lower)"
        fixes = ["sampler.small_object_policy=replacement (fills a batch with repeats)"]
        per_rank = largest // self.world_size
        if per_rank >= 1:
            fixes.append(f"data.batch_size={per_rank} (or lower)")
        return "set " + " or ".join(fixes)

    # ------------------------------------------------------------------ public views
    def batches_per_epoch(self) -> int:
        """Batches per rank and epoch (untagged pairs excluded under ``drop``)."""
        return self._num_usable // self.global_batch_size

    def group_index(self, level: int | None = None) -> GroupIndex:
        """The pair index of ontology ``level`` (default: the finest level in use)."""
        return self._indices[self.num_levels - 1 if level is None else level]

    def progress(self, epoch: int, batch: np.ndarray | int) -> np.ndarray:
        """Training progress in ``[0, 1]`` of ``batch`` (index in the epoch) of ``epoch``."""
        if self._total_batches is None:
            return np.zeros(np.shape(batch))
        step = epoch * self.batches_per_epoch() + np.asarray(batch, dtype=np.float64)
        return np.clip(step / self._total_batches, 0.0, 1.0)

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """The full plan of ``epoch`` (cached for the latest epoch asked for)."""
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = None  # free the old plan before building the new one
            plan = self._plan = self._make_plan(epoch)
            self.stats.update(
                epoch_same_object_share=float(plan.phase.mean()) if len(plan.phase) else 0.0,
                diverse_distinct_objects=plan.diverse_distinct_objects,
                repeated_pair_share=plan.repeated_slots / max(1, plan.batches.size),
            )
        return self._plan

    def plan_epoch(self, epoch: int) -> np.ndarray:
        return self.epoch_plan(epoch).batches

    def batch_phase(self, b: int, epoch: int | None = None) -> str:
        """``"diverse"`` or ``"same_object"``: the kind of batch ``b`` of ``epoch``."""
        plan = self.epoch_plan(self.epoch if epoch is None else epoch)
        return "same_object" if plan.phase[b] == SAME_OBJECT else "diverse"

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            self._batch_stats(self.batches_done - 1)
            yield batch

    def _batch_stats(self, b: int) -> None:
        plan = self.epoch_plan(self.epoch)
        self.stats["same_object_prob"] = float(plan.prob[b])
        self.stats["same_object_batch"] = float(plan.phase[b])
        self.stats["same_object_share"] = float(plan.same_so_far[b]) / (b + 1)
        if self.walk is not None:
            self.stats["ontology_level"] = float(plan.level[b])

    # ------------------------------------------------------------------ planning
    def _make_plan(self, epoch: int) -> EpochPlan:
        rng = self.epoch_rng(epoch)
        nb, gb = self.batches_per_epoch(), self.global_batch_size
        progress = self.progress(epoch, np.arange(nb))
        prob = np.asarray(self.schedule(progress), dtype=np.float64)
        is_same = rng.random(nb) < prob
        if self.walk is not None:
            level = self.walk.level(progress, self.num_levels)
        else:
            level = np.full(nb, self.num_levels - 1, dtype=np.int64)
        same_rows = np.flatnonzero(is_same)
        objects = np.full(nb, -1, dtype=np.int64)
        for lv in np.unique(level[same_rows]):
            rows = same_rows[level[same_rows] == lv]
            index = self._indices[int(lv)]
            objects[rows] = rng.choice(index.eligible, size=len(rows), p=index.weights)

        batches = np.empty((nb, gb), dtype=np.int64)
        used = np.zeros(self.num_samples, dtype=bool)
        repeated = self._fill_same(rng, batches, same_rows, objects, level, used)
        distinct = self._fill_diverse(rng, batches, np.flatnonzero(~is_same), used)
        phase = is_same.astype(np.int8)
        return EpochPlan(
            epoch=epoch,
            batches=batches,
            phase=phase,
            objects=objects,
            level=level,
            prob=prob,
            same_so_far=np.cumsum(phase, dtype=np.int64),
            diverse_distinct_objects=distinct,
            repeated_slots=repeated,
        )

    def _fill_same(
        self,
        rng: np.random.Generator,
        batches: np.ndarray,
        rows: np.ndarray,
        objects: np.ndarray,
        level: np.ndarray,
        used: np.ndarray,
    ) -> int:
        """Fill same-object rows; returns the number of slots holding an already used pair."""
        if len(rows) == 0:
            return 0
        num_classes = self.tags.num_classes  # type: ignore[union-attr]
        keys = level[rows] * num_classes + objects[rows]
        uniq, inverse = np.unique(keys, return_inverse=True)
        repeated = 0
        for u in rng.permutation(len(uniq)):  # random order: who gets unused pairs first
            lv, group = divmod(int(uniq[u]), num_classes)
            members = self._indices[lv].members(group)
            target = rows[inverse == u]
            block, rep = self._group_batches(rng, members, len(target), used)
            batches[target] = block
            repeated += rep
        return repeated

    def _group_batches(
        self, rng: np.random.Generator, members: np.ndarray, m: int, used: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """``m`` batches of pairs of one group, unused pairs first."""
        gb = self.global_batch_size
        n = len(members)
        out = np.empty((m, gb), dtype=np.int64)
        repeated = 0
        if n < gb:  # only reachable under small_object_policy="replacement"
            for r in range(m):
                extra = rng.choice(members, size=gb - n, replace=True)
                out[r] = rng.permutation(np.concatenate([members, extra]))
                repeated += (gb - n) + int(np.count_nonzero(used[members]))
                used[members] = True
            return out, repeated
        fresh = members[~used[members]]
        filled = min(m, len(fresh) // gb)
        if filled:
            out[:filled] = rng.choice(fresh, size=filled * gb, replace=False).reshape(filled, gb)
            used[out[:filled].ravel()] = True
        per_cycle = n // gb
        while filled < m:  # group exhausted this epoch: draw from all its pairs again
            take = min(per_cycle, m - filled)
            block = rng.choice(members, size=take * gb, replace=False).reshape(take, gb)
            out[filled : filled + take] = block
            for row in block:
                repeated += int(np.count_nonzero(used[row]))
                used[row] = True
            filled += take
        return out, repeated

    def _fill_diverse(
        self, rng: np.random.Generator, batches: np.ndarray, rows: np.ndarray, used: np.ndarray
    ) -> float:
        """Fill diverse rows; returns the mean number of distinct sampled objects per row."""
        nd = len(rows)
        if nd == 0:
            return 0.0
        gb = self.global_batch_size
        free = ~used
        if self._usable is not None:
            free &= self._usable
        avail = np.flatnonzero(free).astype(np.int32)
        del free
        rng.shuffle(avail)  # in place; its first nd * gb entries are a random subset
        sel = avail[: nd * gb]
        obj = self._sampled_objects(rng, sel)
        num_classes = self.tags.num_classes  # type: ignore[union-attr]
        key_dtype = np.uint16 if num_classes + 1 <= np.iinfo(np.uint16).max else np.int32
        # a random order of classes (slot num_classes, i.e. index -1, for untagged pairs)
        rank = rng.permutation(num_classes + 1).astype(key_dtype)
        order = np.argsort(rank[obj], kind="stable")  # grouped by object, random inside
        # deal round-robin: the k-th pair of the sorted list goes to row k % nd, so an
        # object sampled c <= nd times lands in c different rows
        grid = sel[order].reshape(gb, nd).T
        del order
        grid = rng.permuted(grid, axis=1)
        batches[rows[rng.permutation(nd)]] = grid
        counts = np.bincount(obj[obj >= 0], minlength=num_classes)
        return float(np.minimum(counts, nd).sum()) / nd

    def _sampled_objects(
        self, rng: np.random.Generator, sel: np.ndarray, chunk: int = 1 << 20
    ) -> np.ndarray:
        """One tag per selected pair (int32, -1 for untagged pairs); chunked to save memory."""
        if self._rarest is not None:
            return self._rarest[sel]
        tags = self.tags
        assert tags is not None
        obj = np.full(len(sel), -1, dtype=np.int32)
        for s in range(0, len(sel), chunk):
            part = sel[s : s + chunk]
            k = self._tag_counts[part]
            u = rng.random(len(part), dtype=np.float32)
            draw = np.minimum((u * k).astype(np.int32), np.maximum(k - 1, 0))
            pos = tags.offsets[part] + draw
            has = k > 0
            obj[s : s + chunk][has] = tags.values[pos[has]]
        return obj


def _rarest_tags(tags: TagTable) -> np.ndarray:
    """Each pair's least frequent tag (ties: the smaller class id); -1 for untagged pairs."""
    occ = np.bincount(tags.values, minlength=tags.num_classes)
    by_rarity = np.lexsort((np.arange(tags.num_classes), occ))  # rarest first
    rank = np.empty(tags.num_classes, dtype=np.int32)
    rank[by_rarity] = np.arange(tags.num_classes, dtype=np.int32)
    counts = tags.counts()
    out = np.full(tags.num_pairs, -1, dtype=np.int32)
    nonempty = counts > 0
    if nonempty.any():
        starts = tags.offsets[:-1][nonempty]
        best = np.minimum.reduceat(rank[tags.values], starts)
        out[nonempty] = by_rarity[best]
    return out


_HOW_TO_TAG = (
    "tag the captions with the packaged COCO ontology: sampler.tagging.source=captions "
    "(on the fly; sampler.tagging.ontology=<json> for another ontology), or once with "
    "`python -m vlexp.cli.tag data=...` then sampler.tagging.path=<its tag file>"
)
_NO_TAGS = f"sampler=tonics needs object tags but the training pairs have none: {_HOW_TO_TAG}"


def _check_coverage(tagged: int, total: int, minimum: float, allow: bool) -> None:
    """Refuse (or, if ``allow``, warn loudly) when too few pairs have tags."""
    share = tagged / max(1, total)
    if share >= minimum:
        return
    if not allow:
        raise ValueError(
            f"sampler=tonics: only {100 * share:.1f}% of the {total} training pairs have "
            f"object tags (sampler.min_tag_coverage={minimum}), so the curriculum would "
            f"hardly happen; {_HOW_TO_TAG}; or set sampler.allow_low_coverage=true to "
            "train anyway"
        )
    log.warning(_low_coverage_warning(share, total))


def _low_coverage_warning(share: float, total: int) -> str:
    bar = "!" * 78
    return (
        f"\n{bar}\n sampler=tonics with only {100 * share:.1f}% of {total} pairs tagged "
        "(sampler.allow_low_coverage=true):\n most pairs have no object and can only fill "
        "diverse (ordinary) batches; same-object\n batches re-use the few tagged pairs. "
        f"Tag the data first: {_HOW_TO_TAG}.\n{bar}"
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"sampler.{name}={value!r} is not one of {list(choices)}")
