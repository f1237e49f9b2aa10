"""Image and text towers with projection heads; importing registers the built-ins."""

from vlexp.encoders.base import ENCODERS, TwoTower

__all__ = ["ENCODERS", "TwoTower"]

import vlexp.encoders.open_clip_tower  # noqa: E402,F401  (registration: open_clip)
import vlexp.encoders.pretrained  # noqa: E402,F401  (registration: pretrained_small, hf_timm)
from vlexp.encoders import tiny  # noqa: E402,F401  (registration)
