"""Peak memory and time of one training step: full batch vs ``optim.accum_freq=k``.

    .venv/bin/python benchmarks/bench_accumulation.py [--batch 256] [--accum 1,4,16]
        [--steps 3] [--rounds 2] [--device cpu|cuda] [--json out.json]

One step = towers + ``objective=clip`` over the whole batch + backward (what
``VLModule.training_step`` and Lightning's backward do), with the ``tiny`` encoder
preset at 64 px (ViT depth 4, text depth 2, width 96). ``accum_freq=1`` is the plain
full-batch step; ``k > 1`` runs the towers in ``k`` micro-batches without keeping
activations, then recomputes them one micro-batch at a time in backward. The gradients
are the same (``tests/train/test_accumulation.py``); the price is a second tower forward.

Each setting runs in a fresh subprocess (``--worker``), the settings alternate over
``--rounds`` so a busy machine slows them alike; time is the median step of every round.
Memory: on CPU, the peak RSS high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` after a warm-up step on a few rows) minus the RSS before the
measured steps (the batch's activations, loss and recompute, not the weights);
with CUDA, ``torch.cuda.max_memory_allocated`` minus the memory allocated before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _worker import rss_bytes, run_worker  # noqa: E402  (the benchmarks' shared helpers)

MIB = 1024**2
TINY = {
    "name": "tiny",
    "embed_dim": 128,
    "image_size": 64,
    "patch_size": 8,
    "vision_width": 96,
    "vision_depth": 4,
    "vision_heads": 4,
    "text_width": 96,
    "text_depth": 2,
    "text_heads": 4,
    "context_length": 32,
}


# ------------------------------------------------------------------ worker
def _reset_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as err:
        raise RuntimeError("cannot reset the RSS high-water mark (/proc/self/clear_refs)") from err


def measure(batch_size: int, accum_freq: int, steps: int, device: str) -> dict[str, Any]:
    """Median step time and peak extra memory of ``steps`` training steps."""
    import torch

    from vlexp.encoders import ENCODERS
    from vlexp.objectives import OBJECTIVES
    from vlexp.objectives.distributed import gather_features
    from vlexp.train.accumulation import encode_accumulated

    torch.manual_seed(0)
    dev = torch.device(device)
    model = ENCODERS.build(dict(TINY)).to(dev).train()
    objective = OBJECTIVES.build({"name": "clip"})

    def make_batch(n: int) -> dict[str, torch.Tensor]:
        return {
            "image": torch.randn(n, 3, 64, 64, device=dev),
            "input_ids": torch.randint(1, 1000, (n, 32), device=dev),
            "attention_mask": torch.ones(n, 32, dtype=torch.long, device=dev),
        }

    def step(batch: dict[str, torch.Tensor]) -> float:
        model.zero_grad(set_to_none=False)  # gradient buffers stay allocated
        image, text = encode_accumulated(model, batch, accum_freq)
        loss = objective(gather_features(image, text), model.logit_scale(), batch, 0.0).loss
        loss.backward()
        return float(loss)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # warm-up on a few rows (kernels, lazy imports, gradient buffers): the measured peak
    # is then the batch's own, not memory the allocator kept from an earlier full step
    step(make_batch(min(batch_size, 2 * accum_freq)))
    batch = make_batch(batch_size)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes("VmRSS")
        _reset_hwm()
    times, loss = [], 0.0
    for _ in range(steps):
        start = time.perf_counter()
        loss = step(batch)
        sync()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = rss_bytes("VmHWM") - before
    return {
        "batch": batch_size,
        "accum_freq": accum_freq,
        "step_s": statistics.median(times),
        "peak_bytes": int(peak),
        "loss": loss,
    }


def _run_worker(args: argparse.Namespace, accum_freq: int) -> dict[str, Any]:
    return run_worker(
        __file__,
        ["--worker", str(accum_freq), "--batch", str(args.batch), "--steps", str(args.steps),
         "--device", args.device],
    )  # fmt: skip


# ------------------------------------------------------------------ report
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256, help="batch size per step (one rank)")
    ap.add_argument("--accum", default="1,4,16", help="comma-separated accum_freq values")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per worker")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of all settings")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(measure(args.batch, args.worker, args.steps, args.device)))
        return 0

    ks = [int(k) for k in args.accum.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in ks}
    for _ in range(args.rounds):
        for k in ks:
            runs[k].append(_run_worker(args, k))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"training step (tiny encoder, 64 px, objective=clip), batch {args.batch}, "
        f"device={args.device}, {args.rounds} rounds x {args.steps} steps, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'accum_freq':>10} {'step s':>8} {'x full':>7} {'peak MiB':>9} {'x full':>7}")
    rows = []
    for k in ks:
        rows.append(
            {
                "accum_freq": k,
                "step_s": statistics.median(r["step_s"] for r in runs[k]),
                "peak_mib": statistics.median(r["peak_bytes"] for r in runs[k]) / MIB,
                "loss": runs[k][0]["loss"],
            }
        )
    base = rows[0]
    for r in rows:
        print(
            f"{r['accum_freq']:>10} {r['step_s']:>8.3f} {r['step_s'] / base['step_s']:>7.2f} "
            f"{r['peak_mib']:>9.0f} {r['peak_mib'] / base['peak_mib']:>7.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "load": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
