"""``python -m vlexp.cli.fewshot ckpt=PATH [ks=[..]] [seeds=[..]] [protocol=kshot|heldout]
[max_folds=4] [steps=300] [pool_set=0] [test_set=0] [config=PATH | run_dir=PATH] [out=..]
[plot=..]`` (also ``vlexp fewshot ...``).

Few-shot linear probes (:mod:`vlexp.eval.fewshot`) on a trained checkpoint; ``key=value``
arguments (values parsed as YAML, as Hydra overrides are). The checkpoint and its run
config (stored in the checkpoint; ``config=``/``run_dir=`` for older files) are loaded
by :mod:`vlexp.train.checkpoints` without executing code from them.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlexp.errors import exiting_on_user_error
from vlexp.eval.fewshot import KSHOT_MAX_FOLDS, PROTOCOLS, fewshot_curve, plot_fewshot_curve
from vlexp.train.checkpoints import load_module_and_data


def _parse_args(argv: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(
                f"arguments are key=value (got {arg!r}); see `python -m vlexp.cli.fewshot --help`"
            )
        key, value = arg.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


ALLOWED = frozenset(
    {"ckpt", "config", "run_dir", "ks", "seeds", "out", "plot", "steps", "pool_set", "test_set",
     "protocol", "max_folds"}
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m vlexp.cli.fewshot ckpt=PATH [ks=[..]] [seeds=[..]] [out=..] [plot=..]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0)
    with exiting_on_user_error():
        return probe(_parse_args(argv))


def run(cfg: Any) -> dict[str, Any]:
    """Hydra task of ``vlexp fewshot`` (config ``conf/fewshot.yaml``)."""
    from omegaconf import OmegaConf

    args = OmegaConf.to_container(cfg, resolve=True)
    return probe({k: v for k, v in args.items() if k in ALLOWED and v is not None})


def probe(args: dict[str, Any]) -> dict[str, Any]:
    """Run the probes described by ``args`` (the ``key=value`` arguments); print and save."""
    if "ckpt" not in args:
        raise SystemExit("missing ckpt=PATH (a .ckpt written by `vlexp train`)")
    unknown = sorted(set(args) - ALLOWED)
    if unknown:
        raise SystemExit(f"unknown argument(s) {unknown}; accepted: {sorted(ALLOWED)}")
    protocol = str(args.get("protocol", "kshot"))
    if protocol not in PROTOCOLS:
        raise SystemExit(
            f"protocol={protocol} is not one of {list(PROTOCOLS)} (kshot: hyper-parameters "
            "from the shots only; heldout: chosen on extra labelled images)"
        )
    module, datamodule = load_module_and_data(
        str(args["ckpt"]), args.get("config"), args.get("run_dir")
    )
    res = fewshot_curve(
        module,
        datamodule,
        ks=tuple(args.get("ks", (0, 1, 2, 4, 8, 16))),
        seeds=tuple(args.get("seeds", (0, 1, 2))),
        pool_set=int(args.get("pool_set", 0)),
        test_set=int(args.get("test_set", 0)),
        steps=int(args.get("steps", 300)),
        protocol=protocol,
        max_folds=int(args.get("max_folds", KSHOT_MAX_FOLDS)),
    )
    res["ckpt"] = str(args["ckpt"])
    out = Path(args.get("out") or Path(args["ckpt"]).resolve().parent.parent / "fewshot.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"protocol: {protocol}" + (" (hyper-parameters chosen on extra labelled images)"
          if res["uses_extra_labels"] else " (hyper-parameters from the shots only)"))  # fmt: skip
    print(f"zero-shot: {100 * res['zeroshot']:.2f}%")
    for i, k in enumerate(res["ks"]):
        zsi, scr = res["zeroshot_init"]["mean"][i], res["scratch"]["mean"][i]
        print(
            f"k={k:>3}: zero-shot init {100 * zsi:6.2f}%   scratch "
            + ("   n/a" if not math.isfinite(scr) else f"{100 * scr:6.2f}%")
        )
    print(f"wrote {out}")
    if args.get("plot"):
        plot_fewshot_curve(res, args["plot"])
        print(f"wrote {args['plot']}")
    return res


if __name__ == "__main__":
    main()
