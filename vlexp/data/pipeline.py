"""Image transforms, batch collation (tokenisation happens here, in loader workers) and
the keyed training loader that makes random augmentation independent of RNG state.

Exact resume: every training sample's augmentation (crop, colour jitter, grayscale;
options in :mod:`vlexp.data.augment`) is drawn from its own seed, derived from
``(run seed, epoch, sample index)`` (:func:`augmentation_seed`). The pixels of a sample
therefore do not depend on the number of loader workers, on what was drawn before it,
or on whether the run was interrupted and resumed; a resumed run sees the same pixels
as an uninterrupted one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from vlexp.data.augment import CROP_RATIO, Augment, apply_colour


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the augmentation of sample ``index`` in ``epoch`` of a run."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(epoch), int(index)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


class TrainTransform:
    """Random resized crop (no flips: they would falsify 'left of' captions), optional
    colour jitter and grayscale (``aug``, :class:`~vlexp.data.augment.Augment`), tensor
    conversion and normalisation.

    Called with a ``seed``, every random choice is drawn from that seed alone (the crop
    with torchvision's ``RandomResizedCrop`` algorithm on a private generator state; the
    global RNG is left as it was); without one, from the global torch RNG like
    ``RandomResizedCrop``. Without a crop (``aug.scale`` null) the geometry is the
    evaluation transform's. Colour works on the resized float pixels in ``[0, 1]``; an
    image that draws no colour change gets the same pixels as without colour options.

    With ``fused`` (default), an RGB PIL image is cropped, resized and normalised in one
    pass over its uint8 pixels: a channels-last uint8 view, torch's antialiased bilinear
    resize (the same filter as PIL's, vectorised for uint8) and one multiply-add into
    float32. The pixels equal the PIL path (``resized_crop`` + ``ToTensor`` +
    ``Normalize``) up to uint8 rounding at ~3-4x less CPU per image; other inputs take
    the PIL path.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: Sequence[float] = (0.9, 1.0),
        ratio: Sequence[float] = CROP_RATIO,
        fused: bool = True,
        aug: Augment | None = None,
    ) -> None:
        self.size = [image_size, image_size]
        if aug is None:
            aug = Augment(scale=(float(crop_scale[0]), float(crop_scale[1])), ratio=tuple(ratio))
        self.aug = aug
        self.finish = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        self.normalize = T.Normalize(mean, std)
        self.geometry = T.Compose(
            [T.Resize(image_size, antialias=True), T.CenterCrop(image_size), T.ToTensor()]
        )
        self.fused = fused
        std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def crop_box(self, image: Any, seed: int | None = None) -> tuple[int, int, int, int] | None:
        """``(top, left, height, width)`` of the crop of ``image`` (None: no random crop)."""
        return self.aug.draw(image, seed).box

    def __call__(self, image: Any, seed: int | None = None) -> torch.Tensor:
        draw = self.aug.draw(image, seed)
        if draw.box is None:
            return self.normalize(apply_colour(self.geometry(image), draw))
        if draw.jitter is not None or draw.gray:
            return self.normalize(apply_colour(self._resized(image, draw.box), draw))
        top, left, h, w = draw.box
        if self.fused and isinstance(image, Image.Image) and image.mode == "RGB":
            return self._fused(image, draw.box)
        return self.finish(TF.resized_crop(image, top, left, h, w, self.size, antialias=True))

    def _resized(self, image: Any, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The resized crop as float pixels in ``[0, 1]`` (3, H, W), before normalisation."""
        if self.fused and isinstance(image, Image.Image) and image.mode == "RGB":
            x = self._fused_uint8(image, box)
            if x is not None:
                return x.float().div_(255.0)
        top, left, h, w = box
        return TF.to_tensor(TF.resized_crop(image, top, left, h, w, self.size, antialias=True))

    def _fused_uint8(
        self, image: Image.Image, box: tuple[int, int, int, int]
    ) -> torch.Tensor | None:
        """Crop and resize on uint8 pixels, (3, H, W); None when the box leaves the image."""
        top, left, h, w = box
        with warnings.catch_warnings():  # a read-only view; it is copied right below
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(np.asarray(image))
        crop = pixels[max(top, 0) : top + h, max(left, 0) : left + w]
        if crop.shape[0] != h or crop.shape[1] != w:
            return None
        x = crop.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
        if [h, w] != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True)
        return x[0]

    def _fused(self, image: Image.Image, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Crop, resize and normalise on uint8 pixels (see the class docstring)."""
        x = self._fused_uint8(image, box)
        if x is None:  # box outside the image: the PIL path pads
            top, left, h, w = box
            return self.finish(TF.resized_crop(image, top, left, h, w, self.size, antialias=True))
        out = torch.empty(x.shape, dtype=torch.float32)
        out.copy_(x)
        return out.mul_(self._scale).add_(self._shift)


def image_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    crop_scale: Sequence[float] | None = (0.9, 1.0),
    aug: Augment | None = None,
) -> Callable:
    """Train: :class:`TrainTransform` (random augmentation ``aug``, seedable per sample;
    without ``aug``, a crop of ``crop_scale``), or when nothing is random (``aug.fixed``,
    ``crop_scale=None``) the eval transform (takes and ignores a seed). Eval: resize +
    centre crop. All end with tensor conversion and normalisation."""
    if train and aug is not None and not aug.fixed:
        return TrainTransform(image_size, mean, std, aug=aug)
    if train and aug is None and crop_scale is not None:
        return TrainTransform(image_size, mean, std, crop_scale)
    geo = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    fixed = T.Compose([*geo, T.ToTensor(), T.Normalize(mean, std)])
    return FixedTransform(fixed) if train else fixed


