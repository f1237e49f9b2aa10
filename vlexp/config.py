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

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


class ConfigError(ValueError):
    """A config value is invalid; the message (one line) says which key and what is allowed."""


def exit_on_config_error(exc: ConfigError) -> NoReturn:
    """End a command on a user's config error: the message as one line on stderr, exit 2."""
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _check(
    cfg: DictConfig,
    key: str,
    ok: Callable[[Any], bool],
    allowed: str,
    errors: list[str],
    required: bool = True,
) -> None:
    value = _get(cfg, key)
    if value is None and not required:
        return
    try:
        good = value is not None and ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        errors.append(f"  {key}={value!r}: expected {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    """Raise :class:`ConfigError` listing every invalid value found."""
    e: list[str] = []
    _check_required(cfg, e)
    _check(cfg, "seed", _is_int, "an integer", e)
    _check(cfg, "data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1", e)
    _check(
        cfg, "data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1", e, False
    )
    _check(cfg, "data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0", e)
    _check(cfg, "data.source.name", lambda v: isinstance(v, str) and v, "a data source name", e)
    _check(cfg, "optim.lr", lambda v: _is_num(v) and 0 < v < 1, "a float in (0, 1)", e)
    _check(cfg, "optim.weight_decay", lambda v: _is_num(v) and v >= 0, "a float >= 0", e)
    _check(cfg, "optim.warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0", e)
    _check(
        cfg,
        "optim.fused",
        lambda v: isinstance(v, bool),
        "true, false or null (auto)",
        e,
        required=False,
    )
    _check(
        cfg,
        "optim.accum_freq",
        lambda v: _is_int(v) and v >= 1,
        "an integer >= 1 (micro-batches per step)",
        e,
        required=False,
    )
    _check(cfg, "optim.min_lr_ratio", lambda v: _is_num(v) and 0 <= v <= 1, "a float in [0, 1]", e)
    _check(
        cfg,
        "optim.betas",
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
        "two floats in [0, 1)",
        e,
    )
    _check(cfg, "encoder.name", lambda v: isinstance(v, str) and v, "an encoder name", e)
    _check(cfg, "encoder.embed_dim", lambda v: _is_int(v) and v >= 1, "an integer >= 1", e, False)
    _check(
        cfg,
        "encoder.init_temperature",
        lambda v: _is_num(v) and 0 < v <= 1,
        "a temperature in (0, 1]",
        e,
        False,
    )
    _check(
        cfg, "encoder.max_logit_scale", lambda v: _is_num(v) and v >= 1, "a float >= 1", e, False
    )
    _check(cfg, "objective.name", lambda v: isinstance(v, str) and v, "an objective name", e)
    _check(cfg, "sampler.name", lambda v: isinstance(v, str) and v, "a sampler name", e)
    _check(cfg, "filter.name", lambda v: isinstance(v, str) and v, "a filter name", e)
    _check(cfg, "trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {PRECISIONS}", e)
    _check(cfg, "trainer.accelerator", lambda v: v in ACCELERATORS, f"one of {ACCELERATORS}", e)
    _check(
        cfg,
        "trainer.devices",
        lambda v: (
            v == "auto"
            or (_is_int(v) and (v >= 1 or v == -1))
            or (OmegaConf.is_list(v) and len(v) > 0)
        ),
        "an integer >= 1, -1, 'auto' or a list of device ids",
        e,
    )
    _check(cfg, "trainer.num_nodes", lambda v: _is_int(v) and v >= 1, "an integer >= 1", e, False)
    _check(
        cfg,
        "trainer.max_steps",
        lambda v: _is_int(v) and (v >= 1 or v == -1),
        "an integer >= 1 (or -1 with max_epochs)",
        e,
    )
    _check(
        cfg,
        "trainer.accumulate_grad_batches",
        lambda v: _is_int(v) and v >= 1,
        "an integer >= 1",
        e,
        False,
    )
    _check(
        cfg,
        "trainer.gradient_clip_val",
        lambda v: _is_num(v) and v >= 0,
        "a float >= 0 (0 disables clipping)",
        e,
        False,
    )
    _check(
        cfg,
        "eval.ks",
        lambda v: len(v) > 0 and all(_is_int(k) and k >= 1 for k in v),
        "a non-empty list of integers >= 1",
        e,
    )
    _check(cfg, "eval.monitor_mode", lambda v: v in ("min", "max"), "'min' or 'max'", e)
    _check(
        cfg, "logger.name", lambda v: v in ("wandb", "csv", "none"), "'wandb', 'csv' or 'none'", e
    )
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
    _check_objective_degeneracy(cfg, e)
    _check_components(cfg, e)
    _check_loop(cfg, e)
    _check_monitor(cfg, e)
    _check_batch_fits(cfg, e)
    if e:
        raise ConfigError("Invalid configuration: " + "; ".join(line.strip() for line in e))


def _check_objective_degeneracy(cfg: DictConfig, errors: list[str]) -> None:
    """Refuse objective configs that are mathematically their baseline (see softalign)."""
    obj = _get(cfg, "objective")
    if not isinstance(obj, DictConfig):
        return
    entries = [("objective", obj)]
    terms = obj.get("terms") if obj.get("name") == "composite" else None
    if isinstance(terms, DictConfig):
        entries += [
            (f"objective.terms.{k}", t)
            for k, t in terms.items()
            if isinstance(t, DictConfig) and t.get("weight", 1.0) != 0
        ]
    for key, term in entries:
        if term.get("name") != "softalign":
            continue
        from vlexp.objectives.softalign import config_errors

        opts = OmegaConf.to_container(term, resolve=True)
        encoder = _get(cfg, "encoder")
        enc = OmegaConf.to_container(encoder, resolve=True) if encoder is not None else None
        errors.extend(f"  {key}: {reason}" for reason in config_errors(opts, enc))


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
    """Each selected component's section against its registered schema."""
    for key, registry in _registries():
        section = _section(cfg, key, errors)
        if isinstance(section, dict | str):
            errors.extend(f"  {line}" for line in registry.config_errors(section, key))


# ------------------------------------------------------------------ training loop
def _check_loop(cfg: DictConfig, errors: list[str]) -> None:
    """Validation cadence and crop range (each fails late, mid-training, otherwise)."""
    _check(
        cfg,
        "trainer.val_check_interval",
        lambda v: (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        "an integer >= 1 (steps) or a float in (0, 1] (share of an epoch), or null",
        errors,
        required=False,
    )
    _check(
        cfg,
        "trainer.check_val_every_n_epoch",
        lambda v: _is_int(v) and v >= 1,
        "an integer >= 1 or null",
        errors,
        required=False,
    )
    _check(
        cfg,
        "data.train_crop_scale",
        lambda v: len(v) == 2 and all(_is_num(x) for x in v) and 0 < v[0] <= v[1] <= 1,
        "[lo, hi] with 0 < lo <= hi <= 1 (area share of the random crop), or null",
        errors,
        required=False,
    )
    errors.extend(eval_errors(cfg))


def eval_errors(cfg: DictConfig) -> list[str]:
    """Problems of the ``eval`` section's retrieval options (checked by training and by
    ``vlexp eval`` before any model or data is built)."""
    from vlexp.eval.metrics.retrieval import TIE_RULES

    e: list[str] = []
    _check(cfg, "eval.chunk_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1", e, False)
    _check(
        cfg, "eval.retrieval_ties", lambda v: v in TIE_RULES, f"one of {list(TIE_RULES)}", e, False
    )
    _check(
        cfg,
        "eval.retrieval_identical_captions",
        lambda v: isinstance(v, bool),
        "true or false",
        e,
        False,
    )
    return e


# ------------------------------------------------------------------ monitored metric
def val_set_names(cfg: DictConfig) -> list[str]:
    """Names of the sets evaluated at validation: the source's own and ``eval.extra_sets``
    whose ``stages`` include ``val``."""
    source = _get(cfg, "data.source.name")
    names = (
        ["synthetic"]
        if source == "synthetic"
        else [_get(cfg, "data.source.eval_name") or "heldout"]
    )
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
    source = _get(cfg, "data.source")
    if not OmegaConf.is_dict(source):
        return None
    cap = source.get("num_train")
    cap = cap if _is_int(cap) and cap >= 1 else None
    if source.get("name") == "synthetic":
        return cap
    if source.get("name") == "csv":
        rows = _table_rows(source.get("path"))
        return rows if cap is None or rows is None else min(cap, rows)
    return None


def _table_rows(path: Any) -> int | None:
    """Data rows of a ``.csv``/``.tsv`` file (line count minus the header); None otherwise."""
    if not isinstance(path, str) or Path(path).suffix.lower() not in (".csv", ".tsv"):
        return None
    try:
        with open(Path(path).expanduser(), "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            f.seek(max(f.tell() - 1, 0))
            last = f.read(1)
    except OSError:
        return None  # the source reports a missing table itself
    lines += 1 if last not in (b"\n", b"") else 0  # a last row without a newline
    return max(lines - 1, 0)


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
