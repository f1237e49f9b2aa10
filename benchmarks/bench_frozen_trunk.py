"""Training-step time of ``experiment=tonics`` with cached frozen trunks vs without.

    .venv/bin/python benchmarks/bench_frozen_trunk.py [--rounds 10] [--warmup 2]
        [--batch-size 64] [--threads 0] [--json out.json]

The model is the one ``experiment=tonics`` builds (Hydra-composed: ``encoder=
pretrained_small`` at 64 px, MiniLM-L6 + EfficientNet-Lite0, the last block of each tower
and the projections train). One step = encode images and captions, symmetric InfoNCE,
backward, AdamW step, on a batch of ``--batch-size`` synthetic training pairs.

- ``uncached``: the towers run whole (the frozen trunks are recomputed every step);
- ``cached``: :class:`vlexp.encoders.trunk_cache.TrunkCache` (``encoder.trunk_cache`` with
  ``data.train_crop_scale=null``) reads the trunks' outputs of the batch's samples from
  the memory-mapped cache (filled by the first step, as the first epoch fills it) and
  runs only the trainable tops, as training does. With the last text layer training,
  its forward and backward bound the text tower's gain at about 8/3x (uncached: 6 layer
  forwards + the last one's backward; cached: 1 forward + that backward);
- ``cached_trimmed``: also drops the padding positions from the text top (the batch's
  longest caption instead of ``context_length``). Training does this only when no
  dropout in the text tower is active (e.g. ``hidden_dropout_prob=0``): the preset's
  trainable MiniLM layer uses dropout 0.1, whose masks depend on the tensor shape, so
  with it the trimmed step is not the uncached step;
- ``lit_uncached`` / ``lit_cached``: the same pair of towers frozen whole
  (``encoder.text.freeze=all encoder.image.freeze=all``, the LiT setting: only the
  projections and the temperature train). Cached, a step reads one pooled vector per
  sample and tower and runs the projections.

Each variant trains its own copy of the same initial model on the same batch,
interleaved (rounds rotate the order), so load drift on a shared machine hits all alike;
a ratio is the median over rounds of uncached / variant (and that of the fastest steps).
``fill_ms`` is the first cached step (trunks computed and stored). Target: >= 5x on CPU.
Loader work (decoding, transforms) is the same in both and not part of a step here.
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


LIT = ["encoder.text.freeze=all", "encoder.image.freeze=all"]


def _config(batch_size: int, extra: tuple[str, ...] = ()) -> Any:
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=tonics", "data.train_crop_scale=null", *extra]
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


def _step(model: Any, opt: Any, batch: dict[str, torch.Tensor], cache: Any) -> float:
    start = time.perf_counter()
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
    return (time.perf_counter() - start) * 1000.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time both variants interleaved; return the measurements."""
    from omegaconf import OmegaConf

    from vlexp.encoders import ENCODERS
    from vlexp.encoders.trunk_cache import trunk_cache_for_run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args.batch_size)
    lit_cfg = _config(args.batch_size, tuple(LIT))
    torch.manual_seed(0)
    base = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    torch.manual_seed(0)
    lit = ENCODERS.build(OmegaConf.to_container(lit_cfg.encoder, resolve=True))
    batch, train_set = _batch(base, cfg, args.batch_size)
    names = ("uncached", "cached", "cached_trimmed", "lit_uncached", "lit_cached")
    models = {name: copy.deepcopy(lit if name.startswith("lit") else base) for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.paths.cache_dir = lit_cfg.paths.cache_dir = tmp
        cache = trunk_cache_for_run(models["cached"], cfg, train_set)
        assert cache is not None and cache.image is not None and cache.text is not None
        trimmed = trunk_cache_for_run(models["cached_trimmed"], cfg, train_set)
        trimmed.trim_padding = True
        lit_cache = trunk_cache_for_run(models["lit_cached"], lit_cfg, train_set)
        assert lit_cache is not None and lit_cache.image is not None and lit_cache.text is not None
        caches = {
            "uncached": None,
            "cached": cache,
            "cached_trimmed": trimmed,
            "lit_uncached": None,
            "lit_cached": lit_cache,
        }
        opts = {}
        for name, m in models.items():
            m.train()
            params = [p for p in m.parameters() if p.requires_grad]
            opts[name] = torch.optim.AdamW(params, lr=1e-4)
        fill_ms = _step(models["cached"], opts["cached"], batch, cache)
        _step(models["cached_trimmed"], opts["cached_trimmed"], batch, trimmed)
        lit_fill_ms = _step(models["lit_cached"], opts["lit_cached"], batch, lit_cache)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.warmup + args.rounds):
            k = r % len(names)
            order = list(names[k:] + names[:k])
            for name in order:
                ms = _step(models[name], opts[name], batch, caches[name])
                if r >= args.warmup:
                    times[name].append(ms)
    out: dict[str, Any] = {
        "batch_size": args.batch_size,
        "image_size": base.image_size,
        "threads": torch.get_num_threads(),
        "params": base.freeze_summary(),
        "lit_params": lit.freeze_summary(),
        "fill_ms": round(fill_ms, 1),
        "lit_fill_ms": round(lit_fill_ms, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    for name in names:
        out[f"{name}_ms_median"] = round(statistics.median(times[name]), 1)
        if name not in ("uncached", "lit_uncached"):
            ref = times["lit_uncached" if name.startswith("lit") else "uncached"]
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
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args)
    print(
        f"experiment=tonics step, batch {result['batch_size']} at {result['image_size']} px, "
        f"{result['threads']} threads: uncached {result['uncached_ms_median']} ms, cached "
        f"{result['cached_ms_median']} ms, cached_trimmed {result['cached_trimmed_ms_median']} "
        f"ms (first cached step, filling: {result['fill_ms']} ms)"
    )
    print(
        f"towers frozen whole ({' '.join(LIT)}): uncached {result['lit_uncached_ms_median']} ms, "
        f"cached {result['lit_cached_ms_median']} ms (first cached step: "
        f"{result['lit_fill_ms']} ms); 1-minute load average {result['load_avg_1min']}"
    )
    for name, ref in (
        ("cached", "uncached"),
        ("cached_trimmed", "uncached"),
        ("lit_cached", "lit_uncached"),
    ):
        print(
            f"speed-up {ref}/{name}: {result[f'ratio_{name}_median']}x median over rounds, "
            f"{result[f'ratio_{name}_min']}x fastest steps (target >= 5x)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
