"""Time and memory of the TOnICS sampler at CC3M scale.

Builds a synthetic tag table of ``--num-pairs`` pairs (default 3.3M, CC3M size) with 1-5
tags each over a COCO-like two-level ontology (``--leaves`` leaf classes with a
Zipf-shaped frequency, ``--parents`` parent classes, ``--parent-tag-share`` of the tags
naming a parent), then measures, separately:

* ``build``: constructing the sampler (validation + the per-group pair index);
* ``plan``: planning one epoch (``plan_epoch``), for ``--epochs`` epochs, with a share
  ``--same-share`` of same-object batches (default 0.5, a constant schedule: the mix
  where both kinds of batch are planned in equal numbers; 1.0 is the default
  schedule's end state, same-object batches only);
* ``per batch``: the mean time the sampler takes to yield one rank's batch;

and the peak memory beyond the tag arrays, by ``tracemalloc`` (numpy reports its
allocations to it) in a second, traced pass.
Targets: build + one epoch plan under 2 s and under 200 MB.

    .venv/bin/python benchmarks/bench_tonics_sampler.py
    .venv/bin/python benchmarks/bench_tonics_sampler.py --walk --policy replacement
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from vlexp.data.types import TagTable
from vlexp.samplers.tonics import TonicsBatchSampler

MB = 1024 * 1024


def synthetic_tags(
    num_pairs: int, leaves: int, parents: int, parent_tag_share: float, seed: int
) -> TagTable:
    """1-5 distinct tags per pair; Zipf-like leaf frequencies; some tags name a parent."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=num_pairs)
    nnz = int(counts.sum())
    freq = 1.0 / np.arange(1, leaves + 1)
    values = rng.choice(leaves, size=nnz, p=freq / freq.sum()).astype(np.int64)
    to_parent = rng.random(nnz) < parent_tag_share
    values[to_parent] = leaves + values[to_parent] % parents
    num_classes = leaves + parents
    # drop repeated tags of a pair (every pair keeps at least one)
    keys = np.unique(np.repeat(np.arange(num_pairs, dtype=np.int64), counts) * num_classes + values)
    offsets = np.zeros(num_pairs + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // num_classes, minlength=num_pairs), out=offsets[1:])
    par = np.concatenate([np.arange(leaves) % parents + leaves, np.full(parents, -1)])
    names = [f"leaf{i}" for i in range(leaves)] + [f"parent{j}" for j in range(parents)]
    return TagTable(offsets, (keys % num_classes).astype(np.int32), names, par.astype(np.int32))


def build_and_plan(tags: TagTable, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    """Build the sampler and plan ``args.epochs`` epochs; returns it and the timings."""
    nb = tags.num_pairs // (args.batch_size * args.world_size)
    kwargs: dict[str, Any] = {
        "small_object_policy": args.policy,
        "ontology_walk": args.walk,
        "diverse_tag_choice": args.tag_choice,
        "schedule": {"name": "constant", "p": args.same_share},
    }
    t0 = time.perf_counter()
    sampler = TonicsBatchSampler(
        tags.num_pairs,
        args.batch_size,
        world_size=args.world_size,
        seed=0,
        tags=tags,
        total_steps=2 * nb,
        **kwargs,
    )
    t1 = time.perf_counter()
    plans = []
    for e in range(args.epochs):
        s = time.perf_counter()
        sampler.plan_epoch(1 + e)
        plans.append(time.perf_counter() - s)
    return sampler, {"build": t1 - t0, "plan": min(plans), "plan_first": plans[0]}


def per_batch_seconds(sampler: TonicsBatchSampler, n: int) -> float:
    """Mean seconds per yielded (rank 0) batch over the first ``n`` batches of an epoch."""
    sampler.set_epoch(1)
    it = iter(sampler)
    next(it)  # plans (cached) and starts the generator
    t = time.perf_counter()
    k = 0
    for _ in range(n):
        if next(it, None) is None:
            break
        k += 1
    return (time.perf_counter() - t) / max(1, k)


def traced(fn: Callable[[], Any]) -> float:
    """Peak MB that ``fn`` allocates (tracemalloc), with what it returns kept alive."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    keep = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del keep
    return (peak - base) / MB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--num-pairs", type=int, default=3_300_000)
    ap.add_argument("--batch-size", type=int, default=256, help="per rank")
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--leaves", type=int, default=80)
    ap.add_argument("--parents", type=int, default=12)
    ap.add_argument("--parent-tag-share", type=float, default=0.05)
    ap.add_argument("--policy", default="parent", choices=["parent", "replacement", "skip"])
    ap.add_argument("--tag-choice", default="uniform", choices=["uniform", "rarest"])
    ap.add_argument("--walk", action="store_true", help="ontology walk (one index per level)")
    ap.add_argument("--same-share", type=float, default=0.5, help="P(same-object batch)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs planned (best time shown)")
    ap.add_argument("--batches", type=int, default=200, help="batches timed for per-batch cost")
    args = ap.parse_args()

    tags = synthetic_tags(args.num_pairs, args.leaves, args.parents, args.parent_tag_share, 0)
    tag_mb = (tags.offsets.nbytes + tags.values.nbytes) / MB
    gb = args.batch_size * args.world_size
    print(
        f"pairs {tags.num_pairs:,}  tags {len(tags.values):,} ({tag_mb:.0f} MB of tag arrays)  "
        f"classes {tags.num_classes}  global batch {gb}  batches/epoch "
        f"{tags.num_pairs // gb}  policy {args.policy}  walk {args.walk}  "
        f"tag choice {args.tag_choice}  same-object share {args.same_share}"
    )

    sampler, t = build_and_plan(tags, args)
    per_batch = per_batch_seconds(sampler, args.batches)
    st = sampler.stats
    print(
        f"time: build {t['build']:.2f} s + plan epoch {t['plan']:.2f} s (first "
        f"{t['plan_first']:.2f} s) = {t['build'] + t['plan']:.2f} s; per batch "
        f"{per_batch * 1e6:.0f} us"
    )
    print(
        f"epoch: same-object share {st['epoch_same_object_share']:.3f}, distinct objects per "
        f"diverse batch {st['diverse_distinct_objects']:.1f}, repeated pair share "
        f"{st['repeated_pair_share']:.4f}"
    )
    del sampler
    peak = traced(lambda: build_and_plan(tags, args))
    print(
        f"memory beyond the tag arrays: tracemalloc peak {peak:.0f} MB (build + "
        f"{args.epochs} epoch plans; kept afterwards: the group index and one plan)"
    )


if __name__ == "__main__":
    main()
