"""Cached frozen trunks: compute a tower's frozen lower layers once per training sample.

When a tower trains only its top (``freeze: last_n`` or ``all``) and its training input is
deterministic (text always; images only with ``aug=none``), the frozen trunk maps sample
``i`` to the same tensor every step. :class:`TrunkCache` stores it in a memory-mapped
file the first time ``i`` is drawn and afterwards runs only the trainable top, with the
same gradients as the uncached run. ``encoder.trunk_cache``: ``auto`` caches what
qualifies, ``true`` says in one line why a tower cannot be cached. Supported towers, the
cache key and why a partly trained tower gains less: docs/DESIGN.md ("Cached trunks").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlexp.data.augment import Augment
from vlexp.encoders.patch_dropout import has_patch_dropout
from vlexp.encoders.tower_splits import (
    TowerSplit,
    WholeSplit,
    frozen_block_count,
    image_split,
    text_split,
    whole_split,
)
from vlexp.io import file_lock, write_atomic, write_json_atomic
from vlexp.notices import switched_on
from vlexp.registry import Opt

__all__ = ["TrunkCache", "TrunkCacheError", "build_trunk_cache", "frozen_block_count"]

log = logging.getLogger("vlexp")

TRUNK_CACHE_MODES = ("auto", "true", "false")
TRUNK_CACHE_OPT = Opt(choices=(*TRUNK_CACHE_MODES, True, False))
CACHE_FORMAT = 1


class TrunkCacheError(ValueError):
    """``encoder.trunk_cache=true`` cannot be honoured (the message says why and what to do)."""


def check_mode(mode: Any) -> str:
    """Normalise ``encoder.trunk_cache`` (``auto``/``true``/``false`` or a bool)."""
    text = str(mode).lower()
    if text not in TRUNK_CACHE_MODES:
        raise ValueError(
            f"encoder.trunk_cache must be one of {list(TRUNK_CACHE_MODES)}, got {mode!r}"
        )
    return text


# --------------------------------------------------------------------- fingerprints


def weights_fingerprint(modules: Sequence[nn.Module]) -> str:
    """SHA-1 over the names, shapes, dtypes and values of the modules' tensors."""
    h = hashlib.sha1()
    for i, module in enumerate(modules):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{i}.{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_fingerprint(train_set: Any, described_by: Mapping[str, Any]) -> str:
    """SHA-1 of the train set's size, its captions (when it lists them) and the config
    that built it (source options, filter, seed: what fixes item ``i``'s content)."""
    h = hashlib.sha1(json.dumps(dict(described_by), sort_keys=True, default=str).encode())
    h.update(f"n={len(train_set)}".encode())
    captions = getattr(train_set, "captions", None)
    if captions is not None:
        for caption in captions:
            h.update(caption.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------- the row store


class RowStore:
    """A memory-mapped float32 array ``(num_rows, *shape)`` with a per-row filled flag.

    Files (in ``folder``): ``rows.npy``, ``filled.npy``, ``meta.json`` (written last:
    a folder without it is incomplete and is rebuilt). Opened lazily in each process.
    """

    def __init__(self, folder: Path, num_rows: int, shape: tuple[int, ...], meta: dict) -> None:
        self.folder = Path(folder)
        self.num_rows = int(num_rows)
        self.shape = tuple(int(s) for s in shape)
        self.meta = dict(meta)
        self._rows: np.memmap | None = None
        self._filled: np.memmap | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rows": None, "_filled": None}

    def _create(self) -> None:
        shape = (self.num_rows, *self.shape)
        for name, dtype, dims in (
            ("rows.npy", np.float32, shape),
            ("filled.npy", np.uint8, shape[:1]),
        ):
            write_atomic(
                self.folder / name,
                lambda tmp, d=dtype, s=dims: np.lib.format.open_memmap(tmp, "w+", d, s).flush(),
            )
        write_json_atomic(self.folder / "meta.json", {"format": CACHE_FORMAT, **self.meta})

    def open(self) -> None:
        """Create the files once (under a lock, atomically) and map them."""
        if self._rows is not None:
            return
        with file_lock(self.folder.parent / f"{self.folder.name}.lock"):
            if not (self.folder / "meta.json").is_file():
                self._create()
        self._rows = np.load(self.folder / "rows.npy", mmap_mode="r+")
        self._filled = np.load(self.folder / "filled.npy", mmap_mode="r+")
        if self._rows.shape != (self.num_rows, *self.shape):
            raise RuntimeError(f"trunk cache {self.folder} has shape {self._rows.shape}")

    def filled(self, index: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the rows ``index`` hold values."""
        self.open()
        return self._filled[index].astype(bool)  # type: ignore[index]

    def write(self, index: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` at rows ``index`` and then mark them filled."""
        self.open()
        self._rows[index] = values  # type: ignore[index]
        self._filled[index] = 1  # type: ignore[index]

    def read(self, index: np.ndarray) -> np.ndarray:
        """A copy of rows ``index``."""
        self.open()
        return np.asarray(self._rows[index])  # type: ignore[index]


class CachedTrunk:
    """One tower's split plus its row store: ``features(index, *inputs)`` -> trunk output."""

    def __init__(self, split: TowerSplit, store: RowStore) -> None:
        self.split = split
        self.store = store
        self.rows_computed = 0

    def features(self, index: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """Trunk outputs of samples ``index``: stored rows, missing ones computed and stored."""
        idx = index.detach().cpu().numpy().astype(np.int64)
        missing = ~self.store.filled(idx)
        if missing.any():
            rows = torch.as_tensor(np.flatnonzero(missing), device=inputs[0].device)
            with torch.no_grad():
                out = self.split.trunk(*(x.index_select(0, rows) for x in inputs))
            self.store.write(idx[missing], out.float().cpu().numpy())
            self.rows_computed += int(missing.sum())
        return torch.from_numpy(self.store.read(idx)).to(inputs[0].device)


class TrunkCache:
    """The cached trunks of a :class:`~vlexp.encoders.base.TwoTower` (either may be ``None``).

    :meth:`encode` returns the same normalised embeddings as ``model.encode_image`` /
    ``model.encode_text`` on a training batch (keys ``image``, ``input_ids``,
    ``attention_mask``, ``index``). With ``trim_padding`` the text top runs only up to
    the batch's longest caption: padded positions are masked out of attention and of
    the pooling, so without dropout this changes nothing but float rounding. Active
    dropout in the top would draw other masks for the shorter tensors, so ``None``
    (auto) trims only when no dropout in the text tower is active.
    """

    def __init__(
        self,
        image: CachedTrunk | None,
        text: CachedTrunk | None,
        trim_padding: bool | None = None,
    ) -> None:
        self.image = image
        self.text = text
        self.trim_padding = trim_padding

    def _trim(self, model: Any) -> bool:
        if self.trim_padding is not None:
            return self.trim_padding
        return not any(
            m.training and m.p > 0 for m in model.text_tower.modules() if isinstance(m, nn.Dropout)
        )

    def encode(self, model: Any, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, text) embeddings of ``batch``, image first (as the uncached step)."""
        if self.image is None:
            image = model.encode_image(batch["image"])
        else:
            images = batch["image"]
            dtype = next(model.image_tower.parameters()).dtype  # as encode_image casts pixels
            if images.is_floating_point() and images.dtype != dtype:
                images = images.to(dtype)
            feats = self.image.features(batch["index"], images)
            feats = feats.to(next(model.image_proj.parameters()).dtype)
            image = F.normalize(model.image_proj(self.image.split.top(feats)), dim=-1)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if self.text is None:
            text = model.encode_text(ids, mask)
        else:
            feats = self.text.features(batch["index"], ids, mask)
            feats = feats.to(next(model.text_proj.parameters()).dtype)
            if feats.dim() == 3 and self._trim(model):  # padded keys are masked out: drop them
                keep = max(int(mask.sum(1).max()), 1)
                if int(mask[:, :keep].sum()) == int(mask.sum()):  # right padding only
                    feats, ids, mask = feats[:, :keep], ids[:, :keep], mask[:, :keep]
            text = F.normalize(model.text_proj(self.text.split.top(feats, ids, mask)), dim=-1)
        return image, text


# --------------------------------------------------------------------- building


@dataclass(frozen=True)
class TrunkInputs:
    """What fixes the trunk inputs of the training samples."""

    num_samples: int
    dataset: str  # dataset fingerprint
    images_deterministic: bool  # no random crop / flip for training images
    image_preprocessing: Mapping[str, Any]  # size, mean, std
    text_preprocessing: Mapping[str, Any]  # context length, tokenizer
    why_not_images: str = "the training images are randomly cropped"


def _store(
    side: str, split: TowerSplit, inputs: TrunkInputs, shape: tuple[int, ...], cache_dir: Path
) -> RowStore:
    prep = inputs.image_preprocessing if side == "image" else inputs.text_preprocessing
    meta = {
        "tower": side,
        "dataset": inputs.dataset,
        "weights": weights_fingerprint(split.trunk_modules()),
        "frozen_blocks": split.frozen_blocks,
        "preprocessing": dict(prep),
        "shape": list(shape),
        "num_samples": inputs.num_samples,
    }
    key = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return RowStore(cache_dir / "trunks" / f"{side}-{key[:20]}", inputs.num_samples, shape, meta)


@torch.no_grad()
def _sample_shape(split: TowerSplit, *example: torch.Tensor) -> tuple[int, ...]:
    return tuple(split.trunk(*example).shape[1:])


def build_trunk_cache(
    model: Any, mode: Any, inputs: TrunkInputs, cache_dir: str | Path
) -> TrunkCache | None:
    """The :class:`TrunkCache` for ``model`` under ``encoder.trunk_cache=mode``, or ``None``.

    Raises :class:`TrunkCacheError` (one line) when ``mode`` is ``true`` and a tower with
    frozen layers cannot be cached.
    """
    mode = check_mode(mode)
    if mode == "false":
        return None
    cache_dir = Path(cache_dir)
    sides: dict[str, CachedTrunk | None] = {"image": None, "text": None}
    device = next(model.parameters()).device
    for side in ("image", "text"):
        tower = model.image_tower if side == "image" else model.text_tower
        frozen = frozen_block_count(tower) if hasattr(tower, "param_groups") else None
        split = whole_split(tower)
        if split is None:
            split = image_split(tower) if side == "image" else text_split(tower)
        reason = None
        if frozen is None:
            continue  # nothing frozen below a trainable part: nothing to cache
        if side == "image" and has_patch_dropout(tower):
            reason = "the image tower drops a random share of its patches at every step"
        elif split is None:
            reason = f"the {side} tower's architecture has no supported trunk/top split"
        elif inputs.num_samples <= 0:
            reason = "the train source streams (no stable sample index to key rows by)"
        elif side == "image" and not inputs.images_deterministic:
            reason = f"{inputs.why_not_images}; set aug=none to train on fixed images"
        if reason is not None:
            if mode == "true":
                raise TrunkCacheError(
                    f"encoder.trunk_cache=true but the {side} trunk cannot be cached: {reason} "
                    "(or use encoder.trunk_cache=auto to cache only what qualifies)"
                )
            log.info("trunk cache: %s tower uncached (%s)", side, reason)
            continue
        assert split is not None
        if side == "image":
            size = int(inputs.image_preprocessing["size"])
            shape = _sample_shape(split, torch.zeros(1, 3, size, size, device=device))
        else:
            length = int(inputs.text_preprocessing["context_length"])
            ids = torch.zeros(1, length, dtype=torch.long, device=device)
            shape = _sample_shape(split, ids, torch.ones_like(ids))
        store = _store(side, split, inputs, shape, cache_dir)
        sides[side] = CachedTrunk(split, store)
        what = (
            "frozen whole"
            if isinstance(split, WholeSplit)
            else f"{split.frozen_blocks} frozen blocks"
        )
        switched_on(
            "trunk cache",
            f"{side} tower, {what}, cached per sample {shape} in {store.folder}",
        )
    if sides["image"] is None and sides["text"] is None:
        return None
    return TrunkCache(sides["image"], sides["text"])


def _num_samples(train_set: Any) -> int:
    """Number of map-style training samples; 0 for a streaming source."""
    if isinstance(train_set, torch.utils.data.IterableDataset) or not hasattr(
        train_set, "__getitem__"
    ):
        return 0
    try:
        return len(train_set)
    except TypeError:
        return 0


def trunk_cache_for_run(model: Any, cfg: Any, train_set: Any) -> TrunkCache | None:
    """The trunk cache of a composed run config (``encoder.trunk_cache``), or ``None``.

    Reads ``data.source``, ``aug`` (images are cached only with ``aug.fixed``), ``filter``, ``seed`` and
    ``paths.cache_dir`` from ``cfg``; ``model`` must already be on its training device.
    """
    mode = getattr(model, "trunk_cache_mode", "false")
    if check_mode(mode) == "false":
        return None
    from omegaconf import OmegaConf

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if node is not None else None

    data = plain(cfg.data)
    aug = Augment.from_config(plain(cfg.get("aug")))
    n = _num_samples(train_set)
    described = {"source": data.get("source"), "filter": plain(cfg.get("filter")), "seed": cfg.seed}
    inputs = TrunkInputs(
        num_samples=n,
        dataset=dataset_fingerprint(train_set, described) if n else "",
        images_deterministic=aug.fixed,
        image_preprocessing={
            "size": model.image_size,
            "mean": list(model.image_mean),
            "std": list(model.image_std),
            "transform": "resize+center_crop",
        },
        text_preprocessing={
            "context_length": model.context_length,
            "tokenizer": type(model.tokenizer).__name__,
            "vocab": getattr(model.tokenizer, "vocab_size", None),
        },
        why_not_images=f"aug={plain(cfg.get('aug'))} changes training images at random",
    )
    return build_trunk_cache(model, mode, inputs, cfg.paths.cache_dir)
