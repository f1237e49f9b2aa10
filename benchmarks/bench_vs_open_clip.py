"""Training throughput of vlexp vs open_clip_train: same model, batch, precision, data.

    .venv/bin/python benchmarks/bench_vs_open_clip.py [--steps 16] [--batch-size 64]
        [--workers 1] [--threads 1] [--repeats 5] [--device cpu|cuda] [--json out.json]

* Model: one open_clip model-config dict (``tiny_open_clip_config``: ViT 64 px / patch 8,
  width 96, 4 layers; causal text transformer width 96, 2 layers; embed 128). open_clip
  builds its ``CLIP`` from it (registered with ``open_clip.add_model_config``); vlexp
  builds ``encoder=open_clip`` from the same dict (same layers and parameter count).
* Data: the synthetic training pairs exported once with ``vlexp.data.export.export_csv``
  (JPEG files + ``pairs.csv``); open_clip reads it with ``--dataset-type csv
  --csv-img-key filepath --csv-caption-key caption``, vlexp with ``CsvPairs`` (the
  benchmark registers a ``bench_csv`` source wrapping it).
* Training: AdamW, gradient clipping at norm 1.0, symmetric InfoNCE with a learnable
  temperature, ``--workers`` loader processes each, fp32 on CPU (bf16 autocast on CUDA:
  ``amp_bf16`` vs ``bf16-mixed``), one process each, ``--threads`` intra-op threads each
  (default 1: on a shared machine several OpenMP threads per process turn other
  processes' load into barrier waits and step times swing by 2x; ``--threads 0`` keeps
  torch's default).
* open_clip runs its real CLI entry point in-process: ``open_clip_train.main.main(argv)``
  (offline: no pretrained weights, no reporting). vlexp runs ``VLModule`` /
  ``VLDataModule`` under the trainer ``vlexp.run.build_trainer`` makes (CSV logger,
  checkpointing, progress bar).

Each measurement runs in a fresh subprocess; vlexp and open_clip alternate for
``--repeats`` rounds (the order flips every round). A step's time is the interval
between consecutive step ends (data wait included), as open_clip's own ``Batch (t)``
meter measures it; the first ``--skip`` steps (loader start-up, allocator warm-up) are
dropped. On a shared machine load spikes hit single steps, so a measurement's
samples/s is ``batch / median step time`` (the mean-based figure is reported too). The
printed ratio is the median over rounds of vlexp / open_clip within the round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ data
def export_data(out_dir: Path, num_pairs: int, seed: int = 0) -> Path:
    """Synthetic training pairs as JPEG files + CSV; returns the CSV (absolute paths)."""
    import pandas as pd

    from vlexp.data.export import export_csv
    from vlexp.data.sources import DATASETS

    splits = DATASETS.build(
        {
            "name": "synthetic",
            "num_train": num_pairs,
            "num_val": 8,
            "num_test": 8,
            "num_test_compositional": 4,
        },
        seed=seed,
    )
    table = export_csv(splits.train, out_dir / "export")
    df = pd.read_csv(table)
    df["filepath"] = [str((table.parent / p).resolve()) for p in df["filepath"]]
    csv = out_dir / "pairs_abs.csv"
    df[["filepath", "caption"]].to_csv(csv, index=False)
    return csv


# ------------------------------------------------------------------ workers
def run_open_clip(args: argparse.Namespace, csv: Path, work: Path) -> dict[str, Any]:
    """open_clip_train on the CSV; per-step times parsed from its own log."""
    import open_clip
    from open_clip_train.main import main as oc_main

    from vlexp.encoders.open_clip_tower import tiny_open_clip_config

    cfg_dir = work / "open_clip_cfg"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "vlexp-bench.json").write_text(json.dumps(tiny_open_clip_config()))
    open_clip.add_model_config(str(cfg_dir))
    name = f"bench-{os.getpid()}"
    oc_main([
        "--train-data", str(csv), "--dataset-type", "csv", "--csv-img-key", "filepath",
        "--csv-caption-key", "caption", "--csv-separator", ",",
        "--model", "vlexp-bench", "--batch-size", str(args.batch_size), "--epochs", "1",
        "--workers", str(args.workers), "--device", args.device,
        "--precision", "amp_bf16" if args.device == "cuda" else "fp32",
        "--lr", "1e-3", "--wd", "0.1", "--warmup", "10", "--grad-clip-norm", "1.0",
        "--logs", str(work / "open_clip_logs"), "--name", name, "--log-every-n-steps", "1",
        "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0",
        "--report-to", "", "--seed", "0",
    ])  # fmt: skip
    log = (work / "open_clip_logs" / name / "out.log").read_text()
    rates = [float(m) for m in re.findall(r"Batch \(t\): [0-9.]+, ([0-9.eE+-]+)/s,", log)]
    if len(rates) < args.steps:
        raise RuntimeError(f"open_clip logged {len(rates)} steps, expected {args.steps}")
    step_times = [args.batch_size / r for r in rates[: args.steps]]
    return {"step_times": step_times}


def run_vlexp(args: argparse.Namespace, csv: Path, work: Path) -> dict[str, Any]:
    """vlexp's module/datamodule/trainer with encoder=open_clip on the CSV."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from vlexp.data.csv_source import CsvPairs
    from vlexp.data.sources import DATASETS, DataSplits
    from vlexp.encoders.open_clip_tower import tiny_open_clip_config
    from vlexp.run import build_components, build_trainer

    if "bench_csv" not in DATASETS.names():

        @DATASETS.register("bench_csv")
        def _bench_csv(path: str) -> DataSplits:
            return DataSplits(train=CsvPairs(path))

    overrides = [
        "encoder=open_clip",
        "logger=csv",
        "viz.enabled=false",
        "test_after_fit=false",
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.max_steps={args.steps}",
        "trainer.limit_val_batches=0",
        "trainer.val_check_interval=null",
        "trainer.gradient_clip_val=1.0",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "optim.lr=1e-3",
        "optim.weight_decay=0.1",
        "optim.warmup_steps=10",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.encoder.model_cfg = tiny_open_clip_config()
        cfg.data.source = {"name": "bench_csv", "path": str(csv)}
        cfg.paths.output_dir = str(work / "vlexp_run")
    torch.set_float32_matmul_precision("high")
    L.seed_everything(0)
    module, datamodule = build_components(cfg)
    trainer = build_trainer(cfg, Path(cfg.paths.output_dir))
    ends: list[float] = []

    class StepTimer(L.Callback):
        """Wall time at the start of training and at the end of every step."""

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            ends.append(time.perf_counter())

        def on_train_batch_end(self, *_: Any) -> None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    trainer.callbacks.append(StepTimer())
    trainer.fit(module, datamodule=datamodule)
    return {"step_times": [b - a for a, b in zip(ends[:-1], ends[1:])]}


# ------------------------------------------------------------------ driver
def _measure(side: str, args: argparse.Namespace, csv: Path, work: Path) -> dict[str, float]:
    """samples/s of one side (median- and mean-step based), in a fresh subprocess."""
    out = work / f"{side}-{time.time_ns()}.json"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--csv",
        str(csv),
        "--work",
        str(work),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--device",
        args.device,
        "--worker-out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    times = json.loads(out.read_text())["step_times"]
    if len(times) < args.steps:
        raise RuntimeError(f"{side}: {len(times)} step times, expected {args.steps}")
    kept = times[args.skip : args.steps]
    return {
        "median": args.batch_size / statistics.median(kept),
        "mean": args.batch_size * len(kept) / sum(kept),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=16, help="training steps per measurement")
    ap.add_argument("--skip", type=int, default=4, help="first steps not timed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="data loader processes per side")
    ap.add_argument(
        "--threads", type=int, default=1, help="intra-op threads per process (0: torch's default)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--worker", choices=["vlexp", "open_clip"], help=argparse.SUPPRESS)
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.skip >= args.steps:
        ap.error("--skip must be smaller than --steps")

    if args.worker:
        run = run_vlexp if args.worker == "vlexp" else run_open_clip
        args.worker_out.write_text(json.dumps(run(args, args.csv, args.work)))
        return 0

    with tempfile.TemporaryDirectory(prefix="vlexp-bench-oc-") as tmp:
        work = Path(tmp)
        csv = export_data(work, args.steps * args.batch_size)
        rates: dict[str, list[dict[str, float]]] = {"vlexp": [], "open_clip": []}
        ratios: list[float] = []
        for r in range(args.repeats):
            order = ("vlexp", "open_clip") if r % 2 == 0 else ("open_clip", "vlexp")
            for side in order:
                rates[side].append(_measure(side, args, csv, work))
            ratios.append(rates["vlexp"][-1]["median"] / rates["open_clip"][-1]["median"])
            print(
                f"round {r + 1}: vlexp {rates['vlexp'][-1]['median']:7.1f}, open_clip "
                f"{rates['open_clip'][-1]['median']:7.1f} samples/s (median step); "
                f"ratio {ratios[-1]:.2f}",
                flush=True,
            )
    med = {k: statistics.median(x["median"] for x in v) for k, v in rates.items()}
    mean = {k: statistics.median(x["mean"] for x in v) for k, v in rates.items()}
    ratio = statistics.median(ratios)
    print(
        f"vlexp {med['vlexp']:.1f} samples/s, open_clip_train {med['open_clip']:.1f} samples/s "
        f"(batch {args.batch_size}, {args.steps - args.skip} timed steps x {args.repeats} "
        f"rounds, {args.workers} loader worker(s), device {args.device}, "
        f"{args.threads or _threads()} thread(s)); "
        f"mean-step based: {mean['vlexp']:.1f} vs {mean['open_clip']:.1f}"
    )
    print(
        f"ratio vlexp/open_clip = {ratio:.2f} (median over rounds; per round: "
        f"{', '.join(f'{x:.2f}' for x in ratios)})"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rates": rates,
                    "ratios": ratios,
                    "ratio": ratio,
                    "median_samples_per_s": med,
                    "mean_samples_per_s": mean,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                indent=2,
            )
        )
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
