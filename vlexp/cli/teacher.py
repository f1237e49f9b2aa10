"""``python -m vlexp.cli.teacher train-synthetic --out PATH [...]``: train and save the
small synthetic-data teacher used by concept distillation (``teacher.weights``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from vlexp.objectives.concepts.teachers import train_synthetic_teacher


def _parse_knobs(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"--knob expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vlexp.cli.teacher train-synthetic --out PATH [...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m vlexp.cli.teacher", description="Concept-distillation teachers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser(
        "train-synthetic", help="train a small CNN on the synthetic object classes and save it"
    )
    tr.add_argument("--out", required=True, help="file to write (use as teacher.weights)")
    tr.add_argument("--num-train", type=int, default=10_000)
    tr.add_argument("--num-val", type=int, default=1_000)
    tr.add_argument("--image-size", type=int, default=64)
    tr.add_argument("--width", type=int, default=32)
    tr.add_argument("--epochs", type=int, default=15)
    tr.add_argument("--max-seconds", type=float, default=120.0, help="training time budget")
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="synthetic generator knob (repeatable), e.g. --knob max_objects=3",
    )
    tr.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = train_synthetic_teacher(
        args.out,
        args.num_train,
        args.num_val,
        args.image_size,
        args.width,
        args.epochs,
        args.max_seconds,
        args.batch_size,
        args.lr,
        args.seed,
        _parse_knobs(args.knob),
        progress=not args.quiet,
    )
    print(json.dumps({"out": args.out, **info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
