"""Training-step time of objective=diht / hnnce relative to objective=clip (same model, batch).

    .venv/bin/python benchmarks/bench_diht_step.py [--batch-size 128] [--rounds 40]
        [--steps 1] [--threads 0] [--json out.json]

One step = encode images and texts with the tiny two-tower model, gather, objective,
backward, AdamW step (what ``VLModule.training_step`` plus the optimiser do). Each
objective trains its own copy of the same initial model. The objectives run
interleaved: every round times ``--steps`` steps (default 1) of each, in a rotating
order, so load drifts on a shared machine hit all of them alike. Per round the time of
each objective is divided by clip's; the reported ratio is the median over rounds (the
ratio of the fastest rounds, ``ratio_min``, is reported too).

``diht`` is HN-NCE + concept distillation with *cached* targets: the teacher logits
(1000 ImageNet concepts, float16) are written to disk and memory-mapped exactly as
``ConceptDistillation.setup`` does, and each step looks up its batch's rows.
``hnnce`` is diht without concept distillation (``objective.terms.concepts.weight=0``).
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

import torch

from vlexp.encoders import ENCODERS
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.concepts.objective import TargetStore
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
    g = torch.Generator().manual_seed(0)
    TargetStore.from_logits(4 * torch.randn(NUM_TRAIN, 1000, generator=g)).save(cache)
    objs["diht"].terms["concepts"].targets = TargetStore.load(cache, 1000)
    return objs


def _step(model: Any, objective: Any, opt: torch.optim.Optimizer, batch: dict) -> float:
    image = model.encode_image(batch["image"])
    text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    out = objective(gather_features(image, text), model.logit_scale(), batch, 0.5)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    return out.loss.item()


def run(batch_size: int, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    """Per-step median times and median per-round ratios to clip."""
    torch.manual_seed(0)
    base = ENCODERS.build({"name": "tiny"})
    with tempfile.TemporaryDirectory() as tmp:
        objs = _objectives(base.embed_dim, Path(tmp))
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
                start = time.perf_counter()
                for b in batches:
                    _step(model, obj, opt, b)
                times[name].append((time.perf_counter() - start) / steps)
    ratios = {
        n: statistics.median(t / c for t, c in zip(times[n], times["clip"]))
        for n in names
        if n != "clip"
    }
    ratio_min = {n: min(times[n]) / min(times["clip"]) for n in names if n != "clip"}
    return {
        "batch_size": batch_size,
        "rounds": rounds,
        "steps_per_round": steps,
        "threads": torch.get_num_threads(),
        "median_step_s": {n: statistics.median(v) for n, v in times.items()},
        "ratio_to_clip": ratios,
        "ratio_min": ratio_min,
        "per_round_s": times,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=1, help="steps per objective per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=str, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.batch_size, args.rounds, args.steps, args.warmup)
    print(
        f"batch {res['batch_size']}, {res['rounds']} rounds x {res['steps_per_round']} steps, "
        f"{res['threads']} threads"
    )
    for name, t in res["median_step_s"].items():
        ratio = res["ratio_to_clip"].get(name, 1.0)
        rmin = res["ratio_min"].get(name, 1.0)
        print(
            f"  {name:6s} {1000 * t:8.1f} ms/step   ratio to clip {ratio:.3f} "
            f"(median of per-round ratios; fastest-step ratio {rmin:.3f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
