"""Throughput of vlexp's file readers against a plain torch.utils.data loop.

Exports N images as img2dataset-style shards and as CSV + files into a temporary
directory, then times decode + augment (RandomResizedCrop, ToTensor, Normalize) +
collate (default_collate of the image tensors) through a DataLoader at each worker
count, for:

* ``plain-files``   a minimal Dataset opening each exported file with PIL (the baseline)
* ``vlexp-csv``     :class:`vlexp.data.readers.csv_reader.CsvPairs` over the same files
* ``vlexp-indexed`` :class:`vlexp.data.shards.index.IndexedShardPairs` over the shards
* ``vlexp-wds``     :class:`vlexp.data.readers.webdataset_reader.WebDatasetPairs` over the shards
* ``wds-library``   the webdataset library's own pipeline over the same shards

and prints samples/s (best of ``--repeats`` epochs, worker start-up included) with the
ratio to ``plain-files`` at the same worker count.

    .venv/bin/python benchmarks/bench_data_loading.py --n 2000 --size 64 --workers 1 2
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms as T

from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.readers.memory import colour_block_pairs
from vlexp.data.readers.webdataset_reader import WebDatasetPairs
from vlexp.data.shards.export import export_csv, export_webdataset
from vlexp.data.shards.index import IndexedShardPairs, index_shards

MEAN, STD = (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)


def make_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    return T.Compose(
        [T.RandomResizedCrop(size, antialias=True), T.ToTensor(), T.Normalize(MEAN, STD)]
    )


class PlainFiles(Dataset):
    """The baseline: open each file with PIL, transform, return the tensor."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


class ItemCollate:
    """Transforms the ``image`` of vlexp items and default-collates the tensors."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, items: list[dict[str, Any]]) -> torch.Tensor:
        return default_collate([self.transform(it["image"]) for it in items])


def _first(sample: tuple) -> Any:
    return sample[0]


def time_loader(make: Callable[[], DataLoader], n: int, repeats: int) -> float:
    """Best samples/s over ``repeats`` full passes (a fresh loader each, workers included)."""
    best = 0.0
    for _ in range(repeats):
        loader = make()
        t0 = time.perf_counter()
        seen = sum(len(batch) for batch in loader)
        dt = time.perf_counter() - t0
        if seen != n:
            raise RuntimeError(f"a pass yielded {seen} samples, expected {n}")
        best = max(best, seen / dt)
    return best


def build_data(root: Path, n: int, size: int, shard_size: int, source: str) -> dict[str, Any]:
    if source == "synthetic":
        from vlexp.data.synthetic import build_synthetic

        pairs = build_synthetic(seed=0)["train"]
        if len(pairs) < n:
            raise SystemExit(f"the synthetic train split has {len(pairs)} pairs < --n {n}")
        from vlexp.data.types import Subset

        pairs = Subset(pairs, list(range(n)))
    else:
        pairs = colour_block_pairs(n, image_size=size, seed=0)
    table = export_csv(pairs, root / "csv")
    shards = export_webdataset(pairs, root / "wds", shard_size=shard_size)
    with open(table, newline="") as f:
        files = [table.parent / row["filepath"] for row in csv.DictReader(f)]
    return {"table": table, "shards": [str(s) for s in shards], "files": files}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="number of pairs")
    p.add_argument("--size", type=int, default=64, help="image side (px) and crop size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--source", choices=["blocks", "synthetic"], default="blocks")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="vlexp-bench-") as tmp:
        t0 = time.perf_counter()
        data = build_data(Path(tmp), args.n, args.size, args.shard_size, args.source)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = index_shards(data["shards"])
        index_s = time.perf_counter() - t0
        print(
            f"{args.n} pairs of {args.size}px: export {export_s:.1f}s "
            f"(csv+files and {len(data['shards'])} shards), index pass {index_s:.2f}s"
        )
        tf = make_transform(args.size)
        collate = ItemCollate(tf)
        bs = args.batch_size

        def wds_library(w: int) -> DataLoader:
            import webdataset as wds

            ds = wds.WebDataset(data["shards"], shardshuffle=False)
            ds = ds.decode("pil").to_tuple("jpg").map(_first).map(tf)
            return DataLoader(ds, batch_size=bs, num_workers=w)

        readers: dict[str, Callable[[int], DataLoader]] = {
            "plain-files": lambda w: DataLoader(
                PlainFiles(data["files"], tf), batch_size=bs, shuffle=True, num_workers=w
            ),
            "vlexp-csv": lambda w: DataLoader(
                CsvPairs(data["table"]),
                batch_size=bs,
                shuffle=True,
                num_workers=w,
                collate_fn=collate,
            ),
            "vlexp-indexed": lambda w: DataLoader(
                IndexedShardPairs(index),
                batch_size=bs,
                shuffle=True,
                num_workers=w,
                collate_fn=collate,
            ),
            "vlexp-wds": lambda w: DataLoader(
                WebDatasetPairs(data["shards"], shuffle_buffer=1000, rank=0, world_size=1),
                batch_size=bs,
                num_workers=w,
                collate_fn=collate,
            ),
            "wds-library": wds_library,
        }
        rows = []
        for w in args.workers:
            base = None
            for name, make in readers.items():
                rate = time_loader(lambda make=make, w=w: make(w), args.n, args.repeats)
                base = rate if name == "plain-files" else base
                rows.append(
                    {
                        "reader": name,
                        "workers": w,
                        "samples_per_s": rate,
                        "ratio": rate / base if base else float("nan"),
                    }
                )
        print(f"\n{'reader':<15}{'workers':>8}{'samples/s':>12}{'vs plain':>10}")
        for r in rows:
            print(
                f"{r['reader']:<15}{r['workers']:>8}{r['samples_per_s']:>12.0f}{r['ratio']:>10.2f}"
            )
    return rows


if __name__ == "__main__":
    main()
