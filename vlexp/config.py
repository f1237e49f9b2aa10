"""Validation of a composed config before any data or model is built.

Every check names the key, the offending value and what is allowed, so a typo costs
seconds, not a crashed job an hour in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


class ConfigError(ValueError):
    """A config value is invalid; the message says which key and what is allowed."""


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
        e.append(
            f"  trainer.accumulate_grad_batches={acc}: plain gradient accumulation changes a "
            "contrastive loss (negatives come only from each micro-batch), so vlexp refuses "
            "it; raise data.batch_size or use more devices instead"
        )
    precision, accelerator = str(_get(cfg, "trainer.precision")), _get(cfg, "trainer.accelerator")
    if precision == "64-true" and accelerator == "mps":
        e.append(
            "  trainer.precision=64-true: Apple MPS has no float64; use 32-true on mps "
            "(or trainer.accelerator=cpu)"
        )
    _check_objective_degeneracy(cfg, e)
    if e:
        raise ConfigError("Invalid configuration:\n" + "\n".join(e))


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
