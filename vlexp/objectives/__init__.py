"""Training objectives; importing this package registers every built-in objective."""

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures, gather_features

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "GatheredFeatures", "gather_features"]

from vlexp.objectives import clip, composite, concepts, hnnce, siglip, softalign  # noqa: E402,F401,I001  (registration)
