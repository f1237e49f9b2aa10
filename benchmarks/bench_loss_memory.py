"""Peak memory of the contrastive loss per rank: local loss vs the naive full matrix.

    .venv/bin/python benchmarks/bench_loss_memory.py [--global-batch 32768] [--world 8]
        [--measure-batch 8192] [--dim 512] [--json out.json]

vlexp's objectives compute, on every rank, the rank's ``B_local`` rows against all
``B_global`` gathered columns (``objective=clip`` here, forward + backward). The naive
layout gathers the features and has every rank build the full ``B_global x B_global``
matrix. Both are run by the real ``ClipObjective`` on one process: a rank is simulated
by giving it its local rows plus the gathered features (all requiring gradients, as
the all-gather with gradients makes them), so no process group is needed.

Analytic model (float32, ``M = rows x B_global x 4`` bytes per logits-sized matrix).
``logit_scale * image @ text_all.T`` scales the small ``rows x dim`` features first, so
each direction allocates one logits matrix (the matmul output, which matmul's backward
does not keep) and one log-softmax output (kept by autograd). Forward peak: the two
logits matrices (alive until the loss returns) and the two log-softmax outputs = 4 M.
Backward, per direction: the saved log-softmax outputs still alive, the incoming
gradient of the log-softmax and its result = 4 M again. Peak = 4 M; the naive/local
ratio is ``world`` whatever the constant.

Measured: each configuration runs in a fresh subprocess (``--worker``); the peak RSS
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS just
before the loss is the loss's peak. With CUDA (``--device cuda``)
``torch.cuda.max_memory_allocated`` is used instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _worker import rss_bytes, run_worker  # noqa: E402  (the benchmarks' shared helpers)

MIB = 1024**2
MATRICES_AT_PEAK = 4  # see the module docstring


def analytic_bytes(rows: int, cols: int, matrices: int = MATRICES_AT_PEAK) -> int:
    """Peak bytes of one rank's loss: ``matrices`` float32 ``rows x cols`` buffers.

    The feature gradients (``2 x (rows + cols) x dim`` floats) are allocated in the last
    matmul backward, when at most two logits-sized buffers are left, so they do not
    raise the peak while ``(rows + cols) x dim < rows x cols``.
    """
    return 4 * matrices * rows * cols


# ------------------------------------------------------------------ worker
def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(layout: str, global_batch: int, world: int, dim: int, device: str) -> dict[str, Any]:
    """Peak extra memory of one forward + backward of the CLIP loss for one rank."""
    import torch

    from vlexp.objectives.clip import ClipObjective
    from vlexp.objectives.distributed import GatheredFeatures

    torch.manual_seed(0)
    rows = global_batch // world if layout == "local" else global_batch
    dev = torch.device(device)
    objective = ClipObjective()

    def features(n_rows: int, n_cols: int) -> tuple[GatheredFeatures, list[torch.Tensor]]:
        leaves = [
            torch.nn.functional.normalize(torch.randn(n, dim, device=dev), dim=-1).requires_grad_()
            for n in (n_rows, n_rows, n_cols, n_cols)
        ]
        return GatheredFeatures(*leaves, offset=0, world_size=world), leaves

    scale = torch.tensor(14.3, device=dev, requires_grad=True)
    # warm-up on a small problem: kernels, allocator pools, lazy imports
    f, _ = features(64, 256)
    objective(f, scale, {}, 0.0).loss.backward()
    f, leaves = features(rows, global_batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes("VmRSS")
        if not _reset_hwm():
            raise RuntimeError("cannot reset the RSS high-water mark (/proc/self/clear_refs)")
    loss = objective(f, scale, {}, 0.0).loss
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = rss_bytes("VmHWM") - before
    assert all(t.grad is not None for t in leaves)
    return {"layout": layout, "rows": rows, "cols": global_batch, "peak_bytes": int(peak)}


def _run_worker(args: argparse.Namespace, layout: str, global_batch: int) -> dict[str, Any]:
    return run_worker(
        __file__,
        ["--worker", layout, "--measure-batch", str(global_batch), "--world", str(args.world),
         "--dim", str(args.dim), "--device", args.device],
    )  # fmt: skip


# ------------------------------------------------------------------ report
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--global-batch", type=int, default=32768, help="analytic global batch")
    ap.add_argument("--world", type=int, default=8, help="simulated number of ranks")
    ap.add_argument("--measure-batch", type=int, default=8192, help="measured global batch")
    ap.add_argument(
        "--measure-local-at-global",
        action="store_true",
        help="also measure the local layout at --global-batch (needs ~4 GiB)",
    )
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--worker", choices=["local", "naive"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(
            json.dumps(measure(args.worker, args.measure_batch, args.world, args.dim, args.device))
        )
        return 0

    w, d = args.world, args.dim
    rows_out: list[dict[str, Any]] = []
    for gb in sorted({args.global_batch, args.measure_batch}):
        for layout, rows in (("local", gb // w), ("naive", gb)):
            rows_out.append(
                {
                    "global_batch": gb,
                    "layout": layout,
                    "rows": rows,
                    "cols": gb,
                    "analytic_mib": analytic_bytes(rows, gb) / MIB,
                    "measured_mib": None,
                }
            )
    targets = [(args.measure_batch, "local"), (args.measure_batch, "naive")]
    if args.measure_local_at_global and args.global_batch != args.measure_batch:
        targets.append((args.global_batch, "local"))
    for gb, layout in targets:
        res = _run_worker(args, layout, gb)
        for r in rows_out:
            if r["global_batch"] == gb and r["layout"] == layout:
                r["measured_mib"] = res["peak_bytes"] / MIB

    print(
        f"contrastive loss (objective=clip) peak memory per rank, world={w}, dim={d}, "
        f"float32, forward+backward, device={args.device}"
    )
    print(
        f"{'global B':>9} {'layout':>6} {'logits':>15} {'analytic MiB':>13} "
        f"{'measured MiB':>13} {'measured/analytic':>18}"
    )
    for r in rows_out:
        meas = r["measured_mib"]
        meas_txt = "" if meas is None else f"{meas:.0f}"
        ratio_txt = "" if meas is None else f"{meas / r['analytic_mib']:.2f}"
        print(
            f"{r['global_batch']:>9} {r['layout']:>6} {r['rows']:>6} x {r['cols']:<6} "
            f"{r['analytic_mib']:>13.0f} {meas_txt:>13} {ratio_txt:>18}"
        )
    for gb in sorted({args.global_batch, args.measure_batch}):
        loc = next(r for r in rows_out if r["global_batch"] == gb and r["layout"] == "local")
        nai = next(r for r in rows_out if r["global_batch"] == gb and r["layout"] == "naive")
        line = f"B={gb}: naive/local analytic {nai['analytic_mib'] / loc['analytic_mib']:.2f}x"
        if loc["measured_mib"] and nai["measured_mib"]:
            line += f", measured {nai['measured_mib'] / loc['measured_mib']:.2f}x"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows_out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
