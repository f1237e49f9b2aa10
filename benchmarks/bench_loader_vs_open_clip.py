"""Training loader throughput: vlexp's shard loader against open_clip's, per loader worker.

Exports ``--n`` pairs of ``--size`` px JPEGs as img2dataset-style shards, then times one
epoch of each training loader over the same shards, at each worker count:

* ``open_clip``   ``open_clip_train.data.get_wds_dataset`` with the training preprocess of
                  ``open_clip.create_model_and_transforms`` (PIL decode, bicubic
                  RandomResizedCrop, ToTensor, Normalize) and open_clip's tokenizer
* ``vlexp``       :class:`~vlexp.data.readers.webdataset_reader.WebDatasetPairs` +
                  :class:`~vlexp.data.pipeline.PairCollator` with the training transform
                  (fused uint8 crop/resize/normalise) and the same tokenizer
* ``vlexp-pil``   the same with the PIL transform path (``fused=False``), for reference

Both use persistent workers; each figure is the best of ``--repeats`` epochs. It prints
samples/s, samples/s per worker and the ratio to open_clip at the same worker count
(``workers=0``: samples per CPU second of the one process doing all the work, which a
busy machine does not distort; that is the per-worker rate of a CPU-bound worker), then
a single-process raw tar read (no decoding) of the webdataset library against vlexp's
tar reader.

    .venv/bin/python benchmarks/bench_loader_vs_open_clip.py --n 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.pipeline import PairCollator, TrainTransform
from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.readers.webdataset_reader import WebDatasetPairs
from vlexp.data.shards.export import export_webdataset
from vlexp.data.shards.samples import iter_shard

MODEL = "ViT-B-32"


class Tokenize:
    """open_clip's tokenizer in vlexp's collator interface (``input_ids``/``attention_mask``)."""

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(texts)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def epoch_rate(
    loader: Iterable[Any], repeats: int, count: Callable[[Any], int]
) -> tuple[float, float]:
    """Best samples/s over ``repeats`` epochs of one (persistent-worker) loader: per
    wall-clock second and per CPU second of this process (all the work when it has no
    workers, so independent of other load on the machine)."""
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        seen = sum(count(batch) for batch in loader)
        best = max(best, seen / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, seen / max(time.process_time() - c0, 1e-9))
    return best, best_cpu


def open_clip_loader(spec: str, n: int, workers: int, batch: int) -> DataLoader:
    """open_clip's own training loader over ``spec``."""
    import open_clip
    from open_clip_train.data import get_wds_dataset

    _, preprocess, _ = open_clip.create_model_and_transforms(MODEL, pretrained=None)
    args = Namespace(
        train_data=spec,
        train_num_samples=n,
        dataset_resampled=False,
        seed=0,
        batch_size=batch,
        workers=workers,
        world_size=1,
        train_data_upsampling_factors=None,
    )
    tokenizer = open_clip.get_tokenizer(MODEL)
    return get_wds_dataset(args, preprocess, is_train=True, tokenizer=tokenizer).dataloader


def vlexp_loader(shards: list[str], workers: int, batch: int, fused: bool) -> DataLoader:
    """vlexp's streaming shard loader with the training transform and collator."""
    import open_clip

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    size = open_clip.get_model_config(MODEL)["vision_cfg"]["image_size"]
    transform = TrainTransform(size, mean, std, (0.9, 1.0), ratio=(3 / 4, 4 / 3), fused=fused)
    collate = PairCollator(transform, Tokenize(open_clip.get_tokenizer(MODEL)))
    ds = WebDatasetPairs(shards, shuffle_buffer=1000, rank=0, world_size=1, min_samples=1)
    return DataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )


def raw_read_rates(shards: list[str], repeats: int) -> dict[str, float]:
    """Samples/s of reading the shards' raw members (no decoding), one process."""
    import webdataset as wds

    def library() -> int:
        return sum(1 for _ in wds.WebDataset(shards, shardshuffle=False))

    def ours() -> int:
        counter = BadSampleCounter(1.0, log_first=0)
        return sum(1 for url in shards for _ in iter_shard(url, counter))

    rates = {}
    for name, run in (("webdataset library", library), ("vlexp tar reader", ours)):
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            k = run()
            best = max(best, k / (time.perf_counter() - t0))
        rates[name] = best
    return rates


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of pairs")
    p.add_argument("--size", type=int, default=224, help="JPEG side (px)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="vlexp-bench-") as tmp:
        pairs = colour_block_pairs(args.n, image_size=args.size, seed=0)
        shards = [str(s) for s in export_webdataset(pairs, tmp, shard_size=args.shard_size)]
        spec = f"{tmp}/{{00000..{len(shards) - 1:05d}}}.tar"
        print(f"{args.n} pairs, {args.size}px JPEG (q95), {len(shards)} shards")
        rows = []
        for w in args.workers:
            loaders: dict[str, tuple[Any, Callable[[Any], int]]] = {
                "open_clip": (
                    open_clip_loader(spec, args.n, w, args.batch_size),
                    lambda b: len(b[0]),
                ),
                "vlexp": (
                    vlexp_loader(shards, w, args.batch_size, fused=True),
                    lambda b: len(b["image"]),
                ),
                "vlexp-pil": (
                    vlexp_loader(shards, w, args.batch_size, fused=False),
                    lambda b: len(b["image"]),
                ),
            }
            base = None
            for name, (loader, count) in loaders.items():
                rate, cpu_rate = epoch_rate(loader, args.repeats, count)
                rate = cpu_rate if w == 0 else rate
                base = rate if name == "open_clip" else base
                rows.append(
                    {"loader": name, "workers": w, "samples_per_s": rate, "ratio": rate / base}
                )
                del loader
        print(
            f"\n{'loader':<12}{'workers':>8}{'samples/s':>11}{'per worker':>12}{'vs open_clip':>14}"
        )
        for r in rows:
            per = r["samples_per_s"] / max(r["workers"], 1)
            print(
                f"{r['loader']:<12}{r['workers']:>8}{r['samples_per_s']:>11.0f}"
                f"{per:>12.0f}{r['ratio']:>14.2f}"
            )
        if 0 in args.workers:
            print("(workers 0: samples per CPU second of the loading process)")
        raw = raw_read_rates(shards, args.repeats)
        lib, ours = raw["webdataset library"], raw["vlexp tar reader"]
        print(f"\nraw tar read, 1 process: webdataset library {lib:.0f}/s, ", end="")
        print(f"vlexp tar reader {ours:.0f}/s (ratio {ours / lib:.2f})")
    return rows


if __name__ == "__main__":
    main()
