"""Captions of scenes: structured specs, their text, complexity, truth, and counterfactuals.

A caption is a :class:`CaptionSpec`: a kind, the objects it mentions (each with the
attributes it names) and, for relations and actions, the predicate. Kinds, from simple
to complex::

    noun        "a circle"
    attributes  "a small red striped circle"
    list        "a red circle, a blue star and a green square"
    relation    "a small red circle left of a blue star"
    action      "a red circle chasing a blue star"

``complexity`` is the largest number of edges at any node of the caption's graph, where
an object node has one edge per attribute and per relation it takes part in, and a
relation (or action) node has one edge per object it links (so a relation caption is at
least 2). This is the graph degree the CAT filter thresholds (DiHT), computed here from
the known structure rather than from a parse.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from vlexp.data.synthetic.ontology import (
    ACTIONS,
    COLOUR_NAMES,
    LEAF_CLASSES,
    OPPOSITE_RELATION,
    SIZES,
    TEXTURES,
    article,
)
from vlexp.data.synthetic.scene import (
    MAX_OBJECTS,
    Draws,
    Scene,
    SceneObject,
    relation_holds,
    true_relations,
)

KINDS: tuple[str, ...] = ("noun", "attributes", "list", "relation", "action")

_ATTRIBUTE_VALUES = {"size": SIZES, "colour": COLOUR_NAMES, "texture": TEXTURES}
_KIND_PROBS_ONE = {"noun": 0.1, "attributes": 0.9}
_KIND_PROBS_MANY = {"relation": 0.45, "list": 0.45, "attributes": 0.1}
_KIND_PROBS_ACTION = {"action": 0.7, "relation": 0.15, "list": 0.15}
_MENTION_PROBS = {"size": 0.4, "colour": 0.9, "texture": 0.4}
_CAPTION_DRAWS = 1 + 3 * MAX_OBJECTS + (MAX_OBJECTS - 1) + 2


@dataclass(frozen=True)
class Mention:
    """An object as a caption names it: scene object ``obj``, its class, named attributes."""

    obj: int
    shape: int
    size: int | None = None
    colour: int | None = None
    texture: int | None = None

    @property
    def num_attributes(self) -> int:
        return sum(v is not None for v in (self.size, self.colour, self.texture))

    @property
    def text(self) -> str:
        """``"a small red striped circle"`` (attributes in size, colour, texture order)."""
        words = [
            _ATTRIBUTE_VALUES[a][v]
            for a, v in (("size", self.size), ("colour", self.colour), ("texture", self.texture))
            if v is not None
        ]
        words.append(LEAF_CLASSES[self.shape])
        return f"{article(words[0])} {' '.join(words)}"

    def matches(self, o: SceneObject) -> bool:
        """Whether scene object ``o`` fits this description (class and named attributes)."""
        return (
            o.shape == self.shape
            and self.size in (None, o.size)
            and self.colour in (None, o.colour)
            and self.texture in (None, o.texture)
        )


@dataclass(frozen=True)
class CaptionSpec:
    """A structured caption; ``predicate`` is the relation or verb (relation/action kinds)."""

    kind: str
    mentions: tuple[Mention, ...]
    predicate: str | None = None

    @property
    def text(self) -> str:
        """The caption: lower-case ASCII words (a list caption also has commas)."""
        parts = [m.text for m in self.mentions]
        if self.kind in ("relation", "action"):
            return f"{parts[0]} {self.predicate} {parts[1]}"
        if self.kind == "list":
            return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return parts[0]

    @property
    def complexity(self) -> int:
        """Largest number of edges at a node of the caption graph (see module docstring)."""
        attrs = [m.num_attributes for m in self.mentions]
        if self.kind in ("relation", "action"):
            return max(2, attrs[0] + 1, attrs[1] + 1)
        return max(attrs)

    def holds(self, scene: Scene) -> bool:
        """Whether the caption is true of ``scene`` for some choice of described objects."""
        objs = scene.objects
        if self.kind in ("noun", "attributes"):
            return any(self.mentions[0].matches(o) for o in objs)
        if self.kind == "action":
            act = scene.action
            return (
                act is not None
                and ACTIONS[act.verb] == self.predicate
                and self.mentions[0].matches(objs[act.subject])
                and self.mentions[1].matches(objs[act.target])
            )
        for assign in itertools.permutations(range(len(objs)), len(self.mentions)):
            if all(m.matches(objs[k]) for m, k in zip(self.mentions, assign)) and (
                self.kind == "list"
                or relation_holds(str(self.predicate), objs[assign[0]], objs[assign[1]])
            ):
                return True
        return False


def mention(o: SceneObject, index: int, size: bool, colour: bool, texture: bool) -> Mention:
    """Describe scene object ``o`` (number ``index``) naming the chosen attributes."""
    return Mention(
        index,
        o.shape,
        o.size if size else None,
        o.colour if colour else None,
        o.texture if texture else None,
    )


def noun_caption(scene: Scene) -> CaptionSpec:
    """The bare noun phrase of the primary object (``"a circle"``)."""
    return CaptionSpec("noun", (mention(scene.objects[0], 0, False, False, False),))


def _choose(draws: Draws, probs: dict[str, float]) -> str:
    u, acc = draws.u(), 0.0
    for kind, p in probs.items():
        acc += p
        if u < acc:
            return kind
    return kind


def _random_mention(
    draws: Draws,
    scene: Scene,
    k: int,
    force_colour: bool = False,
    at_least_one: bool = False,
) -> Mention:
    """Mention object ``k`` naming each attribute with its :data:`_MENTION_PROBS` chance."""
    size, colour, texture = (draws.u() < _MENTION_PROBS[a] for a in ("size", "colour", "texture"))
    colour = colour or force_colour or (at_least_one and not (size or texture))
    return mention(scene.objects[k], k, size, colour, texture)


def sample_caption(
    scene: Scene, rng: np.random.Generator, require_primary_colour: bool = False
) -> CaptionSpec:
    """A random true caption of ``scene``; kinds and attributes vary (see module docstring).

    ``require_primary_colour`` forbids the bare noun kind and always names the primary
    object's colour (used where the primary object's colour is what is evaluated).
    """
    objs = scene.objects
    draws = Draws(rng, _CAPTION_DRAWS)
    if len(objs) == 1:
        kind = _choose(draws, _KIND_PROBS_ONE)
    else:
        kind = _choose(draws, _KIND_PROBS_ACTION if scene.action is not None else _KIND_PROBS_MANY)
    if kind == "noun" and not require_primary_colour:
        return noun_caption(scene)
    if kind in ("noun", "attributes"):
        return CaptionSpec(
            "attributes", (_random_mention(draws, scene, 0, require_primary_colour, True),)
        )
    if kind == "action":
        act = scene.action
        assert act is not None
        subject = _random_mention(
            draws, scene, act.subject, require_primary_colour and act.subject == 0
        )
        target = _random_mention(
            draws, scene, act.target, require_primary_colour and act.target == 0
        )
        return CaptionSpec("action", (subject, target), ACTIONS[act.verb])
    first = _random_mention(draws, scene, 0, require_primary_colour)
    others = [1 + k for k in draws.permutation(len(objs) - 1)]
    if kind == "relation":
        partner = others[0]
        relations = true_relations(objs[0], objs[partner])
        if relations:
            relation = relations[draws.pick(len(relations))]
            second = _random_mention(draws, scene, partner)
            if draws.u() < 0.3:  # the partner as the subject
                return CaptionSpec("relation", (second, first), OPPOSITE_RELATION[relation])
            return CaptionSpec("relation", (first, second), relation)
    return CaptionSpec("list", (first, *(_random_mention(draws, scene, k) for k in others)))


def detailed_caption(scene: Scene) -> CaptionSpec:
    """The fully specified caption: every attribute, the action or the dominant relation.

    One object: ``"a small red striped circle"``; an action: ``"<subject> <verb>
    <target>"``; otherwise the primary object related to object 1 along the axis on
    which their centres differ most.
    """
    objs = scene.objects
    full = [mention(o, k, True, True, True) for k, o in enumerate(objs)]
    if len(objs) == 1:
        return CaptionSpec("attributes", (full[0],))
    if scene.action is not None:
        act = scene.action
        return CaptionSpec("action", (full[act.subject], full[act.target]), ACTIONS[act.verb])
    a, b = objs[0], objs[1]
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        relation = "left of" if dx > 0 else "right of"
    else:
        relation = "above" if dy > 0 else "below"
    return CaptionSpec("relation", (full[0], full[1]), relation)


def complete_caption(scene: Scene) -> CaptionSpec:
    """A caption naming every object of ``scene`` with all its attributes.

    The :func:`detailed_caption` when it names every object (one object, two objects,
    or an action between the only two); otherwise a list of every object fully
    described, primary object first (``"a small red solid circle, a large blue dotted
    star and a small green striped square"``).
    """
    spec = detailed_caption(scene)
    if len(spec.mentions) == len(scene.objects):
        return spec
    return CaptionSpec(
        "list", tuple(mention(o, k, True, True, True) for k, o in enumerate(scene.objects))
    )


def _perturbations(spec: CaptionSpec) -> list[CaptionSpec]:
    """Same-object variants of ``spec``: one attribute, binding, predicate or role changed."""
    out: list[CaptionSpec] = []
    mentions = spec.mentions
    for i, m in enumerate(mentions):
        for attr, values in _ATTRIBUTE_VALUES.items():
            current = getattr(m, attr)
            if current is None:
                continue
            for v in range(len(values)):
                if v != current:
                    changed = list(mentions)
                    changed[i] = replace(m, **{attr: v})
                    out.append(replace(spec, mentions=tuple(changed)))
    for i, j in itertools.combinations(range(len(mentions)), 2):
        a, b = mentions[i], mentions[j]
        if a.colour is not None and b.colour is not None and a.colour != b.colour:
            changed = list(mentions)
            changed[i], changed[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
            out.append(replace(spec, mentions=tuple(changed)))
    if spec.kind == "relation":
        out.append(replace(spec, predicate=OPPOSITE_RELATION[str(spec.predicate)]))
        out.append(replace(spec, mentions=mentions[::-1]))
    if spec.kind == "action":
        out.extend(replace(spec, predicate=v) for v in ACTIONS if v != spec.predicate)
        out.append(replace(spec, mentions=mentions[::-1]))
    return out


def counterfactual_candidates(scene: Scene, spec: CaptionSpec | None = None) -> list[str]:
    """All distinct false captions that change one thing of ``spec`` (default: detailed)."""
    spec = detailed_caption(scene) if spec is None else spec
    seen = {spec.text}
    out = []
    for cand in _perturbations(spec):
        text = cand.text
        if text not in seen and not cand.holds(scene):
            seen.add(text)
            out.append(text)
    return out


def counterfactual_captions(
    scene: Scene, k: int, rng: np.random.Generator, spec: CaptionSpec | None = None
) -> list[str]:
    """``k`` false captions naming the same objects as ``spec`` with one change each.

    Changes: one attribute value, two objects' colours swapped, the relation reversed,
    subject and object swapped, or another verb. Each is checked false against the scene
    (no choice of objects makes it true). ``spec`` defaults to :func:`detailed_caption`.
    """
    candidates = counterfactual_candidates(scene, spec)
    if not 0 <= k <= len(candidates):
        raise ValueError(
            f"k={k} counterfactual captions requested but this scene has only "
            f"{len(candidates)}; use 0 <= k <= {len(candidates)} (a detailed caption of a "
            "one-object scene has 10)"
        )
    return [candidates[int(j)] for j in rng.choice(len(candidates), size=k, replace=False)]
