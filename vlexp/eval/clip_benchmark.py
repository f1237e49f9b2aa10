"""Evaluate a trained vlexp checkpoint with CLIP_benchmark (``clip_benchmark`` package).

CLIP_benchmark calls ``model.encode_image(images)``, ``model.encode_text(tokenizer(texts))``
with a tokenizer returning one tensor, and builds its datasets with the model's image
``transform``. :func:`wrap` turns a :class:`~vlexp.encoders.base.TwoTower` into that triple:

* :class:`ClipBenchmarkModel`: ``encode_image`` / ``encode_text`` (L2-normalised, as CLIP_benchmark
  expects) around the two towers;
* :class:`ClipBenchmarkTokenizer`: ``tokenizer(list[str]) -> LongTensor (B, 2, L)``: token ids
  and attention mask packed in one tensor, so ``.to(device)`` moves both and the text tower
  sees the exact mask (plain ``(B, L)`` ids also work: the mask is then ``ids != pad id``);
* :func:`preprocess` : vlexp's evaluation transform (resize, centre crop, normalise with
  the image tower's size / mean / std).

:func:`vlexp.cli.clip_benchmark.load_checkpoint` rebuilds the model of a
``python -m vlexp.run`` checkpoint from its run config (``<run dir>/.hydra/config.yaml``);
:func:`vlexp.cli.clip_benchmark.register` adds the model type ``vlexp`` to CLIP_benchmark
so its command line evaluates vlexp checkpoints::

    python -m vlexp.cli.clip_benchmark eval --pretrained outputs/<run>/checkpoints/last.ckpt \\
        --dataset cifar10 --dataset_root /data/cifar10 --task zeroshot_classification

(``--model_type vlexp`` is implied; ``--model`` may name the run's config file.) See
docs/CLIP_BENCHMARK.md, including how CLIP_benchmark's metric names map to vlexp's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vlexp.data.pipeline import image_transform
from vlexp.encoders.base import TwoTower

MODEL_TYPE = "vlexp"


class ClipBenchmarkTokenizer:
    """Tokenizer with CLIP_benchmark's interface: ``tokenizer(texts) -> LongTensor``.

    Returns ``(B, 2, L)``: ``[:, 0]`` token ids, ``[:, 1]`` attention mask (``L`` is the
    model's context length).
    """

    def __init__(self, model: TwoTower) -> None:
        self.model = model

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tok = self.model.tokenize(list(texts))
        return torch.stack([tok["input_ids"].long(), tok["attention_mask"].long()], dim=1)


class ClipBenchmarkModel(nn.Module):
    """A :class:`TwoTower` with CLIP_benchmark's ``encode_image`` / ``encode_text``."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model
        tokenizer = getattr(model, "tokenizer", None)
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or 0)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings ``(B, D)`` of preprocessed images ``(B, 3, H, W)``."""
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings ``(B, D)`` of :class:`ClipBenchmarkTokenizer` output (or plain ids)."""
        if tokens.dim() == 3 and tokens.shape[1] == 2:
            ids, mask = tokens[:, 0], tokens[:, 1]
        elif tokens.dim() == 2:
            ids, mask = tokens, (tokens != self.pad_token_id).long()
        else:
            raise ValueError(
                f"encode_text expects (B, 2, L) packed ids+mask or (B, L) ids, got {tuple(tokens.shape)}"
            )
        return self.model.encode_text(ids, mask, normalize=normalize)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image embeddings, text embeddings)``."""
        return self.encode_image(images), self.encode_text(tokens)


def preprocess(model: TwoTower) -> Callable[[Any], torch.Tensor]:
    """vlexp's evaluation transform for ``model`` (PIL image -> normalised tensor)."""
    return image_transform(model.image_size, model.image_mean, model.image_std, train=False)


def wrap(
    model: TwoTower,
) -> tuple[ClipBenchmarkModel, Callable[[Any], torch.Tensor], ClipBenchmarkTokenizer]:
    """``(model, transform, tokenizer)`` as CLIP_benchmark's loaders return them."""
    return ClipBenchmarkModel(model).eval(), preprocess(model), ClipBenchmarkTokenizer(model)


def _topk_accuracy(
    output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)
) -> list[float]:
    """CLIP_benchmark's ``accuracy`` (fraction of rows whose target is among the top-k
    logits), returning Python floats without NumPy's size-1 array -> float conversion."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def ensure_compat() -> bool:
    """Make CLIP_benchmark's zero-shot classification work with NumPy >= 2.4.

    ``clip_benchmark.metrics.zeroshot_classification.accuracy`` (1.6.2, the latest release)
    calls ``float()`` on a 1-element array, which NumPy 2.4 turned into a TypeError. When
    that happens, the function is replaced by :func:`_topk_accuracy` (same definition).
    Returns True when the patch was applied.
    """
    from clip_benchmark.metrics import zeroshot_classification as zc

    if zc.accuracy is _topk_accuracy:
        return False
    try:
        zc.accuracy(torch.tensor([[0.0, 1.0]]), torch.tensor([1]), topk=(1,))
    except TypeError:
        zc.accuracy = _topk_accuracy
        return True
    return False
