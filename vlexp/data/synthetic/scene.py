"""Scene specifications (what an image shows) and their seeded sampling.

Geometry is in image fractions (``x`` right, ``y`` down, both in ``[0, 1]``; ``radius``
a fraction of the image side), so one scene renders at any image size. Scenes with two
or more objects put each object in its own cell of a 2x2 grid, so objects never overlap
and objects in different columns (rows) are clearly left/right of (above/below) each
other. Objects are sorted by radius, largest first: object 0 is the *primary* object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlexp.data.synthetic.ontology import (
    ACTIONS,
    COLOUR_NAMES,
    HELD_OUT_COMBOS,
    LEAF_CLASSES,
    NUM_LEAF_CLASSES,
    RELATIONS,
    SIZES,
    TEXTURES,
    held_out_colour_ids,
)

MAX_OBJECTS = 4
SMALL_RADIUS = (0.11, 0.13)
LARGE_RADIUS = (0.18, 0.22)
PAD = 0.02
"""Minimum gap (image fraction) between an object and its grid cell's or the image's border."""
CAPTION_MARGIN = 0.2
"""A relation is used in a caption only if it holds by this margin (image fraction)."""

_HELD_OUT = held_out_colour_ids()
_COMBO_IDS = tuple((LEAF_CLASSES.index(c), COLOUR_NAMES.index(col)) for col, c in HELD_OUT_COMBOS)


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape. Ids index the ontology tuples; geometry in image fractions."""

    shape: int
    colour: int
    size: int
    texture: int
    x: float
    y: float
    radius: float

    @property
    def shape_name(self) -> str:
        return LEAF_CLASSES[self.shape]

    @property
    def colour_name(self) -> str:
        return COLOUR_NAMES[self.colour]

    @property
    def size_name(self) -> str:
        return SIZES[self.size]

    @property
    def texture_name(self) -> str:
        return TEXTURES[self.texture]

    def as_dict(self) -> dict[str, object]:
        """Plain-Python description (names, ids and geometry)."""
        return {
            "class": self.shape_name,
            "class_id": self.shape,
            "colour": self.colour_name,
            "size": self.size_name,
            "texture": self.texture_name,
            "x": self.x,
            "y": self.y,
            "radius": self.radius,
        }


@dataclass(frozen=True)
class Action:
    """Object ``subject`` is doing ``ACTIONS[verb]`` to object ``target`` (object indices)."""

    verb: int
    subject: int
    target: int

    @property
    def verb_name(self) -> str:
        return ACTIONS[self.verb]


@dataclass(frozen=True)
class Scene:
    """The objects of one image (primary object first) and an optional drawn action."""

    objects: tuple[SceneObject, ...]
    action: Action | None = None

    @property
    def label(self) -> int:
        """Leaf class id of the primary (largest) object."""
        return self.objects[0].shape

    @property
    def tags(self) -> list[int]:
        """Sorted unique leaf class ids present."""
        return sorted({o.shape for o in self.objects})

    def as_dict(self) -> dict[str, object]:
        """Plain-Python description of the scene."""
        act = self.action
        return {
            "objects": [o.as_dict() for o in self.objects],
            "action": None
            if act is None
            else {"verb": act.verb_name, "subject": act.subject, "target": act.target},
        }


def relation_holds(relation: str, a: SceneObject, b: SceneObject, margin: float = 0.0) -> bool:
    """Whether ``a <relation> b`` holds for the objects' centres by more than ``margin``."""
    if relation == "left of":
        return a.x < b.x - margin
    if relation == "right of":
        return a.x > b.x + margin
    if relation == "above":
        return a.y < b.y - margin
    if relation == "below":
        return a.y > b.y + margin
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def true_relations(a: SceneObject, b: SceneObject, margin: float = CAPTION_MARGIN) -> list[str]:
    """Relations ``r`` with ``a r b`` true by ``margin`` (in :data:`RELATIONS` order)."""
    return [r for r in RELATIONS if relation_holds(r, a, b, margin)]


