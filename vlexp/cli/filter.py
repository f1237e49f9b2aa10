"""Command line of the pass: ``python -m vlexp.cli.filter [merge] key=value ...`` (Hydra).

The config is ``conf/filter_pass.yaml`` (its ``filter`` group is the trainer's
``conf/filter``), so every Hydra feature applies, including multirun with the submitit
launcher: ``python -m vlexp.cli.filter -m hydra/launcher=submitit_slurm input=... \\
output_dir=... array_count=100 'array_index=range(0,100)'`` submits one SLURM job array.
A first argument ``merge`` (or ``run``) is shorthand for ``mode=merge`` (``mode=run``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from vlexp.cli import CONF_DIR
from vlexp.filters.filter_pass.merge import merge_pass
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import without_timing
from vlexp.filters.filter_pass.runner import run_pass

log = logging.getLogger("vlexp.filters.filter_pass")

MODES = ("run", "merge")
_NOT_OPTIONS = ("mode", "allow_partial", "task_name")


def options_from_config(cfg: DictConfig) -> PassOptions:
    """:class:`PassOptions` from the composed config (unknown keys are an error)."""
    d: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    known = set(PassOptions.__dataclass_fields__)
    extra = sorted(k for k in d if k not in known and k not in _NOT_OPTIONS)
    if extra:
        raise ValueError(f"unknown filter pass options {extra}; see conf/filter_pass.yaml")
    return PassOptions(**{k: v for k, v in d.items() if k in known})


def run_from_config(cfg: DictConfig) -> dict[str, Any]:
    """Run the pass or the merge step described by ``cfg``; a JSON-ready summary."""
    mode = cfg.get("mode", "run")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "merge":
        if not cfg.get("output_dir"):
            raise ValueError("merge needs output_dir=<the pass's output folder>")
        report = merge_pass(cfg.output_dir, allow_partial=bool(cfg.get("allow_partial", False)))
        return without_timing(report) | {"timing": report["timing"]}
    summary = run_pass(options_from_config(cfg))
    summary.pop("report", None)
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="filter_pass")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry point."""
    return run_from_config(cfg)


def entry() -> None:
    """``python -m vlexp.cli.filter``: map a leading ``merge``/``run`` word to ``mode=...``."""
    if len(sys.argv) > 1 and sys.argv[1] in MODES:
        sys.argv[1] = f"mode={sys.argv[1]}"
    main()


if __name__ == "__main__":
    entry()
