"""Training objectives; importing this package registers every built-in objective."""

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.distributed import GatheredFeatures, gather_features

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "GatheredFeatures", "gather_features"]

import vlexp.objectives.composite  # noqa: E402,F401  (registration)
import vlexp.objectives.concepts  # noqa: E402,F401  (registration)
import vlexp.objectives.hnnce  # noqa: E402,F401  (registration)
from vlexp.objectives import clip  # noqa: E402,F401  (registration)
from vlexp.objectives import softalign  # noqa: E402,F401
