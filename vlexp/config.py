"""Validation of a composed config before any data or model is built.

One pass (:func:`validate_config`) checks the run's own keys and every selected
component's section against the schema its registration declares (types, ranges,
choices, unknown keys; :class:`vlexp.registry.Opt`), plus the cross-key facts known
without reading data: the monitored metric is one the eval config produces, a global
batch fits in a dataset of known size. Every problem names the full key, the value
and what is allowed, all of them in one line, so a typo costs seconds, not a crashed
job an hour in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlexp import run_options
from vlexp.errors import UserError
from vlexp.registry import Opt, check_options


class ConfigError(UserError, ValueError):
    """A config value is invalid; the message (one line) says which key and what is allowed."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# A required value (``???`` in its preset) may stay unset when its alternative is given.
REQUIRED_ALTERNATIVES = {"data.source.urls": "data.source.sources"}


def missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys whose value is still ``???`` (required, not given), without resolving."""
    out: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{prefix}{i}.")
        elif node == "???":
            out.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def _check_required(cfg: DictConfig, errors: list[str]) -> None:
    """One line per required value left at ``???``, naming the key to set."""
    for key in missing_keys(cfg):
        alternative = REQUIRED_ALTERNATIVES.get(key)
        if alternative is not None and _get(cfg, alternative) is not None:
            continue
        also = f" (or {alternative}=...)" if alternative else ""
        errors.append(f"  {key} is required: give it on the command line, {key}=...{also}")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid value or unknown key found."""
    e: list[str] = []
    _check_required(cfg, e)
    _check_run_options(cfg, e)
    _check_resume(cfg, e)
    _check_progress(cfg, e)
    _check_lr_schedule(cfg, e)
    _check_augmentation(cfg, e)
    if _get(cfg, "trainer.max_steps") == -1 and (_get(cfg, "trainer.max_epochs") or -1) < 1:
        e.append("  trainer.max_steps=-1 needs trainer.max_epochs >= 1 (else training never ends)")
    acc = _get(cfg, "trainer.accumulate_grad_batches")
    if _is_int(acc) and acc > 1:
        bs = _get(cfg, "data.batch_size")
        big = f"{bs * acc}" if _is_int(bs) else f"{acc} x data.batch_size"
        e.append(
            f"  trainer.accumulate_grad_batches={acc}: plain gradient accumulation changes a "
            "contrastive loss (negatives come only from each micro-batch), so vlexp refuses "
            f"it; set data.batch_size={big} optim.accum_freq={acc} instead (towers run in "
            f"{acc} micro-batches, the loss keeps every negative)"
        )
    precision, accelerator = str(_get(cfg, "trainer.precision")), _get(cfg, "trainer.accelerator")
    if precision == "64-true" and accelerator == "mps":
        e.append(
            "  trainer.precision=64-true: Apple MPS has no float64; use 32-true on mps "
            "(or trainer.accelerator=cpu)"
        )
    _check_components(cfg, e)
    _check_monitor(cfg, e)
    _check_batch_fits(cfg, e)
    if e:
        raise ConfigError("Invalid configuration: " + "; ".join(line.strip() for line in e))


# ------------------------------------------------------------------ the run's own groups
def _check_run_options(cfg: DictConfig, errors: list[str]) -> None:
    """The top level, optim, data, eval, model_opts, viz, paths, logger and trainer against
    :mod:`vlexp.run_options`: types, ranges, choices and unknown keys."""
    top = {k: v for k, v in _top_level(cfg, errors).items() if k not in run_options.COMPONENT_KEYS}
    for key, value in top.items():
        if key in run_options.TOP:
            errors.extend(f"  {line}" for line in run_options.TOP[key].errors(value, key))
        elif not str(key).startswith("_"):
            accepted = sorted((*run_options.TOP, *run_options.COMPONENT_KEYS))
            errors.append(
                f"  {key}: unknown top-level key; a run config holds {', '.join(accepted)}"
            )
    data = _section(cfg, "data", errors)
    if isinstance(data, dict):
        errors.extend(
            f"  {line}"
            for line in check_options(
                data, run_options.DATA, "data", ("source", *run_options.MOVED_DATA_KEYS)
            )
        )
    logger = _section(cfg, "logger", errors)
    if isinstance(logger, dict):
        name = logger.get("name")
        if name not in run_options.LOGGER_OPTIONS:
            errors.append(f"  logger.name={name}: expected one of {', '.join(run_options.LOGGERS)}")
        else:
            own = run_options.LOGGER_OPTIONS[name]
            errors.extend(f"  {line}" for line in check_options(logger, own, "logger", ("name",)))
    trainer = _section(cfg, "trainer", errors)
    if isinstance(trainer, dict):
        _check_trainer(trainer, errors)
    extra = _get(cfg, "eval.extra_sets")
    if OmegaConf.is_dict(extra):
        _check_extra_sets(_section(cfg, "eval.extra_sets", errors) or {}, errors)


