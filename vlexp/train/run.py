"""The run layer: build the components of a validated config, fit, test, write metrics.json.

``vlexp train`` (:mod:`vlexp.cli.train`, a thin Hydra adapter) calls :func:`run_guarded`;
``vlexp eval`` reuses :func:`run_test`, :func:`test_table` and :func:`write_metrics`, so a
checkpoint's table and ``metrics.json`` read like the ones written at the end of training.
:func:`train` returns the monitored metric so Hydra sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.trunk_cache import TrunkCacheError, trunk_cache_for_run
from vlexp.notices import switched_on
from vlexp.objectives import OBJECTIVES
from vlexp.samplers import SAMPLERS
from vlexp.train.callbacks import AtomicCheckpointIO, LastCheckpoint, SamplerStatsCallback
from vlexp.train.checkpoints import RunConfigInCheckpoint, checkpoint_step, read_checkpoint
from vlexp.train.datamodule import VLDataModule
from vlexp.train.loggers import build_loggers, finish_wandb
from vlexp.train.model_opts import apply_model_opts
from vlexp.train.module import VLModule, eval_options
from vlexp.train.periodic_checkpoints import PeriodicCheckpoint
from vlexp.train.progress import EpochProgressBar
from vlexp.train.report import metrics_rows, print_metrics_table, run_title
from vlexp.train.slurm import env_rank, find_resume_point, log_resume_point, resume_checkpoint
from vlexp.train.sweep import (
    group_choices,
    isolated_job,
    prepare_ddp_relaunch,
    record_failure,
)
from vlexp.train.throughput import ProgressOptions, ThroughputLog

log = logging.getLogger("vlexp")


def resolve_resume(resume: str | None, run_dir: Path) -> str | None:
    """Checkpoint path to resume from: None, a .ckpt file, a run dir, or 'auto'.

    ``auto`` resumes from the newest readable one of ``<run_dir>/checkpoints/last.ckpt``
    and SLURM's ``<run_dir>/hpc_ckpt_<n>.ckpt`` (what a requeued job wants; unreadable
    files are skipped) and starts fresh otherwise; see :func:`vlexp.train.slurm.find_resume_point`.
    """
    return resume_checkpoint(resume, run_dir)


def trained_steps(trainer: L.Trainer, run_dir: Path) -> int:
    """Optimizer steps of the fit: ``trainer.global_step``, or with spawn-based strategies
    (whose workers do not hand the loop state back) the step stored in ``last.ckpt``."""
    if trainer.global_step > 0:
        return int(trainer.global_step)
    last = run_dir / "checkpoints" / "last.ckpt"
    return checkpoint_step(last) if last.is_file() else 0


def build_components(cfg: DictConfig) -> tuple[VLModule, VLDataModule]:
    """Model, objective, module and datamodule from a validated config."""
    # fail fast on unknown names before building anything heavy
    OBJECTIVES.get(cfg.objective.name)
    SAMPLERS.get(cfg.sampler.name)
    from vlexp.data.sources import DATASETS
    from vlexp.filters import FILTERS

    DATASETS.get(cfg.data.source.name)
    FILTERS.get(cfg.filter.name)

    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    apply_model_opts(
        model, OmegaConf.to_container(cfg.model_opts, resolve=True) if "model_opts" in cfg else None
    )
    objective = OBJECTIVES.build(
        OmegaConf.to_container(cfg.objective, resolve=True),
        embed_dim=model.embed_dim,
        image_mean=model.image_mean,
        image_std=model.image_std,
        encoder_config=OmegaConf.to_container(cfg.encoder, resolve=True),
    )
    objective.prepare_model(model)
    module = VLModule(
        model,
        objective,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        warmup_steps=cfg.optim.warmup_steps,
        min_lr_ratio=cfg.optim.min_lr_ratio,
        fused=cfg.optim.get("fused"),
        schedule=cfg.optim.get("schedule") or "cosine",
        cooldown_steps=int(cfg.optim.get("cooldown_steps") or 0),
        cooldown_power=float(cfg.optim.get("cooldown_power") or 1.0),
        accum_freq=int(cfg.optim.get("accum_freq") or 1),
        **eval_options(cfg.eval),
    )
    max_steps = int(cfg.trainer.max_steps)
    datamodule = VLDataModule.for_model(
        cfg, model, total_steps=max_steps if max_steps > 0 else None,
        extra_eval_sets=cfg.eval.get("extra_sets"),
    )  # fmt: skip
    return module, datamodule


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    """The Lightning trainer with checkpointing, logging and progress bar."""
    tcfg: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    fast = bool(tcfg.get("fast_dev_run"))
    progress = ThroughputLog(ProgressOptions.from_config(cfg.get("progress")), cfg.eval.monitor)
    callbacks: list[L.Callback] = [SamplerStatsCallback(), EpochProgressBar(), progress]
    loggers: Any = False
    if not fast:
        callbacks += [
            ModelCheckpoint(
                dirpath=str(run_dir / "checkpoints"),
                filename="best",
                monitor=cfg.eval.monitor,
                mode=cfg.eval.monitor_mode,
                save_last=False,
                save_top_k=1,
                auto_insert_metric_name=False,
            ),
            LastCheckpoint(run_dir / "checkpoints"),
            *periodic_checkpoint_callbacks(cfg, run_dir),
            RunConfigInCheckpoint(
                cfg, group_choices()
            ),  # a checkpoint can be evaluated without its run dir
            LearningRateMonitor(logging_interval="step"),
        ]
        if cfg.logger.name != "none":
            # a resume from this run dir's own checkpoint continues its wandb run
            resume_from = resolve_resume(cfg.get("resume"), run_dir)
            loggers = build_loggers(cfg, run_dir, resume_from=resume_from)
        viz = cfg.get("viz")
        if viz is not None and viz.get("enabled", False):
            from vlexp.train.viz.callback import VizCallback

            callbacks.append(
                VizCallback(
                    run_dir / "viz",
                    num_images=int(viz.num_images),
                    num_queries=int(viz.num_queries),
                    top_k=int(viz.top_k),
                )
            )
    return L.Trainer(
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=loggers,
        use_distributed_sampler=False,  # vlexp's batch samplers split by rank themselves
        enable_progress_bar=True,
        plugins=[AtomicCheckpointIO()],  # temp file + rename: a kill never truncates a ckpt
        **tcfg,
    )


def periodic_checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """The ``checkpoint.*`` callback (``step-<N>.ckpt`` every N steps/epochs), if any."""
    opts = cfg.get("checkpoint") or {}
    steps, epochs = opts.get("every_n_steps"), opts.get("every_n_epochs")
    if steps is None and epochs is None:
        return []
    keep = int(opts.get("keep", 3))
    return [PeriodicCheckpoint(run_dir / "checkpoints", steps, epochs, keep)]


def write_metrics(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``<run_dir>/metrics.json`` (the one place a run's summary is written)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(summary, indent=2))
    log.info("wrote %s", path)
    return path


def run_test(trainer: L.Trainer, module: VLModule, datamodule: VLDataModule) -> dict[str, float]:
    """Evaluate ``module`` on the datamodule's test sets; the ``test/...`` metrics."""
    trainer.test(module, datamodule=datamodule, verbose=False)
    datamodule.collect_rank_reads(trainer)  # spawned ranks' bad-sample counts
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def test_table(
    cfg: DictConfig,
    test_metrics: dict[str, float],
    test_sets: list[Any],
    ks: tuple[int, ...],
    choices: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Print the held-out metrics table (with chance levels) titled after the run; its rows."""
    rows = metrics_rows(test_metrics, test_sets, "test", ks)
    if rows:
        title = run_title(cfg, group_choices() if choices is None else choices)
        print_metrics_table(rows, f"held-out test metrics: {title}")
    return rows


PRECISION_NOTES = {
    "16-mixed": "float16 autocast with a gradient scaler; the objective in float32",
    "bf16-mixed": "bfloat16 autocast; the objective in float32",
    "16-true": "towers in float16; the objective in float32",
    "bf16-true": "towers in bfloat16; the objective in float32",
    "64-true": "everything in float64",
}


def log_mechanisms(cfg: DictConfig) -> None:
    """One line for the precision and one per training mechanism the config switches on.

    Gradient checkpointing, torch.compile and the trunk cache announce themselves where
    they are applied (``vlexp.train.model_opts``, ``vlexp.encoders.trunk_cache``).
    """
    precision = str(cfg.trainer.precision)
    switched_on(f"precision {precision}", PRECISION_NOTES.get(precision, "everything in float32"))
    accum = int(cfg.optim.get("accum_freq") or 1)
    if accum > 1:
        batch = int(cfg.data.batch_size)
        part = -(-batch // accum)  # the largest micro-batch (micro_batch_bounds)
        switched_on(
            "gradient accumulation",
            f"optim.accum_freq={accum}: towers in {accum} micro-batches of up to {part} of "
            f"the {batch} rows per process, loss over the whole batch, towers run twice",
        )


def train(cfg: DictConfig) -> float | None:
    """Validate, build, fit, test; write metrics.json; return the monitored metric."""
    validate_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # logged by vlexp (the run's log), not by Lightning on stderr, which stays for errors
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    log.info("seed: %d", int(cfg.seed))
    point = find_resume_point(cfg.get("resume"), run_dir)
    if env_rank() == 0:
        log_resume_point(point, cfg.get("resume"))  # which file and step, or a fresh start
    ckpt_path = point.path
    if ckpt_path:  # refuse a file that only loads by running code, before building anything
        read_checkpoint(ckpt_path)

    module, datamodule = build_components(cfg)
    trainer = build_trainer(cfg, run_dir)
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        log.info("model: %s", module.model.freeze_summary())
        log_mechanisms(cfg)
    datamodule.setup("fit")
    module.objective.setup(datamodule.train_set, cache_dir=str(cfg.paths.cache_dir))
    try:
        module.trunk_cache = trunk_cache_for_run(module.model, cfg, datamodule.train_set)
    except TrunkCacheError as exc:  # encoder.trunk_cache=true that cannot hold
        raise ConfigError(str(exc)) from None
    start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.time() - start
    datamodule.collect_rank_reads(trainer)  # spawned ranks' bad-sample counts
    if trainer.fast_dev_run:
        return None

    val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    test_metrics: dict[str, float] = {}
    if cfg.get("test_after_fit", True):
        test_metrics = run_test(trainer, module, datamodule)
    monitored = val_metrics.get(cfg.eval.monitor)
    bad_per_rank = datamodule.bad_samples_per_rank()
    if trainer.is_global_zero:
        ks = tuple(cfg.eval.ks)
        rows = test_table(cfg, test_metrics, datamodule.test_sets, ks)
        report = datamodule.filter_report.as_dict() if datamodule.filter_report else None
        summary = {
            "experiment": group_choices().get("experiment"),
            "objective": cfg.objective.name,
            "sampler": cfg.sampler.name,
            "filter": cfg.filter.name,
            "encoder": cfg.encoder.name,
            "seed": int(cfg.seed),
            "global_step": trained_steps(trainer, run_dir),
            "fit_seconds": round(fit_seconds, 1),
            "monitor": cfg.eval.monitor,
            "monitor_value": monitored,
            "val": val_metrics,
            "test": test_metrics,
            "test_table": rows,
            "filter_report": report,
            "bad_samples": datamodule.bad_samples,
            "tag_report": datamodule.tag_report,
        }
        if bad_per_rank is not None:  # DDP: rank 0's counts above, every rank's here
            summary["bad_samples_per_rank"] = bad_per_rank
        write_metrics(run_dir, summary)
    finish_wandb()  # one wandb run per job: the next job of a sweep opens its own
    return monitored


def run_guarded(cfg: DictConfig, multirun: bool) -> float | None:
    """``train(cfg)``; on failure write ``error.txt`` and close wandb with exit code 1.

    In a multirun the failure is logged and None returned (Optuna records the trial as
    FAILED, the other jobs go on); a single run re-raises, so the command exits non-zero.
    """
    rank = env_rank()
    try:
        with isolated_job():  # the next job of a multirun starts without DDP leftovers
            prepare_ddp_relaunch()  # multirun + strategy=ddp: ranks re-run this job only
            return train(cfg)
    except Exception as exc:
        run_dir = Path(cfg.paths.output_dir)
        if rank == 0:
            record_failure(run_dir, exc)
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on (traceback in %s)", run_dir / "error.txt")
        return None
