"""Training-step time of objective=diht / hnnce relative to objective=clip (same model, batch),
and the concept teacher's throughput against plain timm eval.

    .venv/bin/python benchmarks/bench_diht_step.py [--batch-size 128] [--rounds 40]
        [--steps 1] [--threads 0] [--clock wall|cpu] [--teacher-batch 32] [--teacher-rounds 4] [--json out.json]

One step = encode images and texts with the tiny two-tower model, gather, objective,
backward, AdamW step (what ``VLModule.training_step`` plus the optimiser do). Each
objective trains its own copy of the same initial model. The objectives run
interleaved: every round times ``--steps`` steps (default 1) of each, in a rotating
order, so load drifts on a shared machine hit all of them alike. Per round the time of
each objective is divided by clip's; the reported ratio is the median over rounds (the
ratio of the fastest rounds, ``ratio_min``, is reported too).

``diht`` is HN-NCE + concept distillation with *cached* targets: the teacher logits
(1000 ImageNet concepts, float16) of all rows are in the on-disk lazy cache and marked
done, so each step checks its rows' done flags and reads them from the memory map
exactly as a training step over cached targets does (an epoch after the first, or any
epoch of a later run). ``hnnce`` is diht without concept distillation
(``objective.terms.concepts.weight=0``); ``diht / hnnce`` is the cost of the concept term.

Teacher throughput (``--teacher-rounds 0`` skips it): EfficientNet-Lite0 (packaged
weights, 224 px) through ``ImageTeacher.logits`` (inference mode, channels-last on CPU,
bfloat16 autocast on CUDA) against the same model in plain timm eval (float32, default
layout, ``torch.no_grad``), interleaved rounds on the same batches; images/s of each
(median over rounds) and the median per-round speed ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.encoders import ENCODERS
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.concepts.targets import open_targets
from vlexp.objectives.distributed import gather_features

NUM_TRAIN = 20_000
WORDS = [
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "triangle",
    "left",
    "of",
    "above",
    "small",
    "large",
    "a",
    "the",
    "chasing",
    "next",
    "to",
]


def _batch(model: Any, batch_size: int, image_size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    caps = [
        " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (8,), generator=g))
        for _ in range(batch_size)
    ]
    tok = model.tokenize(caps)
    return {
        "image": torch.randn(batch_size, 3, image_size, image_size, generator=g),
        **tok,
        "index": torch.randint(NUM_TRAIN, (batch_size,), generator=g),
    }


class _Captions:
    """A stand-in training set for the cache key (captions and a few tiny images)."""

    def __init__(self, n: int) -> None:
        self.captions = [f"pair {i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": np.zeros((4, 4, 3), np.uint8), "caption": self.captions[i]}


def _objectives(embed_dim: int, cache: Path) -> dict[str, Any]:
    diht_cfg = {
        "name": "composite",
        "terms": {
            "contrastive": {"name": "hnnce", "alpha": 1.0, "beta1": 0.5},
            "concepts": {"name": "concepts", "progress": False},
        },
    }
    objs = {
        "clip": OBJECTIVES.build("clip"),
        "hnnce": OBJECTIVES.build(
            {"name": "composite", "terms": {"contrastive": diht_cfg["terms"]["contrastive"]}}
        ),
        "diht": OBJECTIVES.build(diht_cfg, embed_dim=embed_dim),
    }
    concepts = objs["diht"].terms["concepts"]
    targets = open_targets(concepts.teacher, _Captions(NUM_TRAIN), cache)
    g = torch.Generator().manual_seed(0)
    for s in range(0, NUM_TRAIN, 5000):  # every row cached, as after a first epoch
        rows = np.arange(s, min(NUM_TRAIN, s + 5000))
        targets.write(rows, 4 * torch.randn(len(rows), 1000, generator=g))
    concepts.targets = targets
    return objs


def _step(model: Any, objective: Any, opt: torch.optim.Optimizer, batch: dict) -> float:
    image = model.encode_image(batch["image"])
    text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    out = objective(gather_features(image, text), model.logit_scale(), batch, 0.5)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    return out.loss.item()


def run(
    batch_size: int, rounds: int, steps: int, warmup: int, clock: str = "wall"
) -> dict[str, Any]:
    """Per-step median times and median per-round ratios to clip.

    ``clock="cpu"`` times with this thread's CPU clock (use with ``--threads 1``: all
    work then runs in this thread), which other processes on a shared machine barely
    move; ``wall`` is the elapsed time.
    """
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    base = ENCODERS.build({"name": "tiny"})
    with tempfile.TemporaryDirectory() as tmp:
        objs = _objectives(base.embed_dim, Path(tmp))
        calls_before = objs["diht"].terms["concepts"].teacher_work()["teacher_calls"]
        runs = {}
        for name, obj in objs.items():
            model = copy.deepcopy(base).train()
            params = [*model.parameters(), *obj.parameters()]
            runs[name] = (model, obj, torch.optim.AdamW(params, lr=1e-4))
        batches = [_batch(base, batch_size, base.image_size, s) for s in range(steps)]
        for model, obj, opt in runs.values():
            for i in range(warmup):
                _step(model, obj, opt, batches[i % steps])
        names = list(runs)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                model, obj, opt = runs[name]
                start = timer()
                for b in batches:
                    _step(model, obj, opt, b)
                times[name].append((timer() - start) / steps)
    ratios = {
        n: statistics.median(t / c for t, c in zip(times[n], times["clip"]))
        for n in names
        if n != "clip"
    }
    ratio_min = {n: min(times[n]) / min(times["clip"]) for n in names if n != "clip"}
    concept_cost = statistics.median(d / h for d, h in zip(times["diht"], times["hnnce"]))
    teacher_calls = objs["diht"].terms["concepts"].teacher_work()["teacher_calls"] - calls_before
    return {
        "diht_over_hnnce": concept_cost,
        "teacher_calls_during_steps": teacher_calls,
        "batch_size": batch_size,
        "rounds": rounds,
        "steps_per_round": steps,
        "threads": torch.get_num_threads(),
        "clock": clock,
        "median_step_s": {n: statistics.median(v) for n, v in times.items()},
        "ratio_to_clip": ratios,
        "ratio_min": ratio_min,
        "per_round_s": times,
    }


def teacher_throughput(batch_size: int, rounds: int) -> dict[str, Any]:
    """Images/s of the Lite0 teacher's fast path vs plain timm eval, interleaved rounds."""
    from vlexp.objectives.concepts.teachers import build_teacher

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = build_teacher("efficientnet_lite0").to(device)
    plain = copy.deepcopy(teacher.model).to(memory_format=torch.contiguous_format).eval()
    size = teacher.input_size
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))

    def run_plain() -> torch.Tensor:
        with torch.no_grad():
            return plain(x.to(device)).float()

    def run_fast() -> torch.Tensor:
        return teacher.logits(x)

    fns = {"plain_timm_eval": run_plain, "vlexp_teacher": run_fast}
    for fn in fns.values():  # warm-up (allocator, kernels)
        fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(rounds):
        for name in list(fns)[r % 2 :] + list(fns)[: r % 2]:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fns[name]()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    diff = (run_fast() - run_plain()).abs().max().item()
    return {
        "device": device,
        "batch_size": batch_size,
        "rounds": rounds,
        "images_per_s": {n: batch_size / statistics.median(t) for n, t in times.items()},
        "speedup": statistics.median(
            p / f for p, f in zip(times["plain_timm_eval"], times["vlexp_teacher"])
        ),
        "max_abs_logit_diff": diff,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=1, help="steps per objective per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time (with --threads 1; robust to load)",
    )
    p.add_argument("--teacher-batch", type=int, default=32)
    p.add_argument("--teacher-rounds", type=int, default=4, help="0: skip the teacher timing")
    p.add_argument("--json", type=str, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.batch_size, args.rounds, args.steps, args.warmup, args.clock)
    print(
        f"batch {res['batch_size']}, {res['rounds']} rounds x {res['steps_per_round']} steps, "
        f"{res['threads']} threads, {res['clock']} clock"
    )
    for name, t in res["median_step_s"].items():
        ratio = res["ratio_to_clip"].get(name, 1.0)
        rmin = res["ratio_min"].get(name, 1.0)
        print(
            f"  {name:6s} {1000 * t:8.1f} ms/step   ratio to clip {ratio:.3f} "
            f"(median of per-round ratios; fastest-step ratio {rmin:.3f})"
        )
    print(
        f"  diht / hnnce {res['diht_over_hnnce']:.3f} (median of per-round ratios: the cost of "
        f"concept distillation over cached targets; teacher calls during the timed steps: "
        f"{res['teacher_calls_during_steps']})"
    )
    if args.teacher_rounds > 0:
        t = teacher_throughput(args.teacher_batch, args.teacher_rounds)
        res["teacher"] = t
        ips = t["images_per_s"]
        print(
            f"teacher EfficientNet-Lite0 224 px on {t['device']}, batch {t['batch_size']}, "
            f"{t['rounds']} interleaved rounds: vlexp {ips['vlexp_teacher']:.1f} images/s, plain "
            f"timm eval {ips['plain_timm_eval']:.1f} images/s, speed-up {t['speedup']:.2f}x "
            f"(max |logit diff| {t['max_abs_logit_diff']:.2e})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