class Draws:
    """A fixed block of uniforms drawn from ``rng`` at once, consumed one by one.

    Drawing one block (a fixed number per call, whatever is used) is much cheaper than
    many scalar calls, and keeps the generator's consumption independent of the values.
    """

    def __init__(self, rng: np.random.Generator, count: int) -> None:
        self._values = rng.random(count).tolist()[::-1]  # consumed from the end

    def u(self) -> float:
        """The next uniform in ``[0, 1)`` (IndexError once the block is used up)."""
        return self._values.pop()

    def pick(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        return min(int(self.u() * n), n - 1)

    def permutation(self, n: int) -> list[int]:
        """A uniform random permutation of ``range(n)``."""
        keys = [self.u() for _ in range(n)]
        return sorted(range(n), key=keys.__getitem__)


_SCENE_DRAWS = 1 + 4 * MAX_OBJECTS + 1 + len(COLOUR_NAMES) + MAX_OBJECTS + 2 * MAX_OBJECTS + 4


def _colours(draws: Draws, shapes: list[int], fixed: dict[int, int]) -> list[int]:
    """Distinct colours per object; ``fixed`` pins some objects, the rest avoid held-out combos."""
    order = draws.permutation(len(COLOUR_NAMES))
    used = set(fixed.values())
    out = []
    for k, shape in enumerate(shapes):
        if k in fixed:
            out.append(fixed[k])
            continue
        banned = _HELD_OUT.get(shape, -1)
        colour = next(c for c in order if c not in used and c != banned)
        used.add(colour)
        out.append(colour)
    return out


def _positions(draws: Draws, radii: list[float]) -> list[tuple[float, float]]:
    """Centres: anywhere for one object, else one 2x2 grid cell per object with jitter."""
    cells = draws.permutation(MAX_OBJECTS)
    if len(radii) == 1:
        lo, hi = radii[0] + PAD, 1.0 - radii[0] - PAD
        return [(lo + (hi - lo) * draws.u(), lo + (hi - lo) * draws.u())]
    out = []
    for cell, r in zip(cells, radii):
        jitter = 0.25 - r - PAD
        cx, cy = 0.25 + 0.5 * (cell % 2), 0.25 + 0.5 * (cell // 2)
        out.append((cx + jitter * (2 * draws.u() - 1), cy + jitter * (2 * draws.u() - 1)))
    return out


def sample_scene(
    rng: np.random.Generator,
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    action_frac: float = 0.2,
    compositional: bool = False,
) -> Scene:
    """Sample a scene of ``min_objects..max_objects`` objects from ``rng``.

    Consumes one fixed-size block of ``rng`` uniforms, so later draws from ``rng`` and
    the objects do not depend on ``action_frac`` (it only decides whether the sampled
    action is kept). ``compositional=False`` never produces a combination of
    :data:`HELD_OUT_COMBOS`; ``compositional=True`` makes the primary object one of
    them (and no other object).
    """
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, "
            f"got min_objects={min_objects}, max_objects={max_objects}"
        )
    draws = Draws(rng, _SCENE_DRAWS)
    n = min_objects + draws.pick(max_objects - min_objects + 1)
    sizes = [int(draws.u() < 0.5) for _ in range(n)]
    radii = [
        (lo + (hi - lo) * draws.u())
        for lo, hi in (LARGE_RADIUS if s else SMALL_RADIUS for s in sizes)
    ]
    shapes = [draws.pick(NUM_LEAF_CLASSES) for _ in range(n)]
    textures = [draws.pick(len(TEXTURES)) for _ in range(n)]
    order = sorted(range(n), key=lambda k: -radii[k])
    sizes, radii, shapes, textures = (
        [v[k] for k in order] for v in (sizes, radii, shapes, textures)
    )
    fixed: dict[int, int] = {}
    combo = draws.pick(len(_COMBO_IDS))
    if compositional:
        shapes[0], fixed[0] = _COMBO_IDS[combo]
    colours = _colours(draws, shapes, fixed)
    centres = _positions(draws, radii)
    objects = tuple(
        SceneObject(
            shapes[k], colours[k], sizes[k], textures[k], centres[k][0], centres[k][1], radii[k]
        )
        for k in range(n)
    )
    action = None
    if n >= 2:
        use_action = draws.u() < action_frac
        verb, partner, forward = draws.pick(len(ACTIONS)), 1 + draws.pick(n - 1), draws.u() < 0.5
        if use_action:
            subject, target = (0, partner) if forward else (partner, 0)
            action = Action(verb, subject, target)
    return Scene(objects, action)
