"""One wandb run per job: grid multirun, Optuna study, resume in place, leftover runs.

Offline runs are read back from their ``.wandb`` transaction logs with the reader in
``tests/train/test_scale_wandb.py`` (independent of vlexp's code); a job's expected values come
from Hydra's own ``.hydra/overrides.yaml`` of that job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig

from tests.conftest import compose_cfg
from tests.scale_helpers import TINY, explain, run_vlexp
from tests.train.test_scale_wandb import complete_records
from vlexp.train.loggers import WANDB_ID_FILE, build_loggers, finish_wandb, wandb_run_id
from vlexp.train.sweep import run_name


def _the_run(job_dir: Path) -> tuple[object, list]:
    """The run record and all records of the one offline wandb run in ``job_dir``."""
    offline = sorted((job_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, f"{job_dir}: expected one wandb run, found {offline}"
    return _the_run_in(offline[0])


def _config(run: object) -> dict[str, object]:
    return {item.key: json.loads(item.value_json) for item in run.config.update}  # type: ignore[attr-defined]


def _exit_code(records: list) -> int:
    (rec,) = [r for r in records if r.WhichOneof("record_type") == "exit"]
    return int(rec.exit.exit_code)


def _history_keys(records: list) -> set[str]:
    return {
        "/".join(i.nested_key) or i.key
        for r in records
        if r.WhichOneof("record_type") == "history"
        for i in r.history.item
    }


def _check_one_run_per_job(sweep: Path, proc_output: str) -> None:
    """Every job of ``sweep`` has its own run: own id, own config, name, group, exit 0."""
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 2, sorted(p.name for p in sweep.iterdir())
    ids = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = next(float(o.split("=", 1)[1]) for o in overrides if o.startswith("optim.lr="))
        run, records = _the_run(job)
        ids.append(run.run_id)
        assert (job / WANDB_ID_FILE).read_text().strip() == run.run_id
        assert run.run_group == sweep.name  # group = the sweep
        assert run.display_name == ",".join(sorted(overrides))  # name = the job's overrides
        assert _config(run)["optim.lr"] == pytest.approx(lr)  # this job's config
        assert "val/mean_R@1" in _history_keys(records)  # its own metrics
        assert _exit_code(records) == 0  # finished at the end of the job
    assert len(set(ids)) == len(ids), f"jobs share a wandb run: {ids}"
    assert "wandb run already in progress" not in proc_output


@pytest.mark.slow
def test_grid_multirun_opens_one_wandb_run_per_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    proc = run_vlexp(
        ["-m", "optim.lr=0.001,0.002", *TINY, "logger=wandb", "hydra.sweep.dir=grid"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, explain(proc)
    _check_one_run_per_job(tmp_path / "grid", proc.stdout + proc.stderr)


@pytest.mark.slow
def test_optuna_study_opens_one_wandb_run_per_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    proc = run_vlexp(
        [
            "hparams_search=optuna_lr",
            "hydra.sweeper.n_trials=2",
            *TINY,
            "logger=wandb",
            "hydra.sweep.dir=study",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, explain(proc)
    _check_one_run_per_job(tmp_path / "study", proc.stdout + proc.stderr)


@pytest.mark.slow
def test_run_resumed_in_place_continues_its_wandb_run(tmp_path, monkeypatch):
    from vlexp.train.run import train

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    common = [*TINY, "logger=wandb", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]
    run_dir = tmp_path / "run"
    train(compose_cfg([*common, "trainer.max_steps=2"], output_dir=run_dir))
    train(compose_cfg([*common, "trainer.max_steps=4", "resume=auto"], output_dir=run_dir))
    parts = sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    assert len(parts) == 2, parts  # one offline part per process, synced into one run
    runs = [_the_run_in(p) for p in parts]
    stored = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert [r.run_id for r, _ in runs] == [stored, stored]
    steps = [_global_steps(records) for _, records in runs]
    assert steps[0] and steps[1] and max(steps[0]) < min(steps[1])  # the history continues
    # a fresh run in another directory, resumed from this one's checkpoint: a new wandb run
    other = tmp_path / "other"
    train(compose_cfg([*common, "trainer.max_steps=6", f"resume={run_dir}"], output_dir=other))
    found = sorted((other / "wandb").glob("offline-run-*"))
    assert len(found) == 1, sorted(str(p) for p in tmp_path.rglob("*") if "wandb" in str(p))
    other_run, _ = _the_run_in(found[0])
    assert other_run.run_id != stored


def _the_run_in(offline_dir: Path) -> tuple[object, list]:
    """Run record and records of one offline part, once wandb has written all of it."""
    (wb_file,) = offline_dir.glob("run-*.wandb")
    records = complete_records(wb_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run, records


def _global_steps(records: list) -> list[float]:
    return [
        float(json.loads(i.value_json))
        for r in records
        if r.WhichOneof("record_type") == "history"
        for i in r.history.item
        if ("/".join(i.nested_key) or i.key) == "trainer/global_step"
    ]


def test_run_id_is_kept_only_when_resuming_in_place(tmp_path):
    first, resumed = wandb_run_id(tmp_path, resume=False)
    assert not resumed and len(first) == 8 and first.isalnum()
    assert (tmp_path / WANDB_ID_FILE).read_text().strip() == first
    assert wandb_run_id(tmp_path, resume=True) == (first, True)
    fresh, resumed = wandb_run_id(tmp_path, resume=False)  # a fresh start: a new run
    assert fresh != first and not resumed
    assert wandb_run_id(tmp_path / "new", resume=True)[1] is False  # nothing stored yet


def test_a_run_left_open_is_finished_before_the_next_job(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    leftover = wandb.init(
        project="vlexp",
        dir=str(tmp_path),
        mode="offline",
        settings=wandb.Settings(silent=True, console="off"),
    )
    leftover_dir = Path(leftover.dir).parent
    cfg = compose_cfg(["logger=wandb"], output_dir=tmp_path / "job")
    loggers = build_loggers(cfg, tmp_path / "job")
    run = loggers[-1].experiment  # starts this job's run
    try:
        assert run.id != leftover.id
        assert run.id == (tmp_path / "job" / WANDB_ID_FILE).read_text().strip()
        (wb_file,) = leftover_dir.glob("run-*.wandb")
        assert _exit_code(complete_records(wb_file)) == 0  # the leftover was closed
    finally:
        finish_wandb()
    assert wandb.run is None


def test_run_name_is_the_job_overrides(tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    overrides = ["optim.lr=0.002", "objective=hnnce"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        full = compose("train", overrides=overrides, return_hydra_config=True)
    cfg = compose_cfg(overrides)
    assert run_name(cfg) is None  # outside a Hydra app: the tracker names the run
    HydraConfig.instance().set_config(full)
    try:
        assert run_name(cfg) == "objective=hnnce,optim.lr=0.002"
        cfg.logger.run_name = "mine"
        assert run_name(cfg) == "mine"
    finally:
        HydraConfig.instance().cfg = None
