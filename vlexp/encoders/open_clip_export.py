"""Hand an ``encoder=open_clip`` model back to open_clip: its weights and model config.

:func:`open_clip_state_dict` renames the towers' tensors to open_clip's ``CLIP`` layout
(text tower at the top level, as open_clip's released checkpoints) and turns
:class:`~vlexp.encoders.base.TwoTower`'s linear projections back into open_clip's
``proj`` / ``text_projection`` matrices (``x @ proj``, so the transposed weights) and its
temperature into ``logit_scale``. :func:`export_open_clip` writes the folder open_clip
reads with ``open_clip.create_model_and_transforms("local-dir:DIR")``:
``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``; the weights file alone also loads with
``pretrained=FILE`` under an architecture name whose config is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def _projection(proj: nn.Module, what: str) -> torch.Tensor | None:
    """open_clip's ``in x out`` matrix of a bias-free linear projection (None: none)."""
    if isinstance(proj, nn.Identity):
        return None  # the tower projects itself (e.g. a ResNet's attention pool)
    if not isinstance(proj, nn.Linear) or proj.bias is not None:
        raise ValueError(
            f"the {what} projection is {type(proj).__name__}, not open_clip's bias-free "
            "linear map; only encoder=open_clip models export to open_clip"
        )
    return proj.weight.detach().t().contiguous().clone()


def open_clip_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The weights of an ``encoder=open_clip`` :class:`TwoTower` under open_clip's
    ``CLIP`` names (what ``open_clip.create_model(...).load_state_dict`` takes)."""
    if getattr(model, "open_clip_config", None) is None:
        raise ValueError("only an encoder=open_clip model exports to open_clip")
    state = {f"visual.{k}": v for k, v in model.image_tower.model.state_dict().items()}
    state.update(model.text_tower.text.state_dict())
    image_proj = _projection(model.image_proj, "image")
    if image_proj is not None:
        state["visual.proj"] = image_proj
    text_proj = _projection(model.text_proj, "text")
    if text_proj is not None:
        state["text_projection"] = text_proj
    state["logit_scale"] = model.log_logit_scale.detach().reshape(())
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def open_clip_config(model: Any) -> dict[str, Any]:
    """``open_clip_config.json`` of the model: its open_clip model config and the image
    statistics it was trained with."""
    return {
        "model_cfg": dict(model.open_clip_config),
        "preprocess_cfg": {"mean": list(model.image_mean), "std": list(model.image_std)},
    }


def export_open_clip(model: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` into ``out_dir``."""
    from safetensors.torch import save_file

    from vlexp.io import write_atomic, write_text_atomic

    state = open_clip_state_dict(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, config = out / WEIGHTS_FILE, out / CONFIG_FILE
    write_atomic(weights, lambda tmp: save_file(state, str(tmp)))
    write_text_atomic(config, json.dumps(open_clip_config(model), indent=2) + "\n")
    return {"weights": weights, "config": config}