class FixedTransform:
    """A deterministic training transform: ``(image, seed=None)``, the seed unused."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: Any, seed: int | None = None) -> torch.Tensor:
        return self.transform(image)


class KeyedPairs(torch.utils.data.Dataset):
    """A map-style pair source read with ``(epoch, index)`` keys.

    ``pairs[(epoch, i)]`` is ``source[i]`` plus ``aug_seed``: the seed of that sample's
    augmentation in that epoch (:func:`augmentation_seed`). The keys come from
    :class:`KeyedBatches` in the main process, so loader workers (persistent or not)
    always know the current epoch.
    """

    def __init__(self, source: Any, seed: int) -> None:
        self.source = source
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        item = dict(self.source[index])
        item["aug_seed"] = augmentation_seed(self.seed, epoch, index)
        return item


class KeyedBatches(Sampler[list[tuple[int, int]]]):
    """A planned batch sampler's batches as ``(epoch, index)`` keys for :class:`KeyedPairs`.

    ``sampler`` is the planned sampler, so Lightning's ``set_epoch`` (called on
    ``loader.batch_sampler.sampler``) still selects the epoch's plan.
    """

    def __init__(self, planned: Any) -> None:
        self.planned = planned

    @property
    def sampler(self) -> Any:
        return self.planned

    def __len__(self) -> int:
        return len(self.planned)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = int(self.planned.epoch)
        for batch in self.planned:
            yield [(epoch, int(i)) for i in batch]


class PlannedLoader(DataLoader):
    """The training loader of a planned sampler; its position lives in the datamodule.

    The datamodule's ``state_dict`` records the epoch and the number of batches trained,
    and its ``load_state_dict`` makes the sampler skip them, so a run resumed mid-epoch
    continues the plan exactly. ``state_dict``/``load_state_dict`` here are empty: they
    tell Lightning this loader is resumable (which it is), instead of Lightning warning
    that it is not.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to do: the datamodule restores the position."""


class PairCollator:
    """Turns a list of pair items into the batch dict every objective sees.

    Keys: ``image`` (B,3,H,W) float, ``input_ids``/``attention_mask`` (B,L), ``index`` (B,),
    ``label`` (B,), ``tags`` (B,T) padded with -1.
    """

    def __init__(
        self, transform: Callable, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]
    ):
        self.transform = transform
        self.tokenize = tokenize

    def _image(self, item: dict[str, Any]) -> torch.Tensor:
        seed = item.get("aug_seed")
        if seed is None:  # streaming sources: the global RNG
            return self.transform(item["image"])
        return self.transform(item["image"], seed)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([self._image(it) for it in items])
        tokens = self.tokenize([it["caption"] for it in items])
        max_tags = max([len(it.get("tags", ())) for it in items] + [1])
        tags = torch.full((len(items), max_tags), -1, dtype=torch.long)
        for i, it in enumerate(items):
            t = list(it.get("tags", ()))
            if t:
                tags[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return {
            "image": images,
            **tokens,
            "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long),
            "label": torch.as_tensor([it.get("label", -1) for it in items], dtype=torch.long),
            "tags": tags,
        }


class ImageCollator:
    """Collates evaluation images: ``image``, ``label`` and ``index`` (position in the set)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "image": torch.stack([self.transform(it["image"]) for it in items]),
            "label": torch.as_tensor([it.get("label", -1) for it in items], dtype=torch.long),
            "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long),
        }
