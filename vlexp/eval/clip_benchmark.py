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

:func:`load_checkpoint` rebuilds the model of a ``python -m vlexp.run`` checkpoint from its
run config (``<run dir>/.hydra/config.yaml``); :func:`register` adds the model type
``vlexp`` to CLIP_benchmark so its command line evaluates vlexp checkpoints::

    python -m vlexp.eval.clip_benchmark eval --pretrained outputs/<run>/checkpoints/last.ckpt \\
        --dataset cifar10 --dataset_root /data/cifar10 --task zeroshot_classification

(``--model_type vlexp`` is implied; ``--model`` may name the run's config file.) See
docs/CLIP_BENCHMARK.md, including how CLIP_benchmark's metric names map to vlexp's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlexp.data.pipeline import image_transform
from vlexp.encoders.base import TwoTower
from vlexp.io import load_torch_file

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


# --------------------------------------------------------------------- checkpoints
def resolve_checkpoint(pretrained: str | os.PathLike) -> Path:
    """A ``.ckpt`` path, or a run directory (its ``checkpoints/best.ckpt``, else ``last.ckpt``)."""
    p = Path(pretrained).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise FileNotFoundError(
            f"run directory {p} has no checkpoints/best.ckpt or checkpoints/last.ckpt"
        )
    raise FileNotFoundError(
        f"--pretrained {pretrained}: no such checkpoint file or run directory (give the .ckpt "
        "written by python -m vlexp.run, or its run directory)"
    )


def run_config_path(ckpt: Path, config: str | os.PathLike | None = None) -> Path:
    """The run config of ``ckpt``: ``config`` when given, else ``<run dir>/.hydra/config.yaml``
    (the checkpoint lives in ``<run dir>/checkpoints/``)."""
    path = (
        Path(config).expanduser()
        if config
        else ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"no run config at {path}: pass the config of the run that wrote {ckpt} "
            "(its .hydra/config.yaml) as --model PATH (CLI) or config=PATH"
        )
    return path


def load_two_tower(
    ckpt: str | os.PathLike,
    config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> TwoTower:
    """The trained :class:`TwoTower` of a vlexp checkpoint (rebuilt from the run's encoder
    config, weights loaded strictly), in eval mode on ``device``."""
    from omegaconf import OmegaConf

    from vlexp.encoders import ENCODERS

    path = resolve_checkpoint(ckpt)
    cfg = OmegaConf.load(run_config_path(path, config))
    state = load_torch_file(path, "checkpoint", mmap=True)  # tensors and plain values only
    if isinstance(state, dict):
        state = state.get("state_dict", state)
    weights = (
        {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if isinstance(state, dict)
        else {}
    )
    if not weights:
        raise ValueError(f"{path} holds no 'model.*' weights; is it a vlexp checkpoint?")
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval()


def load_checkpoint(
    model_name: str = MODEL_TYPE,
    pretrained: str = "",
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ClipBenchmarkModel, Callable[[Any], torch.Tensor], ClipBenchmarkTokenizer]:
    """CLIP_benchmark loader (``load_clip`` signature): ``pretrained`` is the checkpoint or
    run directory; ``model_name`` a run config path, or anything else (e.g. ``vlexp``) to
    use the run directory's ``.hydra/config.yaml``. ``cache_dir`` is unused."""
    config = model_name if model_name and Path(model_name).expanduser().is_file() else None
    model = load_two_tower(pretrained, config, device)
    wrapped, transform, tokenizer = wrap(model)
    return wrapped.to(device), transform, tokenizer


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


def register() -> None:
    """Add the ``vlexp`` model type to CLIP_benchmark (its CLI's ``--model_type`` choices)
    and apply :func:`ensure_compat`."""
    import clip_benchmark.models as cbm

    ensure_compat()
    cbm.TYPE2FUNC[MODEL_TYPE] = load_checkpoint
    if MODEL_TYPE not in cbm.MODEL_TYPES:
        cbm.MODEL_TYPES.append(MODEL_TYPE)  # the CLI's argparse choices are this list


def main(argv: Sequence[str] | None = None) -> None:
    """CLIP_benchmark's command line with the ``vlexp`` model type registered (and chosen
    by default for ``eval``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    register()
    if args and args[0] == "eval":
        if not any(a == "--model_type" or a.startswith("--model_type=") for a in args):
            args += ["--model_type", MODEL_TYPE]
        if not any(a == "--model" or a.startswith("--model=") for a in args):
            args += ["--model", MODEL_TYPE]
    from clip_benchmark import cli

    old = sys.argv
    sys.argv = ["clip_benchmark", *args]
    try:
        cli.main()
    finally:
        sys.argv = old


if __name__ == "__main__":
    main()