def _check_resume(cfg: DictConfig, errors: list[str]) -> None:
    resume = _get(cfg, "resume")
    if isinstance(resume, str) and resume != "auto" and not Path(resume).expanduser().exists():
        errors.append(
            f"  resume={resume}: no such checkpoint or run directory; give a .ckpt file, a run "
            "directory, auto (this run dir's newest checkpoint) or null (a fresh run)"
        )


def _check_progress(cfg: DictConfig, errors: list[str]) -> None:
    block = _get(cfg, "progress")
    if OmegaConf.is_dict(block) and block.get("lines") != "never":
        if block.get("every_steps") == 0 == block.get("every_s"):
            errors.append(
                "  progress.every_steps=0 and progress.every_s=0: no line would ever be written; "
                "set one of them > 0, or progress.lines=never"
            )


def _check_lr_schedule(cfg: DictConfig, errors: list[str]) -> None:
    """The cool-down exists only in const_cooldown, where it is required and must fit."""
    schedule = _get(cfg, "optim.schedule") or "cosine"
    steps = _get(cfg, "optim.cooldown_steps")
    if schedule != "const_cooldown":
        if steps is not None:
            errors.append(
                f"  optim.cooldown_steps={steps}: only optim.schedule=const_cooldown has a "
                f"cool-down (optim.schedule={schedule}); set optim.schedule=const_cooldown or "
                "optim.cooldown_steps=null"
            )
        return
    if steps is None:
        errors.append(
            "  optim.cooldown_steps is required with optim.schedule=const_cooldown: the number "
            "of final steps that decay the LR to optim.min_lr_ratio, e.g. optim.cooldown_steps=100"
        )
        return
    total, warm = _get(cfg, "trainer.max_steps"), _get(cfg, "optim.warmup_steps")
    if _is_int(steps) and _is_int(total) and _is_int(warm) and total > 0 and steps > total - warm:
        errors.append(
            f"  optim.cooldown_steps={steps}: more than the {total - warm} steps left after "
            f"the warm-up (trainer.max_steps={total}, optim.warmup_steps={warm})"
        )


MOVED_CROP_KEY = "moved to aug.scale"  # conf/train.yaml's marker for data.train_crop_scale


def _check_augmentation(cfg: DictConfig, errors: list[str]) -> None:
    """The ``aug`` section against its schema; the crop's old key points to the new one."""
    old = _get(cfg, "data.train_crop_scale")
    if old != MOVED_CROP_KEY and "train_crop_scale" in (_get(cfg, "data") or {}):
        value = "null" if old is None else list(old) if OmegaConf.is_list(old) else old
        errors.append(
            f"  data.train_crop_scale is now aug.scale: use aug.scale={value} instead"
            + (" (or aug=none)" if old is None else "")
        )
    section = _section(cfg, "aug", errors)
    if isinstance(section, dict):
        from vlexp.data.augment import aug_config_errors

        errors.extend(f"  {line}" for line in aug_config_errors(section))


