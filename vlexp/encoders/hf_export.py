"""Hand a model with a Hugging Face text tower back to ``transformers`` (``format=hf``).

Writes ``DIR/text/`` (the text encoder and its tokenizer, ``save_pretrained``: what
``AutoModel`` / ``AutoTokenizer.from_pretrained`` load), ``DIR/heads.safetensors`` (the
projections ``text_proj.*`` / ``image_proj.*`` and ``logit_scale``),
``DIR/image_tower.safetensors`` (the image tower's state dict, e.g. timm's names under
``model.``) and ``DIR/vlexp_towers.json`` (pooling, context length, image size and
statistics): a text embedding is ``normalize(text_proj(pool(AutoModel(ids))))``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlexp.encoders.base import HFTextTower

HEADS_FILE = "heads.safetensors"
IMAGE_FILE = "image_tower.safetensors"
TOWERS_FILE = "vlexp_towers.json"


def _plain(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def export_hf(model: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write the folder described in the module docstring; the paths written."""
    from safetensors.torch import save_file

    from vlexp.io import write_atomic, write_text_atomic

    tower = model.text_tower
    if not isinstance(tower, HFTextTower):
        raise ValueError(
            f"format=hf needs a Hugging Face text tower; this model's is {type(tower).__name__}"
        )
    out = Path(out_dir)
    text_dir = out / "text"
    tower.model.save_pretrained(str(text_dir))
    model.tokenizer.save_pretrained(str(text_dir))
    heads = {f"text_proj.{k}": v for k, v in model.text_proj.state_dict().items()}
    heads.update({f"image_proj.{k}": v for k, v in model.image_proj.state_dict().items()})
    heads["logit_scale"] = model.log_logit_scale.detach().reshape(())
    written = {"text": text_dir, "heads": out / HEADS_FILE, "image": out / IMAGE_FILE}
    write_atomic(written["heads"], lambda tmp: save_file(_plain(heads), str(tmp)))
    image_state = _plain(model.image_tower.state_dict())
    write_atomic(written["image"], lambda tmp: save_file(image_state, str(tmp)))
    towers = {
        "text": {"pooling": tower.pooling, "context_length": model.context_length},
        "image": {
            "type": type(model.image_tower).__name__,
            "size": model.image_size,
            "mean": list(model.image_mean),
            "std": list(model.image_std),
        },
        "embed_dim": model.embed_dim,
    }
    written["towers"] = write_text_atomic(out / TOWERS_FILE, json.dumps(towers, indent=2) + "\n")
    return written
