"""CPU time of one training step: CLIP, SoftAlign with the EMA teacher, with the self teacher.

    .venv/bin/python experiments/softalign_noise/step_cpu.py --json out.json [--rounds 20]

The same step as ``benchmarks/bench_softalign_step.py`` (its model, batch and step are
reused: tiny towers, encode, objective at progress 0.5, backward, AdamW, EMA update), but
timed in *CPU seconds of this process* (``time.process_time``) with one torch thread, so
other programs sharing the machine do not enter the numbers the way they enter wall time.
Objectives run interleaved, one step each per round in a rotating order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_softalign_step import prepare_runs, train_step  # noqa: E402

NAMES = ("clip", "softalign", "softalign_self")


def measure(rounds: int, warmup: int, batch_size: int, image_size: int) -> dict[str, Any]:
    """Per-round CPU seconds of one step of each objective in :data:`NAMES`."""
    torch.set_num_threads(1)
    encoder_cfg = {"name": "tiny", "image_size": image_size}
    torch.manual_seed(0)
    runs, batch = prepare_runs(encoder_cfg, batch_size, image_size, warmup, NAMES)
    cpu: dict[str, list[float]] = {n: [] for n in NAMES}
    for r in range(rounds):
        for name in NAMES[r % len(NAMES) :] + NAMES[: r % len(NAMES)]:
            model, obj, opt = runs[name]
            start = time.process_time()
            train_step(model, obj, opt, batch)
            cpu[name].append(time.process_time() - start)
    return {
        "batch_size": batch_size,
        "image_size": image_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "median_cpu_s": {n: statistics.median(v) for n, v in cpu.items()},
        "per_round_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: measure and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args(argv)
    res = measure(args.rounds, args.warmup, args.batch_size, args.image_size)
    args.json.write_text(json.dumps(res, indent=1))
    for name, t in res["median_cpu_s"].items():
        print(f"{name:15s} {1000 * t:7.1f} CPU-ms/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
