"""Pre-trained Hugging Face text towers, loaded from local files only.

:func:`resolve_text_model` turns ``encoder.text.model`` into a local folder without any
network access (a folder on disk, or a repository already in the local Hugging Face
cache) and fails at once, saying how to fix the config, for anything else.
:func:`load_text_tower` loads the model with ``local_files_only=True`` and wraps it in a
:class:`PretrainedTextTower` (CLS or masked-mean pooling, freezable by blocks).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import nn

from vlexp.encoders.base import HFTextTower
from vlexp.encoders.freezing import FreezableMixin, groups_from_blocks, largest_module_list
from vlexp.notices import LoadCounts, loaded_weights

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class PretrainedTextTower(FreezableMixin, HFTextTower):
    """A Hugging Face encoder with CLS / mean pooling whose blocks are its layer stack."""

    @property
    def output_dim(self) -> int:
        """Width of the pooled feature (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    def param_groups(self) -> list[list[str]]:
        """[embeddings, layer_1, ..., layer_N]; a final norm joins the last layer."""
        num_layers = getattr(self.model.config, "num_hidden_layers", None)
        blocks = largest_module_list(self.model, num_layers)
        return [[f"model.{n}" for n in g] for g in groups_from_blocks(self.model, blocks)]


def _not_local_message(name: str, where: str) -> str:
    """One line saying that ``name`` is not local and how to make it so."""
    return (
        f"`{where}={name}` is not a local folder (nor a repository in the local Hugging Face "
        "cache) and vlexp never downloads: save it once elsewhere with "
        f"AutoModel/AutoTokenizer.from_pretrained('{name}').save_pretrained(dir) and set "
        f"{where}=/path/to/dir"
    )


def resolve_text_model(
    name_or_path: str | os.PathLike | None, where: str = "encoder.text.model"
) -> Path:
    """Local folder of a Hugging Face model: a path on disk or an already cached hub name.

    Never touches the network. Raises ``FileNotFoundError`` with instructions otherwise.
    """
    if name_or_path in (None, ""):
        raise ValueError(
            f"{where} is not set: give a local folder holding a Hugging Face text model "
            "(config.json + weights + tokenizer files), e.g. one written by "
            f"AutoModel.save_pretrained(dir), as {where}=/path/to/dir"
        )
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{where}={text}: the folder has no config.json, so it is not a Hugging Face "
                "model folder. Point it at a folder written by AutoModel.save_pretrained(dir)."
            )
        return path
    if _REPO_ID.fullmatch(text):
        from huggingface_hub import snapshot_download

        try:  # the local cache only: local_files_only never opens a connection
            cached = Path(snapshot_download(text, local_files_only=True))
        except Exception:  # not cached (or not a valid repository id)
            cached = None
        if cached is not None and (cached / "config.json").is_file():
            return cached
    raise FileNotFoundError(_not_local_message(text, where))


def load_text_tower(folder: Path, pooling: str = "cls") -> PretrainedTextTower:
    """Load the encoder in ``folder`` (``local_files_only``) and wrap it with ``pooling``.

    The model's own pooler (e.g. BERT's tanh [CLS] layer) is removed: vlexp pools the last
    hidden states itself, and an unused trainable pooler would break DDP. For
    encoder-decoder models (T5, ...) only the encoder is kept.
    """
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True
        )
    except Exception as err:
        raise RuntimeError(
            f"could not load a Hugging Face model from '{folder}' offline ({err}). The folder "
            "must hold config.json and the weights (model.safetensors or pytorch_model.bin), "
            "as written by AutoModel.save_pretrained(dir)."
        ) from err
    missing = len(info.get("missing_keys") or ()) + len(info.get("mismatched_keys") or ())
    counts = LoadCounts(
        len(model.state_dict()) - missing, missing, len(info.get("unexpected_keys") or ())
    )
    loaded_weights(folder, f"text tower ({type(model).__name__})", counts)
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    return PretrainedTextTower(model, pooling=pooling)


def check_context_length(tower: PretrainedTextTower, context_length: int, where: str) -> None:
    """Raise if ``context_length`` exceeds the text model's position embeddings."""
    max_pos = getattr(tower.model.config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and context_length > max_pos:
        raise ValueError(
            f"{where}.context_length={context_length} exceeds the text model's "
            f"max_position_embeddings={max_pos}; use context_length <= {max_pos}."
        )
