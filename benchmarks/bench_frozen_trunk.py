"""Training-step time of ``experiment=tonics`` with cached frozen trunks vs without.

    .venv/bin/python benchmarks/bench_frozen_trunk.py [--rounds 10] [--warmup 2]
        [--batch-size 64] [--threads 0] [--clock wall|cpu] [--json out.json]

The models are the ones ``experiment=tonics`` builds (Hydra-composed: ``encoder=
pretrained_small`` at 64 px, MiniLM-L6 + EfficientNet-Lite0). One step = encode images
and captions, symmetric InfoNCE, backward, AdamW step, on a batch of ``--batch-size``
synthetic training pairs.

- ``uncached`` / ``cached``: the recipe as it ships: both towers locked (``freeze=all``,
  the LiT setting; only the projections and the temperature train). Uncached, both towers
  run whole every step; cached (:class:`vlexp.encoders.trunk_cache.TrunkCache`, i.e.
  ``encoder.trunk_cache=auto`` with ``aug=none``), a step reads one
  pooled vector per sample and tower from the memory-mapped cache (filled by the first
  step, as the first epoch fills it) and runs the projections and the loss;
- ``top_uncached`` / ``top_cached``: the recipe with the last block of each tower
  training (``encoder.text.freeze=last_n encoder.image.freeze=last_n``). The cache holds
  the frozen layers below; the trainable tops still run forward and backward, which
  bounds the text tower's gain at about 8/3x (uncached: 6 layer forwards + the last one's
  backward; cached: 1 forward + that backward);
- ``top_cached_trimmed``: also drops the padding positions from the text top (the
  batch's longest caption instead of ``context_length``). Training does this only when no
  dropout in the text tower is active (e.g. ``hidden_dropout_prob=0``): MiniLM's layer
  uses dropout 0.1, whose masks depend on the tensor shape, so with it the trimmed step
  is not the uncached step.

Each variant trains its own copy of the same initial model on the same batch,
interleaved (rounds rotate the order), so load drift on a shared machine hits all alike;
a ratio is the median over rounds of uncached / variant (and that of the fastest steps).
``--clock cpu`` times each step by the process's CPU time instead of the wall clock (with
``--threads 1`` the step's own work, which other jobs on the machine do not inflate).
``fill_ms`` is the first cached step (trunks computed and stored). Target: >= 5x on CPU
for the recipe. Loader work (decoding, transforms) is the same in both and not part of a
step here.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


TOP = ["encoder.text.freeze=last_n", "encoder.image.freeze=last_n"]


def _config(batch_size: int, extra: tuple[str, ...] = ()) -> Any:
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=tonics", "aug=none", *extra]
    overrides += [f"data.batch_size={batch_size}", "data.source.num_train=2000"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _batch(model: Any, cfg: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` synthetic training pairs, preprocessed as training sees them."""
    from omegaconf import OmegaConf

    from vlexp.data.pipeline import PairCollator, image_transform
    from vlexp.data.sources import DATASETS

    splits = DATASETS.build(OmegaConf.to_container(cfg.data.source, resolve=True), seed=cfg.seed)
    transform = image_transform(model.image_size, model.image_mean, model.image_std, True, None)
    collate = PairCollator(transform, model.tokenize)
    return collate([splits.train[i] for i in range(batch_size)]), splits.train


def _step(model: Any, opt: Any, batch: dict[str, torch.Tensor], cache: Any, clock: Any) -> float:
    start = clock()
    if cache is None:
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    else:
        image, text = cache.encode(model, batch)
    logits = model.logit_scale() * image @ text.T
    target = torch.arange(len(image))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return (clock() - start) * 1000.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time every variant interleaved; return the measurements."""
    from omegaconf import OmegaConf

    from vlexp.encoders import ENCODERS
    from vlexp.encoders.trunk_cache import trunk_cache_for_run

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cfg = _config(args.batch_size)
    top_cfg = _config(args.batch_size, tuple(TOP))
    torch.manual_seed(0)
    locked = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    torch.manual_seed(0)
    top = ENCODERS.build(OmegaConf.to_container(top_cfg.encoder, resolve=True))
    batch, train_set = _batch(locked, cfg, args.batch_size)
    names = ("uncached", "cached", "top_uncached", "top_cached", "top_cached_trimmed")
    models = {name: copy.deepcopy(top if name.startswith("top") else locked) for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.paths.cache_dir = top_cfg.paths.cache_dir = tmp
        caches: dict[str, Any] = {"uncached": None, "top_uncached": None}
        for name, c in (("cached", cfg), ("top_cached", top_cfg), ("top_cached_trimmed", top_cfg)):
            caches[name] = trunk_cache_for_run(models[name], c, train_set)
            assert caches[name] is not None, f"{name}: no trunk cache for this configuration"
            assert caches[name].image is not None and caches[name].text is not None
        caches["top_cached_trimmed"].trim_padding = True
        opts = {}
        for name, m in models.items():
            m.train()
            params = [p for p in m.parameters() if p.requires_grad]
            opts[name] = torch.optim.AdamW(params, lr=1e-4)
        fill_ms = {  # the first cached step computes and stores the trunks
            name: _step(models[name], opts[name], batch, caches[name], clock)
            for name in ("cached", "top_cached", "top_cached_trimmed")
        }
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.warmup + args.rounds):
            k = r % len(names)
            order = list(names[k:] + names[:k])
            for name in order:
                ms = _step(models[name], opts[name], batch, caches[name], clock)
                if r >= args.warmup:
                    times[name].append(ms)
    out: dict[str, Any] = {
        "batch_size": args.batch_size,
        "image_size": locked.image_size,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "params": locked.freeze_summary(),
        "top_params": top.freeze_summary(),
        "fill_ms": round(fill_ms["cached"], 1),
        "top_fill_ms": round(fill_ms["top_cached"], 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    for name in names:
        out[f"{name}_ms_median"] = round(statistics.median(times[name]), 1)
        if not name.endswith("uncached"):
            ref = times["top_uncached" if name.startswith("top") else "uncached"]
            ratios = [u / c for u, c in zip(ref, times[name])]
            out[f"ratio_{name}_median"] = round(statistics.median(ratios), 2)
            out[f"ratio_{name}_min"] = round(min(ref) / min(times[name]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args)
    unit = "CPU ms" if args.clock == "cpu" else "ms"
    print(
        f"experiment=tonics step (towers locked), batch {result['batch_size']} at "
        f"{result['image_size']} px, {result['threads']} threads: uncached "
        f"{result['uncached_ms_median']} {unit}, cached {result['cached_ms_median']} {unit} "
        f"(first cached step, filling: {result['fill_ms']} {unit})"
    )
    print(
        f"last blocks training ({' '.join(TOP)}): uncached {result['top_uncached_ms_median']} "
        f"{unit}, cached {result['top_cached_ms_median']} {unit}, cached_trimmed "
        f"{result['top_cached_trimmed_ms_median']} {unit} (first cached step: "
        f"{result['top_fill_ms']} {unit}); 1-minute load average {result['load_avg_1min']}"
    )
    for name, ref, target in (
        ("cached", "uncached", " (target >= 5x)"),
        ("top_cached", "top_uncached", ""),
        ("top_cached_trimmed", "top_uncached", ""),
    ):
        print(
            f"speed-up {ref}/{name}: {result[f'ratio_{name}_median']}x median over rounds, "
            f"{result[f'ratio_{name}_min']}x fastest steps{target}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
