"""Image and text towers with projection heads; importing registers the built-ins."""

from vlexp.encoders.base import ENCODERS, TwoTower

__all__ = ["ENCODERS", "TwoTower"]

from vlexp.encoders import open_clip_tower, pretrained, tiny  # noqa: E402,F401,I001  (registration)
