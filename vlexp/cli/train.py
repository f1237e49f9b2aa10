"""``vlexp train`` / ``python -m vlexp.run``: compose conf/train.yaml, validate, run.

A thin Hydra adapter over the run layer (:mod:`vlexp.train.run`). The config is checked
before Lightning or any model is imported, so a user error ends the command in seconds
with one line on stderr and exit code 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vlexp.cli import CONF_DIR
from vlexp.config import validate_config
from vlexp.errors import exiting_on_user_error


def run(cfg: DictConfig) -> float | None:
    """Validate ``cfg``, then train; in a sweep a crash becomes a recorded failure. A
    user's error (config, refused file, bad samples) is one line on stderr, exit code 2."""
    from vlexp.train.sweep import is_multirun

    with exiting_on_user_error():
        if not is_multirun():  # a sweep records a bad point as a failed job and goes on
            validate_config(cfg)
        import torch

        from vlexp.train.run import run_guarded
        from vlexp.train.slurm import env_rank
        from vlexp.train.sweep import quiet_nonzero_rank

        torch.set_float32_matmul_precision("high")
        quiet_nonzero_rank(env_rank())  # only rank 0 writes the run directory's log file
        return run_guarded(cfg, is_multirun())


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point (``python -m vlexp.run``; ``vlexp train`` runs :func:`run`)."""
    return run(cfg)


if __name__ == "__main__":
    main()
