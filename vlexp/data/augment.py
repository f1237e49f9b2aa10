"""Training-image augmentation options (the ``aug`` config group) and their random draws.

:class:`Augment` holds the random resized crop (``scale``, ``ratio``), colour jitter
(``color_jitter`` = brightness, contrast, saturation, hue, applied with probability
``color_jitter_prob``) and grayscale (probability ``gray_scale_prob``); no flips, since
they would falsify "left of" captions. :data:`AUG_SCHEMA` declares each option once
(type, range, doc) for :mod:`vlexp.config`. :meth:`Augment.draw` takes every random
choice of one image from one seed (the sample's ``(seed, epoch, index)`` seed), crop
first, so a resumed run redraws the same pixels and enabling colour never moves a crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vlexp.registry import Opt, check_options

CROP_RATIO = (0.9, 1.1)


def _jitter_ok(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return v >= 0
    return len(v) == 4 and all(float(x) >= 0 for x in v[:3]) and 0 <= float(v[3]) <= 0.5


AUG_SCHEMA: dict[str, Opt] = {
    "scale": Opt(
        list,
        nullable=True,
        test=lambda v: len(v) == 2 and 0 < float(v[0]) <= float(v[1]) <= 1,
        doc="[lo, hi] with 0 < lo <= hi <= 1 (area share of the random crop; no crop: null)",
    ),
    "ratio": Opt(
        list,
        test=lambda v: len(v) == 2 and 0 < float(v[0]) <= float(v[1]),
        doc="[lo, hi] with 0 < lo <= hi (aspect ratio range of the random crop)",
    ),
    "color_jitter": Opt(
        (float, list),
        nullable=True,
        test=_jitter_ok,
        doc="[brightness, contrast, saturation, hue] (each >= 0, hue <= 0.5) or one number "
        "for the first three (off: null)",
    ),
    "color_jitter_prob": Opt(float, lo=0.0, hi=1.0),
    "gray_scale_prob": Opt(float, lo=0.0, hi=1.0),
}


@dataclass(frozen=True)
class Draw:
    """The random choices for one image: crop box, jitter (or None), grayscale."""

    box: tuple[int, int, int, int] | None
    jitter: tuple[Any, ...] | None
    gray: bool


@dataclass(frozen=True)
class Augment:
    """Options of the ``aug`` group; the defaults are vlexp's ``aug=default``."""

    scale: tuple[float, float] | None = (0.9, 1.0)
    ratio: tuple[float, float] = CROP_RATIO
    color_jitter: tuple[float, float, float, float] | None = None
    color_jitter_prob: float = 0.8
    gray_scale_prob: float = 0.0

    def __post_init__(self) -> None:
        jitter = self.color_jitter
        if isinstance(jitter, int | float):  # one number: brightness, contrast, saturation
            object.__setattr__(self, "color_jitter", (float(jitter),) * 3 + (0.0,))

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Augment:
        """From an ``aug`` section (None: the defaults); raises on an invalid option."""
        section = dict(section or {})
        errors = aug_config_errors(section)
        if errors:
            raise ValueError("; ".join(errors))
        jitter = section.get("color_jitter", cls.color_jitter)
        if isinstance(jitter, int | float):
            jitter = (float(jitter),) * 3 + (0.0,)  # as __post_init__ does
        scale = section.get("scale", cls.scale)
        return cls(
            scale=None if scale is None else (float(scale[0]), float(scale[1])),
            ratio=tuple(float(v) for v in section.get("ratio", cls.ratio)),  # type: ignore[arg-type]
            color_jitter=None if jitter is None else tuple(float(v) for v in jitter),  # type: ignore[arg-type]
            color_jitter_prob=float(section.get("color_jitter_prob", cls.color_jitter_prob)),
            gray_scale_prob=float(section.get("gray_scale_prob", cls.gray_scale_prob)),
        )

    @property
    def colour(self) -> bool:
        """True when colour jitter or grayscale can change an image."""
        jitter = self.color_jitter is not None and any(self.color_jitter)
        return (jitter and self.color_jitter_prob > 0) or self.gray_scale_prob > 0

    @property
    def fixed(self) -> bool:
        """True when every training image is the same at every draw (no randomness)."""
        return self.scale is None and not self.colour

    def draw(self, image: Any, seed: int | None = None) -> Draw:
        """Every random choice for ``image``: from ``seed`` alone (the global torch RNG is
        left as it was), or from the global torch RNG when ``seed`` is None."""
        if seed is None:
            return self._draw(image)
        with torch.random.fork_rng(devices=[]):  # CPU generator only, restored on exit
            torch.default_generator.manual_seed(int(seed))
            return self._draw(image)

    def _draw(self, image: Any) -> Draw:
        from torchvision import transforms as T  # torchvision is slow to import

        box = None
        if self.scale is not None:  # torchvision's RandomResizedCrop algorithm
            box = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        jitter = None
        if self.color_jitter is not None and self.color_jitter_prob > 0:
            if float(torch.rand(())) < self.color_jitter_prob:
                b, c, s, h = self.color_jitter
                jitter = T.ColorJitter.get_params(
                    _range(b, 1.0), _range(c, 1.0), _range(s, 1.0), _range(h, 0.0)
                )
        gray = self.gray_scale_prob > 0 and float(torch.rand(())) < self.gray_scale_prob
        return Draw(box, jitter, gray)


def _range(amount: float, centre: float) -> list[float] | None:
    """torchvision's factor range for a jitter amount (None: this property is left alone)."""
    if amount == 0:
        return None
    return [max(0.0, centre - amount), centre + amount] if centre else [-amount, amount]


def apply_colour(pixels: torch.Tensor, draw: Draw) -> torch.Tensor:
    """The drawn jitter and grayscale on an RGB float image in ``[0, 1]`` (3, H, W)."""
    from torchvision.transforms import functional as TF  # torchvision is slow to import

    if draw.jitter is not None:
        order, brightness, contrast, saturation, hue = draw.jitter
        ops = (
            (brightness, TF.adjust_brightness),
            (contrast, TF.adjust_contrast),
            (saturation, TF.adjust_saturation),
            (hue, TF.adjust_hue),
        )
        for i in order.tolist():
            factor, op = ops[i]
            if factor is not None:
                pixels = op(pixels, factor)
    if draw.gray:
        pixels = TF.rgb_to_grayscale(pixels, num_output_channels=3)
    return pixels


def aug_config_errors(section: Mapping[str, Any], prefix: str = "aug") -> list[str]:
    """One line per invalid or unknown ``aug`` option, naming the full key."""
    return check_options(section, AUG_SCHEMA, prefix)
