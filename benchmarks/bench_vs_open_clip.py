"""Training throughput of vlexp vs open_clip_train: same model, batch, precision, data.

    .venv/bin/python benchmarks/bench_vs_open_clip.py [--steps 16] [--batch-size 64]
        [--workers 1] [--threads 1] [--repeats 5] [--device cpu|cuda] [--json out.json]

* Model: one open_clip model-config dict (``tiny_open_clip_config``: ViT 64 px / patch 8,
  width 96, 4 layers; causal text transformer width 96, 2 layers; embed 128). open_clip
  builds its ``CLIP`` from it (registered with ``open_clip.add_model_config``); vlexp
  builds ``encoder=open_clip`` from the same dict (same layers and parameter count).
* Data: the synthetic training pairs exported once with ``vlexp.data.shards.export.export_csv``
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
  ``VLDataModule`` under the trainer ``vlexp.train.run.build_trainer`` makes (CSV logger,
  checkpointing, progress bar).

Each measurement runs in a fresh subprocess; vlexp and open_clip alternate for
``--repeats`` rounds (the order flips every round). Both sides are timed at the same
point: a global ``torch.optim`` step post-hook records the wall clock and the process's
CPU time after every optimizer step, so a step is everything between two optimizer
steps (data wait, forward, backward, clipping, logging). The first ``--skip`` steps
(loader start-up, allocator warm-up) are dropped. Two figures per side:

* wall samples/s = ``batch / median wall step time`` (medians: load spikes on a shared
  machine hit single steps);
* CPU samples/s = ``batch / median CPU seconds of the training process per step``: the
  training loop's own cost (model, loss, optimizer, framework), which other processes'
  load barely changes; loader processes are not counted (vlexp's CSV path decodes a
  batch faster than open_clip's, so this does not favour vlexp).

The printed ratios are the medians over rounds of vlexp / open_clip within a round.
"""

from __future__ import annotations

import argparse
import json
import os
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

    from vlexp.data.shards.export import export_csv
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
def record_optimizer_steps() -> list[tuple[float, float]]:
    """(wall, CPU) time after every optimizer step of any torch optimizer in this process."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    marks: list[tuple[float, float]] = []

    def hook(*_: Any) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        marks.append((time.perf_counter(), time.process_time()))

    register_optimizer_step_post_hook(hook)
    return marks


def _intervals(marks: list[tuple[float, float]]) -> dict[str, list[float]]:
    return {
        "wall": [b[0] - a[0] for a, b in zip(marks[:-1], marks[1:])],
        "cpu": [b[1] - a[1] for a, b in zip(marks[:-1], marks[1:])],
    }


def run_open_clip(args: argparse.Namespace, csv: Path, work: Path) -> dict[str, Any]:
    """open_clip_train's CLI entry point on the CSV (in this process)."""
    import open_clip
    from open_clip_train.main import main as oc_main

    from vlexp.encoders.open_clip_tower import tiny_open_clip_config

    cfg_dir = work / "open_clip_cfg"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "vlexp-bench.json").write_text(json.dumps(tiny_open_clip_config()))
    open_clip.add_model_config(str(cfg_dir))
    marks = record_optimizer_steps()
    oc_main([
        "--train-data", str(csv), "--dataset-type", "csv", "--csv-img-key", "filepath",
        "--csv-caption-key", "caption", "--csv-separator", ",",
        "--model", "vlexp-bench", "--batch-size", str(args.batch_size), "--epochs", "1",
        "--workers", str(args.workers), "--device", args.device,
        "--precision", "amp_bf16" if args.device == "cuda" else "fp32",
        "--lr", "1e-3", "--wd", "0.1", "--warmup", "10", "--grad-clip-norm", "1.0",
        "--logs", str(work / "open_clip_logs"), "--name", f"bench-{os.getpid()}",
        "--log-every-n-steps", "1", "--save-frequency", "0", "--zeroshot-frequency", "0",
        "--val-frequency", "0", "--report-to", "", "--seed", "0",
    ])  # fmt: skip
    return _intervals(marks)


def run_vlexp(args: argparse.Namespace, csv: Path, work: Path) -> dict[str, Any]:
    """vlexp's module/datamodule/trainer with encoder=open_clip on the CSV."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from vlexp.data.readers.csv_reader import CsvPairs
    from vlexp.data.sources import DATASETS, DataSplits
    from vlexp.encoders.open_clip_tower import tiny_open_clip_config
    from vlexp.train.run import build_components, build_trainer

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
        cfg.encoder.image_size = int(cfg.data.source.image_size)  # before the source is replaced
        cfg.data.source = {"name": "bench_csv", "path": str(csv)}
        cfg.paths.output_dir = str(work / "vlexp_run")
    torch.set_float32_matmul_precision("high")
    L.seed_everything(0)
    module, datamodule = build_components(cfg)
    trainer = build_trainer(cfg, Path(cfg.paths.output_dir))
    marks = record_optimizer_steps()
    trainer.fit(module, datamodule=datamodule)
    return _intervals(marks)


# ------------------------------------------------------------------ driver
def _measure(side: str, args: argparse.Namespace, csv: Path, work: Path) -> dict[str, float]:
    """Wall and CPU samples/s of one side, measured in a fresh subprocess."""
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
    env = dict(os.environ)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    steps = json.loads(out.read_text())
    if len(steps["wall"]) != args.steps - 1:  # intervals between consecutive step ends
        raise RuntimeError(
            f"{side}: {len(steps['wall']) + 1} optimizer steps, expected {args.steps}"
        )
    first = max(0, args.skip - 1)
    return {k: args.batch_size / statistics.median(v[first:]) for k, v in steps.items()}


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
        ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
        for r in range(args.repeats):
            order = ("vlexp", "open_clip") if r % 2 == 0 else ("open_clip", "vlexp")
            for side in order:
                rates[side].append(_measure(side, args, csv, work))
            v, o = rates["vlexp"][-1], rates["open_clip"][-1]
            for k in ratios:
                ratios[k].append(v[k] / o[k])
            print(
                f"round {r + 1}: wall {v['wall']:6.1f} vs {o['wall']:6.1f} samples/s "
                f"(ratio {ratios['wall'][-1]:.2f}); CPU {v['cpu']:6.1f} vs {o['cpu']:6.1f} "
                f"(ratio {ratios['cpu'][-1]:.2f})",
                flush=True,
            )
    med = {
        side: {k: statistics.median(x[k] for x in v) for k in ("wall", "cpu")}
        for side, v in rates.items()
    }
    ratio = {k: statistics.median(v) for k, v in ratios.items()}
    print(
        f"setup: batch {args.batch_size}, {args.steps - args.skip} timed steps x "
        f"{args.repeats} rounds, {args.workers} loader worker(s), device {args.device}, "
        f"{args.threads or _threads()} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    for k, name in (("wall", "wall-clock"), ("cpu", "CPU-time")):
        print(
            f"{name:>10}: vlexp {med['vlexp'][k]:7.1f} samples/s, open_clip_train "
            f"{med['open_clip'][k]:7.1f} samples/s, ratio vlexp/open_clip = {ratio[k]:.2f} "
            f"(rounds: {', '.join(f'{x:.2f}' for x in ratios[k])})"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rates": rates,
                    "ratios": ratios,
                    "ratio": ratio,
                    "median_samples_per_s": med,
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
