"""``vlexp teacher train-synthetic out=PATH [num_train=10000] [epochs=15] ...`` (also
``python -m vlexp.cli.teacher action=train-synthetic out=PATH``): train and save the small
synthetic-data teacher used by concept distillation (``teacher.weights``).

A Hydra app (config ``conf/teacher.yaml``): ``key=value`` overrides, ``--help``,
``--cfg job``; torch is imported only when the command runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from vlexp.cli import CONF_DIR

ACTIONS = ("train-synthetic",)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task of ``vlexp teacher``: run ``cfg.action``; return what was written."""
    if cfg.action not in ACTIONS:
        raise SystemExit(f"action={cfg.action} is not one of {list(ACTIONS)}")
    from vlexp.objectives.concepts.teachers import train_synthetic_teacher

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    knobs = OmegaConf.to_container(cfg.knobs, resolve=True) or {}
    info = train_synthetic_teacher(
        str(cfg.out),
        int(cfg.num_train),
        int(cfg.num_val),
        int(cfg.image_size),
        int(cfg.width),
        int(cfg.epochs),
        float(cfg.max_seconds),
        int(cfg.batch_size),
        float(cfg.lr),
        int(cfg.seed),
        knobs,  # type: ignore[arg-type]
        progress=not cfg.quiet,
    )
    result = {"out": str(cfg.out), **info}
    print(json.dumps(result, indent=1))
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="teacher")
def main(cfg: DictConfig) -> dict[str, Any]:
    """``python -m vlexp.cli.teacher action=train-synthetic out=PATH [...]``."""
    return run(cfg)


if __name__ == "__main__":
    main()
