"""One-shot GPU check: throughput, compile, loss memory, DDP, every precision, teacher.

    .venv/bin/python benchmarks/gpu_check.py [--device cuda|cpu] [--quick]
        [--out outputs/gpu_check/<device>-<time>.md] [--budget 540] [--sections a,b]

Sections (each in a fresh subprocess, so one failure or OOM never loses the others;
a section that fails prints ``FAILED`` with its error and the check exits 1):

1. ``env``: torch / CUDA / device / git commit.
2. ``open_clip``: vlexp vs ``open_clip_train`` samples/s, same model, data and batch,
   bf16 autocast on CUDA (``benchmarks/bench_vs_open_clip.py``): ratio per round and
   the median.
3. ``compile``: vlexp training samples/s with ``model_opts.compile`` off and on.
4. ``loss_memory``: the largest global batch whose local loss (``objective=clip``, one
   rank of a simulated ``--world``) fits, by doubling then bisection, with its peak
   memory against the analytic ``4 x rows x cols x 4`` bytes.
5. ``ddp``: ``trainer=ddp`` with one device (NCCL on CUDA, gloo on CPU).
6. ``precisions``: a few steps of every precision with every objective at once
   (HN-NCE + concept heads + SoftAlign with an EMA teacher, TOnICS batches).
7. ``teacher``: the concept teacher's images/s (EfficientNet-Lite0, packaged weights).

The report is printed and written to ``--out`` (Markdown, plus ``.json`` alongside) so
results can be committed with the command that made them. ``--device cpu --quick``
runs every section small, in about two minutes (what the test suite does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SECTIONS = ("env", "open_clip", "compile", "loss_memory", "ddp", "precisions", "teacher")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
TITLES = {
    "env": "environment",
    "open_clip": "vlexp vs open_clip_train (samples/s, same model/data/batch)",
    "compile": "torch.compile off/on (vlexp training samples/s)",
    "loss_memory": "local loss: largest global batch that fits, peak memory",
    "ddp": "DDP on one device",
    "precisions": "every precision, every objective (a few steps each)",
    "teacher": "concept teacher throughput (images/s)",
}
# seconds each section may take at most (the overall --budget caps them further)
TIMEOUTS = {
    "env": 60,
    "open_clip": 240,
    "compile": 180,
    "loss_memory": 120,
    "ddp": 120,
    "precisions": 240,
    "teacher": 90,
}


# ------------------------------------------------------------------ sizes
def sizes(device: str, quick: bool) -> dict[str, Any]:
    """Batch sizes and step counts per section (``quick``: tiny, for CPU tests)."""
    if quick:
        return {
            "batch": 16,
            "steps": 4,
            "skip": 1,
            "rounds": 1,
            "workers": 0,
            "mem_start": 256,
            "mem_cap": 1024,
            "teacher_batch": 4,
            "teacher_batches": 2,
            "teacher_size": 64,
            "num_train": 128,
        }
    return {
        "batch": 256,
        "steps": 40,
        "skip": 10,
        "rounds": 3,
        "workers": min(8, os.cpu_count() or 1),
        "mem_start": 16384,
        "mem_cap": 1 << 20,
        "teacher_batch": 256,
        "teacher_batches": 20,
        "teacher_size": None,
        "num_train": 12288,
    }


# ------------------------------------------------------------------ training runs
def _compose(overrides: list[str], run_dir: Path) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def _base_overrides(
    args: argparse.Namespace, sz: dict[str, Any], work: Path, preset: str | None = None
) -> list[str]:
    """A throughput run: synthetic data, no validation, test or pictures."""
    preset = preset or ("gpu" if args.device == "cuda" else "cpu")
    return [
        f"trainer={preset}",
        f"trainer.max_steps={sz['steps']}",
        "trainer.limit_val_batches=0",
        "trainer.val_check_interval=null",
        "trainer.log_every_n_steps=1",
        "+trainer.enable_model_summary=false",
        "test_after_fit=false",
        "viz.enabled=false",
        "logger=csv",
        f"data.batch_size={sz['batch']}",
        f"data.num_workers={sz['workers']}",
        f"data.source.num_train={max(sz['num_train'], sz['batch'] * (sz['steps'] + 1))}",
        "data.source.num_val=16",
        "data.source.num_test=16",
        "data.source.num_test_compositional=8",
        "optim.warmup_steps=2",
        f"paths.cache_dir={work / 'cache'}",
    ]


_MARKS: list[tuple[float, float]] | None = None


def _step_marks() -> list[tuple[float, float]]:
    """(wall, CPU) time after every optimizer step; the hook is registered once."""
    global _MARKS
    if _MARKS is None:
        sys.path.insert(0, str(BENCH))
        from bench_vs_open_clip import record_optimizer_steps

        _MARKS = record_optimizer_steps()
    return _MARKS


def timed_run(overrides: list[str], run_dir: Path, skip: int, batch: int) -> dict[str, Any]:
    """Train with ``vlexp.train.run.train``; samples/s from the optimizer-step clock, last loss."""
    import torch

    from vlexp.train.run import train

    marks = _step_marks()
    marks.clear()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train(_compose(overrides, run_dir))
    total = time.perf_counter() - start
    walls = [b[0] - a[0] for a, b in zip(marks[:-1], marks[1:])][max(0, skip - 1) :]
    losses = _losses(run_dir)
    return {
        "steps": len(marks),
        "samples_per_s": batch / statistics.median(walls) if walls else float("nan"),
        "first_step_s": marks[0][0] - start if marks else float("nan"),
        "total_s": total,
        "last_loss": losses[-1] if losses else float("nan"),
        "finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
    }


def _losses(run_dir: Path) -> list[float]:
    import csv

    files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if not files:
        return []
    rows = list(csv.DictReader(open(files[-1])))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def _synthetic_teacher(work: Path) -> Path:
    """An untrained synthetic concept teacher file (the objective only needs its shape)."""
    import torch

    from vlexp.data.synthetic import LEAF_CLASSES
    from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher

    path = work / "synthetic_teacher.pt"
    if not path.exists():
        torch.manual_seed(0)
        save_synthetic_teacher(
            SmallCNN(len(LEAF_CLASSES), width=8), LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, path
        )
    return path


# ------------------------------------------------------------------ sections (workers)
def section_env(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import lightning
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
            nccl=".".join(map(str, torch.cuda.nccl.version())),
        )
    elif args.device == "cuda":
        raise RuntimeError("--device cuda but torch.cuda.is_available() is False (CPU build?)")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    info["commit"] = commit.stdout.strip() or "unknown"
    return info


def section_open_clip(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sz = sizes(args.device, args.quick)
    out = work / "open_clip.json"
    cmd = [
        sys.executable,
        str(BENCH / "bench_vs_open_clip.py"),
        "--device", args.device,
        "--batch-size", str(sz["batch"]),
        "--steps", str(max(sz["steps"], 5)),  # its workers parse --skip's default (4)
        "--skip", str(sz["skip"]),
        "--repeats", str(sz["rounds"]),
        "--workers", str(sz["workers"]),
        "--threads", "1" if args.quick else "0",
        "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    res = json.loads(out.read_text())
    med = res["median_samples_per_s"]
    return {
        "batch": sz["batch"],
        "precision": "bf16 autocast" if args.device == "cuda" else "fp32",
        "vlexp_samples_per_s": med["vlexp"]["wall"],
        "open_clip_samples_per_s": med["open_clip"]["wall"],
        "ratio_per_round": res["ratios"]["wall"],
        "ratio_median": res["ratio"]["wall"],
    }


def section_compile(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sz = sizes(args.device, args.quick)
    base = _base_overrides(args, sz, work)
    out: dict[str, Any] = {"batch": sz["batch"]}
    # quick CPU runs trace with dynamo but skip inductor's C++ code generation
    backend = "aot_eager" if args.quick else "inductor"
    out["backend"] = backend
    for mode in ("off", "on"):
        extra = ["model_opts.compile=true", f"model_opts.compile_backend={backend}"]
        extra = extra if mode == "on" else []
        out[mode] = timed_run(base + extra, work / f"compile-{mode}", sz["skip"], sz["batch"])
    out["speedup"] = out["on"]["samples_per_s"] / out["off"]["samples_per_s"]
    return out


def section_loss_memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Double the global batch until the local loss does not fit, then bisect."""
    import torch

    sys.path.insert(0, str(BENCH))
    from bench_loss_memory import analytic_bytes, measure

    sz = sizes(args.device, args.quick)
    world, dim = args.world, 512

    def fits(gb: int) -> dict[str, Any] | None:
        try:
            return measure("local", gb, world, dim, args.device)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    best, gb, fail = None, sz["mem_start"], None
    while gb <= sz["mem_cap"]:
        res = fits(gb)
        if res is None:
            fail = gb
            break
        best, gb = (gb, res), gb * 2
    if best is None:
        raise RuntimeError(f"even global batch {sz['mem_start']} does not fit")
    if fail is not None:  # bisect between the last fit and the first failure (to ~3%)
        lo, hi = best[0], fail
        while hi - lo > max(world, lo // 32):
            mid = (lo + hi) // 2 // world * world
            res = fits(mid)
            if res is None:
                hi = mid
            else:
                lo, best = mid, (mid, res)
    gb, res = best
    return {
        "world": world,
        "dim": dim,
        "global_batch": gb,
        "rows": res["rows"],
        "cols": res["cols"],
        "peak_gib": res["peak_bytes"] / 2**30,
        "analytic_gib": analytic_bytes(res["rows"], res["cols"]) / 2**30,
        "limited_by": "out of memory above" if fail is not None else "the search cap",
    }


def section_ddp(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import lightning as L
    import torch.distributed as dist

    import vlexp.train.run as run_mod

    sz = sizes(args.device, args.quick)
    seen: dict[str, Any] = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.update(backend=dist.get_backend(), world_size=dist.get_world_size())

    build = run_mod.build_trainer

    def with_probe(cfg: Any, run_dir: Path) -> L.Trainer:
        trainer = build(cfg, run_dir)
        trainer.callbacks.append(Probe())
        return trainer

    run_mod.build_trainer = with_probe
    overrides = _base_overrides(args, sz, work, preset="ddp") + ["trainer.devices=1"]
    if args.device != "cuda":
        overrides.append("trainer.accelerator=cpu")
    res = timed_run(overrides, work / "ddp", sz["skip"], sz["batch"])
    if not seen:
        raise RuntimeError("no process group was set up")
    return {**seen, **res}


def section_precisions(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sz = dict(sizes(args.device, args.quick))
    sz["steps"], sz["skip"] = (3, 1) if args.quick else (12, 4)
    teacher = _synthetic_teacher(work)
    every = [
        "objective=diht_synthetic",
        f"objective.terms.concepts.teacher.weights={teacher}",
        "objective.terms.concepts.progress=false",
        "+objective.terms.soft={name: softalign, weight: 0.5, teacher: ema}",
        "sampler=tonics",
    ]
    out: dict[str, Any] = {"batch": sz["batch"], "objective": "hnnce+concepts+softalign(ema)"}
    for precision in PRECISIONS:
        run = work / f"precision-{precision}"
        try:
            res = timed_run(
                _base_overrides(args, sz, work) + every + [f"trainer.precision={precision}"],
                run,
                sz["skip"],
                sz["batch"],
            )
            res["status"] = "ok" if res["finite"] else "non-finite loss"
        except Exception as exc:  # one precision failing must not hide the others
            res = {"status": f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        out[precision] = res
    return out


def section_teacher(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Forward images/s of the packaged teacher on ready tensors, float32 and bf16 autocast."""
    import torch

    from vlexp.objectives.concepts.teachers import build_teacher

    sz = sizes(args.device, args.quick)
    teacher = build_teacher(input_size=sz["teacher_size"]).to(args.device)
    s = teacher.input_size
    x = torch.randn(sz["teacher_batch"], 3, s, s, device=args.device)
    out: dict[str, Any] = {"teacher": "efficientnet_lite0", "input_size": s}
    for name, bf16 in (("fp32", False), ("bf16_autocast", True)):
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
            teacher.logits(x)  # warm-up
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(sz["teacher_batches"]):
                teacher.logits(x)
            _sync(args.device)
        out[f"{name}_images_per_s"] = (
            sz["teacher_batch"] * sz["teacher_batches"] / (time.perf_counter() - start)
        )
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


WORKERS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "env": section_env,
    "open_clip": section_open_clip,
    "compile": section_compile,
    "loss_memory": section_loss_memory,
    "ddp": section_ddp,
    "precisions": section_precisions,
    "teacher": section_teacher,
}


# ------------------------------------------------------------------ report
def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    if isinstance(x, list):
        return ", ".join(_fmt(v) for v in x)
    return str(x)


def render(name: str, res: dict[str, Any]) -> list[str]:
    """Markdown lines of one section's result."""
    if "error" in res:
        return [f"FAILED after {res['seconds']:.0f} s: {res['error']}"]
    body = {k: v for k, v in res.items() if k != "seconds"}
    lines: list[str] = []
    if name == "precisions":
        lines += [
            "| precision | status | samples/s | last loss | peak GiB |",
            "|---|---|---|---|---|",
        ]
        for p in PRECISIONS:
            r = body.get(p, {})
            lines.append(
                f"| {p} | {r.get('status', 'missing')} | {_fmt(r.get('samples_per_s', ''))} "
                f"| {_fmt(r.get('last_loss', ''))} | {_fmt(r.get('peak_mem_gib', ''))} |"
            )
        body = {k: v for k, v in body.items() if k not in PRECISIONS}
    if name == "compile":
        for mode in ("off", "on"):
            r = body.pop(mode)
            lines.append(
                f"- compile {mode}: {_fmt(r['samples_per_s'])} samples/s, first step "
                f"{_fmt(r['first_step_s'])} s, last loss {_fmt(r['last_loss'])}"
            )
    lines += [f"- {k}: {_fmt(v)}" for k, v in body.items()]
    lines.append(f"- section time: {res['seconds']:.0f} s")
    return lines


def run_section(name: str, args: argparse.Namespace, work: Path, timeout: float) -> dict[str, Any]:
    """Run one section in a fresh subprocess; its result, or ``{"error": ...}``."""
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--worker", name, "--device", args.device]
    cmd += ["--work", str(work), "--world", str(args.world), "--worker-out", str(out)]
    cmd += ["--quick"] if args.quick else []
    env = dict(os.environ)
    if args.quick:  # one intra-op thread: small ops, and no barrier waits on a busy machine
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
        err = None if proc.returncode == 0 else (proc.stderr or proc.stdout)[-1500:].strip()
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    if err is None and out.exists():
        return {**json.loads(out.read_text()), "seconds": seconds}
    lines = (err or "no result written").splitlines()
    return {"error": lines[-1] if lines else "unknown", "detail": err, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU tests, ~2 minutes)")
    ap.add_argument("--out", type=Path, help="report file (.md; a .json is written alongside)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all sections")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    ap.add_argument("--world", type=int, default=8, help="simulated ranks for loss_memory")
    ap.add_argument("--worker", choices=SECTIONS, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        import torch

        torch.set_float32_matmul_precision("high")
        args.worker_out.write_text(json.dumps(WORKERS[args.worker](args, args.work)))
        return 0

    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "outputs" / "gpu_check" / f"{args.device}-{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "benchmarks/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# vlexp GPU check ({args.device}{', quick' if args.quick else ''})", ""]
    lines += [f"Command: `{command.strip()}`  ", f"Started: {stamp}", ""]
    print("\n".join(lines), flush=True)
    results: dict[str, Any] = {}
    deadline = time.perf_counter() + args.budget
    with tempfile.TemporaryDirectory(prefix="vlexp-gpu-check-") as tmp:
        for i, name in enumerate(chosen, 1):
            left = deadline - time.perf_counter()
            if left < 5:
                res = {"error": "skipped: --budget spent", "seconds": 0.0}
            else:
                (Path(tmp) / name).mkdir()
                res = run_section(name, args, Path(tmp) / name, min(TIMEOUTS[name], left))
            results[name] = res
            block = [f"## {i}. {name}: {TITLES[name]}", "", *render(name, res), ""]
            print("\n".join(block), flush=True)
            lines += block
    failed = [n for n, r in results.items() if "error" in r]
    failed += [
        f"precisions/{p}"
        for p in PRECISIONS
        if "precisions" in results
        and "error" not in results["precisions"]
        and results["precisions"].get(p, {}).get("status") != "ok"
    ]
    summary = f"Result: {'all sections ok' if not failed else 'FAILED: ' + ', '.join(failed)}"
    lines.append(summary)
    print(summary)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