def _top_level(cfg: DictConfig, errors: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in cfg:
        if key in run_options.COMPONENT_KEYS or key == "hydra":
            continue
        if key == "paths":  # may name Hydra's run dir, unresolvable outside a Hydra app
            out[str(key)] = OmegaConf.to_container(cfg.paths, resolve=False)
            continue
        out[str(key)] = _section(cfg, str(key), errors)
    return out


def _check_trainer(trainer: dict[str, Any], errors: list[str]) -> None:
    for key in trainer:
        if key in run_options.TRAINER_SET_BY_VLEXP:
            errors.append(
                f"  trainer.{key}: set by vlexp itself, not a config key (callbacks and loggers "
                "are chosen with logger=... and the other groups)"
            )
    known = run_options.trainer_schema()
    schema = {k: v for k, v in known.items() if k in trainer or k in run_options.TRAINER_CHECKED}
    clean = {k: v for k, v in trainer.items() if k not in run_options.TRAINER_SET_BY_VLEXP}
    for line in check_options(clean, schema, "trainer"):
        if "unknown option" in line:
            key = line.split(":", 1)[0]
            line = f"{key}: not an argument of lightning.Trainer (see `vlexp train --help`)"
        errors.append(f"  {line}")


def _check_extra_sets(extra: dict[str, Any], errors: list[str]) -> None:
    from vlexp.eval.extra_sets import EVAL_SETS

    stages = Opt(
        (str, list),
        test=lambda v: set([v] if isinstance(v, str) else v) <= {"val", "test"},
        doc="val, test or a list of them",
    )
    for name, spec in extra.items():
        key = f"eval.extra_sets.{name}"
        if not isinstance(spec, dict):
            errors.append(f"  {key}: expected a mapping with a `name` (an eval set preset)")
            continue
        errors.extend(
            f"  {line}" for line in stages.errors(spec.get("stages", "test"), f"{key}.stages")
        )
        errors.extend(f"  {line}" for line in EVAL_SETS.config_errors(spec, key, extra=("stages",)))


# ------------------------------------------------------------------ component schemas
def _registries() -> list[tuple[str, Any]]:
    """(config key, registry) of every component a training config selects."""
    from vlexp.data.sources import DATASETS
    from vlexp.encoders import ENCODERS
    from vlexp.filters import FILTERS
    from vlexp.objectives import OBJECTIVES
    from vlexp.samplers import SAMPLERS

    return [
        ("data.source", DATASETS),
        ("encoder", ENCODERS),
        ("objective", OBJECTIVES),
        ("sampler", SAMPLERS),
        ("filter", FILTERS),
    ]


def _section(cfg: DictConfig, key: str, errors: list[str]) -> Any:
    """The plain (resolved) value of ``key``; None (with an error line) if it cannot resolve."""
    node = _get(cfg, key)
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as exc:  # an interpolation naming a missing key, a bad resolver, ...
        errors.append(f"  {key}: cannot resolve ({str(exc).splitlines()[0]})")
        return None


def _check_components(cfg: DictConfig, errors: list[str]) -> None:
    """Each selected component's section against its registered schema and its own
    ``checks`` hook, which sees the rest of the run (``context``)."""
    context = {
        "encoder": _section(cfg, "encoder", []),
        "trainer": _section(cfg, "trainer", []),
        "filter": _section(cfg, "filter", []),
        "world_size": _world_size(cfg),
    }
    for key, registry in _registries():
        section = _section(cfg, key, errors)
        if isinstance(section, dict | str):
            lines = registry.config_errors(section, key, context=context)
            errors.extend(f"  {line}" for line in lines)


# ------------------------------------------------------------------ monitored metric
def val_set_names(cfg: DictConfig) -> list[str]:
    """Names of the sets evaluated at validation: the source's own and ``eval.extra_sets``
    whose ``stages`` include ``val``."""
    from vlexp.data.sources import DATASETS

    source = _get(cfg, "data.source")
    name = source.get("name") if OmegaConf.is_dict(source) else None
    eval_names = DATASETS.hook(name, "eval_names")
    plain = OmegaConf.to_container(source, resolve=False) if OmegaConf.is_dict(source) else {}
    options = {**DATASETS.defaults(name), **plain} if eval_names is not None else {}
    names = list(eval_names(options)) if eval_names is not None else []
    extra = _get(cfg, "eval.extra_sets")
    if OmegaConf.is_dict(extra):
        for name, spec in extra.items():
            stages = spec.get("stages", ["test"]) if OmegaConf.is_dict(spec) else ["test"]
            stages = [stages] if isinstance(stages, str) else list(stages or [])
            if "val" in stages:
                names.append(str(name))
    return names


def monitor_choices(cfg: DictConfig) -> list[str]:
    """Metric names validation logs under this config (what ``eval.monitor`` may name)."""
    ks = _get(cfg, "eval.ks")
    ks = [k for k in (ks or []) if _is_int(k)]
    per_set = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks]
    per_set += ["zeroshot_top1", "zeroshot_top5", "finegrained_acc", "finegrained_rank"]
    names = ["val/mean_R@1"]
    for name in val_set_names(cfg):
        names += [f"val/{name}/{m}" for m in per_set]
    return names


def _check_monitor(cfg: DictConfig, errors: list[str]) -> None:
    monitor = _get(cfg, "eval.monitor")
    if monitor is None:
        return
    choices = monitor_choices(cfg)
    if monitor not in choices:
        sets = ", ".join(val_set_names(cfg))
        errors.append(
            f"  eval.monitor={monitor}: not a metric validation logs; expected val/mean_R@1 or "
            f"val/<set>/<metric> with <set> in {{{sets}}} and <metric> one of i2t_R@K, t2i_R@K "
            f"(K in eval.ks), zeroshot_top1, zeroshot_top5, finegrained_acc, finegrained_rank"
        )


# ------------------------------------------------------------------ batch vs dataset
def _world_size(cfg: DictConfig) -> int:
    """Processes of the run when the config says (1 when it is left to the hardware)."""
    devices, nodes = _get(cfg, "trainer.devices"), _get(cfg, "trainer.num_nodes") or 1
    per_node = len(devices) if OmegaConf.is_list(devices) else devices
    per_node = per_node if _is_int(per_node) and per_node >= 1 else 1
    return per_node * (nodes if _is_int(nodes) and nodes >= 1 else 1)


def known_train_size(cfg: DictConfig) -> int | None:
    """Training pairs when cheap to know before reading data: the synthetic split's size,
    or a CSV/TSV table's row count (an upper bound: files may be missing); else None."""
    from vlexp.data.sources import DATASETS

    source = _get(cfg, "data.source")
    if not OmegaConf.is_dict(source):
        return None
    train_size = DATASETS.hook(source.get("name"), "train_size")
    if train_size is None:
        return None
    try:
        options = OmegaConf.to_container(source, resolve=True)
    except Exception:
        return None
    return train_size({**DATASETS.defaults(str(source.get("name"))), **options})


def _check_batch_fits(cfg: DictConfig, errors: list[str]) -> None:
    batch = _get(cfg, "data.batch_size")
    size = known_train_size(cfg)
    if not _is_int(batch) or batch < 1 or size is None:
        return
    world = _world_size(cfg)
    if batch * world > size:
        errors.append(
            f"  data.batch_size={batch}: one global batch ({batch} x {world} processes) is "
            f"larger than the training set ({size} pairs); lower data.batch_size or add data"
        )
