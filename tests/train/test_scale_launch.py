"""Launch paths as commands: ``trainer=ddp_sim`` under Hydra, and Hydra's submitit launcher."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.scale_helpers import TINY, explain, files_under, run_vlexp


@pytest.mark.slow
def test_ddp_sim_fit_writes_exactly_one_run_directory(tmp_path):
    """2 CPU processes (ddp_spawn over gloo) under Hydra with a timestamped run dir."""
    proc = run_vlexp(
        ["trainer=ddp_sim", *TINY, "hydra.run.dir=outputs/${now:%H-%M-%S-%f}"], cwd=tmp_path
    )
    assert proc.returncode == 0, explain(proc)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # really two ranks
    runs = list((tmp_path / "outputs").iterdir())
    assert len(runs) == 1, files_under(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["monitor_value"] is not None
    assert [p.name for p in run.glob("*.log")] == ["run.log"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / "csv" / "metrics.csv").is_file()


@pytest.mark.slow
def test_submitit_local_multirun_and_requeue_lands_in_the_same_directory(tmp_path):
    """Two jobs through ``hydra/launcher=submitit_local`` (each its own process).

    A requeued SLURM job re-runs the pickled submission; re-deriving the job's directory
    from that pickle later must give the same directory (so ``resume=auto`` finds it).
    """
    proc = run_vlexp(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "objective=clip,hnnce",
            *TINY,
            "resume=auto",
            "hydra.sweep.dir=sweep/${now:%H-%M-%S-%f}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, explain(proc)
    (sweep,) = list((tmp_path / "sweep").iterdir())
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["global_step"] == 4, files_under(sweep)
    pickles = sorted((sweep / ".submitit").rglob("*_submitted.pkl"))
    assert len(pickles) == 2, files_under(sweep)
    time.sleep(0.01)  # any ${now:...} evaluated afresh would differ by now
    relative = {sweep.relative_to(tmp_path) / "0", sweep.relative_to(tmp_path) / "1"}
    assert {_requeued_job_dir(p) for p in pickles} == relative


def _requeued_job_dir(pickle_path: Path) -> Path:
    """The output directory a job gets when its submission pickle runs again (a requeue),
    derived the way the launcher derives it, some time after the original launch."""
    from hydra.core.utils import setup_globals
    from omegaconf import open_dict
    from submitit.core.utils import DelayedSubmission

    setup_globals()
    submission = DelayedSubmission.load(pickle_path)
    launcher, (overrides, _key, job_num, _id, _state) = submission.function, submission.args
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = job_num
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
