"""Tower options applied after any encoder is built: gradient checkpointing, torch.compile.

Both work on the :class:`~vlexp.encoders.base.TwoTower` interface only, so every encoder
choice gets them without code of its own: a tower supports checkpointing when one of its
modules exposes timm's ``set_grad_checkpointing``, Hugging Face's
``activation_checkpointing_enable``/``gradient_checkpointing_enable`` or open_clip's
``set_grad_checkpointing``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vlexp.encoders.base import TwoTower
from vlexp.notices import switched_on

log = logging.getLogger(__name__)

TOWERS = ("image_tower", "text_tower")


def _enable_on(module: nn.Module) -> str | None:
    """Switch checkpointing on for ``module`` if it has a known hook; return the hook used."""
    if getattr(module, "supports_gradient_checkpointing", False):
        # Hugging Face PreTrainedModel (transformers 5 renamed the entry point)
        kwargs = {"use_reentrant": False}
        if hasattr(module, "activation_checkpointing_enable"):
            module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            return "activation_checkpointing_enable"
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return "gradient_checkpointing_enable"
    hook = getattr(module, "set_grad_checkpointing", None)
    if callable(hook):  # timm models and open_clip towers
        hook(True)
        return "set_grad_checkpointing"
    return None


def enable_grad_checkpointing(model: TwoTower) -> dict[str, list[str]]:
    """Turn on activation checkpointing in every tower module that supports it.

    Modules are visited top-down; once a module accepts, its children are left to it.
    Returns ``{tower: ["<module path> (<hook>)", ...]}``. Raises ``ValueError`` when no
    module of either tower supports it (asking for memory savings that silently do not
    happen would be worse); a tower without support is logged as a warning.
    """
    found: dict[str, list[str]] = {}
    for tower_name in TOWERS:
        tower = getattr(model, tower_name)
        done: list[str] = []
        enabled: list[str] = []
        for path, module in tower.named_modules():
            if any(p == "" or path.startswith(p + ".") for p in done):
                continue  # inside a module that already handles its children
            hook = _enable_on(module)
            if hook is not None:
                done.append(path)
                enabled.append(f"{path or '<tower>'} ({hook})")
        found[tower_name] = enabled
    if not any(found.values()):
        raise ValueError(
            "model_opts.grad_checkpointing=true, but neither tower "
            f"({type(model.image_tower).__name__}, {type(model.text_tower).__name__}) has a "
            "module supporting gradient checkpointing (timm set_grad_checkpointing, Hugging "
            "Face gradient_checkpointing_enable, open_clip set_grad_checkpointing). Set "
            "model_opts.grad_checkpointing=false or pick another encoder."
        )
    for tower_name, enabled in found.items():
        if enabled:
            switched_on("gradient checkpointing", f"{tower_name}: {', '.join(enabled)}")
        else:
            log.warning(
                "gradient checkpointing: %s (%s) does not support it; left as is",
                tower_name,
                type(getattr(model, tower_name)).__name__,
            )
    return found


def compile_towers(model: TwoTower, mode: str | None = None, backend: str = "inductor") -> None:
    """``torch.compile`` each tower in place (``nn.Module.compile``).

    In-place compilation keeps parameter names, so checkpoints load with or without it.
    """
    if not hasattr(nn.Module, "compile"):
        raise RuntimeError(
            f"model_opts.compile=true needs torch >= 2.2 (found {torch.__version__})"
        )
    for tower_name in TOWERS:
        getattr(model, tower_name).compile(mode=mode, backend=backend)
    switched_on("torch.compile", f"both towers, mode={mode}, backend={backend}")


def apply_model_opts(model: TwoTower, opts: Mapping[str, Any] | None) -> TwoTower:
    """Apply the ``model_opts`` config block (checkpointing first, then compile)."""
    opts = dict(opts or {})
    if opts.get("grad_checkpointing"):
        enable_grad_checkpointing(model)
    if opts.get("compile"):
        compile_towers(
            model,
            mode=opts.get("compile_mode"),
            backend=str(opts.get("compile_backend") or "inductor"),
        )
    return model
