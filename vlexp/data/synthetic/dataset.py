"""The synthetic image-caption pairs as a :class:`~vlexp.data.types.PairSource` per split.

Pair ``i`` of a split is drawn from ``np.random.default_rng([seed, split_id, i])`` alone,
in a fixed order: the knob draws (a fixed number, so knob values never change the
scene), the scene, then the caption. Item ``i`` is therefore the same whatever the
access order, process or worker. Images are rendered in ``__getitem__``; captions, tags
and labels are computed without rendering and cached.

Content knobs (``image_size``, ``min_objects``, ``max_objects``, ``action_frac``) apply
to every split, except that ``test_single`` scenes always hold exactly one object (its
label, the object's leaf class, is then the whole truth of the image: the split built
for zero-shot classification). Noise knobs (``noisy_caption_frac``,
``low_complexity_frac``, ``text_in_image_frac``, ``random_text_frac``) apply to the train
split only; the evaluation splits stay clean.

``train_caption`` chooses the train split's captions: ``"sampled"`` (default) draws a
random true caption that may leave objects and attributes out; ``"detailed"`` gives every
train pair its complete caption, naming every object with all its attributes
(:func:`~vlexp.data.synthetic.captions.complete_caption`), so no caption omits a concept
its image shows. The noise knobs still apply on top. Evaluation splits always carry
sampled captions.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vlexp.data.synthetic.captions import (
    CaptionSpec,
    complete_caption,
    counterfactual_captions,
    detailed_caption,
    noun_caption,
    sample_caption,
)
from vlexp.data.synthetic.ontology import (
    LEAF_CLASSES,
    RANDOM_WORDS,
    class_names,
    parents,
)
from vlexp.data.synthetic.render import render_scene
from vlexp.data.synthetic.scene import MAX_OBJECTS, Scene, sample_scene
from vlexp.data.types import TagTable

SPLITS: tuple[str, ...] = ("train", "val", "test", "test_compositional", "test_single")
"""Split names; a split's position is its ``split_id`` in the seed."""

DEFAULT_SIZES: dict[str, int] = {
    "train": 20000,
    "val": 1000,
    "test": 1000,
    "test_compositional": 500,
    "test_single": 1000,
}

TRAIN_CAPTIONS: tuple[str, ...] = ("sampled", "detailed")
"""Values of the ``train_caption`` knob (see the module docstring)."""

_NOISY, _LOW, _TEXT, _RANDOM_TEXT, _PARTNER = range(5)
_NUM_KNOB_DRAWS = 5
_MIN_IMAGE_SIZE, _MAX_IMAGE_SIZE = 16, 1024


def prompt_templates() -> list[str]:
    """Prompt templates for zero-shot classification over :func:`classification_class_names`."""
    return ["a {}", "a shape: a {}", "an image of a {}"]


def classification_class_names() -> list[str]:
    """Zero-shot class names: the leaf classes, in label-id order."""
    return list(LEAF_CLASSES)


def _check_fraction(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"{name}={value!r} is invalid: it must be a fraction in [0, 1]")
    return float(value)


def _check_int(name: str, value: Any, lo: int, hi: float = math.inf) -> int:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and float(value).is_integer()
        and lo <= value <= hi
    )
    if not ok:
        upper = "" if hi == math.inf else f", {int(hi)}"
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer in [{lo}{upper}]")
    return int(value)


@dataclass(frozen=True)
class PairInfo:
    """Everything about pair ``i`` except its pixels."""

    scene: Scene
    own_caption: CaptionSpec
    """The caption of this pair's own scene (after the low-complexity reduction)."""
    caption: CaptionSpec
    """The caption the pair carries (another train pair's when ``noisy``)."""
    noisy: bool
    low_complexity: bool
    text_in_image: bool
    random_words: tuple[tuple[str, float, float], ...]


class SyntheticPairs:
    """One split of the synthetic benchmark (a PairSource).

    Args:
        split: one of :data:`SPLITS`.
        num_pairs: number of pairs (default: :data:`DEFAULT_SIZES` of the split).
        seed: non-negative integer; the whole split is a function of it.
        image_size: side of the square RGB images in pixels (16..1024, default 64).
        min_objects, max_objects: objects per scene, uniform in that range (1..4; default 1, 4).
        noisy_caption_frac: share of train pairs whose caption is another random train
            pair's (tags stay the image's truth; the item says ``"noisy": True``). Default 0.
        low_complexity_frac: share of train captions reduced to the primary object's
            bare noun phrase (``"a circle"``). Default 0.
        text_in_image_frac: share of train images showing the caption the pair carries
            (noise included) as text, the text-spotting case. Default 0.
        action_frac: share of scenes with 2+ objects showing an action (drawn cue and,
            usually, an action caption); all splits. Default 0.2.
        random_text_frac: share of train images showing 1-2 unrelated words. Default 0.
        train_caption: ``"sampled"`` (default) or ``"detailed"``: the train split's
            captions (see the module docstring); other splits ignore it.

    The ``test_single`` split ignores ``min_objects``/``max_objects``: one object each.
    """

    def __init__(
        self,
        split: str = "train",
        num_pairs: int | None = None,
        *,
        seed: int = 0,
        image_size: int = 64,
        min_objects: int = 1,
        max_objects: int = MAX_OBJECTS,
        noisy_caption_frac: float = 0.0,
        low_complexity_frac: float = 0.0,
        text_in_image_frac: float = 0.0,
        action_frac: float = 0.2,
        random_text_frac: float = 0.0,
        train_caption: str = "sampled",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is invalid: it must be one of {SPLITS}")
        self.split = split
        self.split_id = SPLITS.index(split)
        self.num_pairs = _check_int(
            "num_pairs", DEFAULT_SIZES[split] if num_pairs is None else num_pairs, 0
        )
        self.seed = _check_int("seed", seed, 0)
        self.image_size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE, _MAX_IMAGE_SIZE)
        self.min_objects = _check_int("min_objects", min_objects, 1, MAX_OBJECTS)
        self.max_objects = _check_int("max_objects", max_objects, self.min_objects, MAX_OBJECTS)
        if train_caption not in TRAIN_CAPTIONS:
            raise ValueError(
                f"train_caption={train_caption!r} is invalid: it must be one of {TRAIN_CAPTIONS}"
            )
        self.train_caption = train_caption if split == "train" else "sampled"
        if split == "test_single":  # the split's definition: exactly one object per image
            self.min_objects = self.max_objects = 1
        self.action_frac = _check_fraction("action_frac", action_frac)
        noise = {
            "noisy_caption_frac": _check_fraction("noisy_caption_frac", noisy_caption_frac),
            "low_complexity_frac": _check_fraction("low_complexity_frac", low_complexity_frac),
            "text_in_image_frac": _check_fraction("text_in_image_frac", text_in_image_frac),
            "random_text_frac": _check_fraction("random_text_frac", random_text_frac),
        }
        if split == "train" and noise["noisy_caption_frac"] > 0 and self.num_pairs < 2:
            raise ValueError(
                f"noisy_caption_frac={noisy_caption_frac} needs at least 2 train pairs to swap "
                f"captions between, got num_pairs={self.num_pairs}"
            )
        if split != "train":  # noise knobs apply to the train split only
            noise = dict.fromkeys(noise, 0.0)
        self.noisy_caption_frac = noise["noisy_caption_frac"]
        self.low_complexity_frac = noise["low_complexity_frac"]
        self.text_in_image_frac = noise["text_in_image_frac"]
        self.random_text_frac = noise["random_text_frac"]
        self._cache: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"SyntheticPairs(split={self.split!r}, num_pairs={self.num_pairs}, seed={self.seed}, "
            f"image_size={self.image_size})"
        )

    def __len__(self) -> int:
        return self.num_pairs

    # ------------------------------------------------------------------ per-pair generation
    def _check_index(self, i: int) -> int:
        if not isinstance(i, numbers.Integral) or not 0 <= i < self.num_pairs:
            raise IndexError(f"index {i!r} out of range for {self.num_pairs} {self.split} pairs")
        return int(i)

    def _own(self, i: int) -> tuple[np.ndarray, Scene, CaptionSpec, bool]:
        """Knob draws, scene, own caption and the low-complexity flag of pair ``i``."""
        rng = np.random.default_rng([self.seed, self.split_id, i])
        draws = rng.random(_NUM_KNOB_DRAWS)
        scene = sample_scene(
            rng,
            self.min_objects,
            self.max_objects,
            self.action_frac,
            compositional=self.split == "test_compositional",
        )
        if self.train_caption == "detailed":
            spec = complete_caption(scene)
        else:
            spec = sample_caption(
                scene, rng, require_primary_colour=self.split == "test_compositional"
            )
        low = bool(draws[_LOW] < self.low_complexity_frac)
        return draws, scene, (noun_caption(scene) if low else spec), low

    def _partner(self, i: int, draws: np.ndarray) -> int | None:
        """The train pair whose caption pair ``i`` carries, or ``None`` when it is clean."""
        if not draws[_NOISY] < self.noisy_caption_frac:
            return None
        j = min(int(draws[_PARTNER] * (self.num_pairs - 1)), self.num_pairs - 2)
        return j + (j >= i)

    def _random_words(self, i: int, draws: np.ndarray) -> tuple[tuple[str, float, float], ...]:
        if not draws[_RANDOM_TEXT] < self.random_text_frac:
            return ()
        rng = np.random.default_rng([self.seed, self.split_id, i, 1])
        count = 1 + int(rng.random() < 0.5)
        return tuple(
            (
                RANDOM_WORDS[int(rng.integers(len(RANDOM_WORDS)))],
                0.02 + 0.4 * rng.random(),
                0.5 + 0.22 * k + 0.05 * rng.random(),
            )
            for k in range(count)
        )

    def info(self, i: int) -> PairInfo:
        """Scene, captions and noise flags of pair ``i`` (no rendering)."""
        i = self._check_index(i)
        draws, scene, own, low = self._own(i)
        partner = self._partner(i, draws)
        caption = own if partner is None else self._own(partner)[2]
        return PairInfo(
            scene,
            own,
            caption,
            partner is not None,
            low,
            bool(draws[_TEXT] < self.text_in_image_frac),
            self._random_words(i, draws),
        )

    def scene(self, i: int) -> Scene:
        """The scene of pair ``i``."""
        return self.info(i).scene

    def render(self, i: int, with_text: bool = True) -> Image.Image:
        """The image of pair ``i``; ``with_text=False`` leaves out any drawn text."""
        info = self.info(i)
        return self._render(info, with_text)

    def _render(self, info: PairInfo, with_text: bool = True) -> Image.Image:
        text = info.caption.text if with_text and info.text_in_image else None
        return render_scene(
            info.scene, self.image_size, text, info.random_words if with_text else ()
        )

    def __getitem__(self, i: int) -> dict[str, Any]:
        info = self.info(i)
        scene = info.scene
        attributes = {
            **scene.as_dict(),
            "caption_kind": info.caption.kind,
            "caption_complexity": info.caption.complexity,
            "low_complexity": info.low_complexity,
            "text_in_image": info.text_in_image,
            "random_words": [w for w, _, _ in info.random_words],
            "split": self.split,
        }
        return {
            "image": self._render(info),
            "caption": info.caption.text,
            "tags": scene.tags,
            "label": scene.label,
            "index": int(i),
            "noisy": info.noisy,
            "attributes": attributes,
        }

    def fine_grained(self, i: int, k: int = 4) -> tuple[str, list[str]]:
        """Pair ``i``'s detailed true caption and ``k`` same-object false captions.

        See :func:`~vlexp.data.synthetic.captions.counterfactual_captions`; seeded per pair.
        """
        scene = self.scene(i)
        rng = np.random.default_rng([self.seed, self.split_id, int(i), 2])
        return detailed_caption(scene).text, counterfactual_captions(scene, k, rng)

    # ------------------------------------------------------------------ cheap views
    def _table(self) -> dict[str, Any]:
        """Captions, tags, labels and flags of every pair (one pass, no rendering; cached)."""
        if self._cache is not None:
            return self._cache
        own = [self._own(i) for i in range(self.num_pairs)]
        specs, noisy = [], np.zeros(self.num_pairs, dtype=bool)
        for i, (draws, _, spec, _) in enumerate(own):
            partner = self._partner(i, draws)
            noisy[i] = partner is not None
            specs.append(spec if partner is None else own[partner][2])
        self._cache = {
            "captions": [s.text for s in specs],
            "kinds": [s.kind for s in specs],
            "complexity": np.array([s.complexity for s in specs], dtype=np.int64),
            "noisy": noisy,
            "low_complexity": np.array([o[3] for o in own], dtype=bool),
            "text_in_image": np.array(
                [o[0][_TEXT] < self.text_in_image_frac for o in own], dtype=bool
            ),
            "labels": np.array([o[1].label for o in own], dtype=np.int64),
            "tag_table": TagTable.from_lists([o[1].tags for o in own], class_names(), parents()),
        }
        return self._cache

    @property
    def captions(self) -> list[str]:
        """Caption of every pair (as the items carry them, noise included)."""
        return self._table()["captions"]

    @property
    def tag_table(self) -> TagTable:
        """Leaf-class tags of every pair, with all class names and the family parents."""
        return self._table()["tag_table"]

    @property
    def class_names(self) -> list[str]:
        """All ontology class names: leaf classes (tag/label ids) then families."""
        return class_names()

    @property
    def labels(self) -> np.ndarray:
        """Primary-object leaf class id of every pair."""
        return self._table()["labels"]

    @property
    def caption_kinds(self) -> list[str]:
        """Kind of every pair's caption (see :data:`~vlexp.data.synthetic.captions.KINDS`)."""
        return self._table()["kinds"]

    @property
    def caption_complexity(self) -> np.ndarray:
        """Caption-graph complexity of every pair's caption."""
        return self._table()["complexity"]

    @property
    def noisy(self) -> np.ndarray:
        """Whether each pair carries another pair's caption."""
        return self._table()["noisy"]

    @property
    def low_complexity(self) -> np.ndarray:
        """Whether each pair's caption was reduced to a bare noun phrase."""
        return self._table()["low_complexity"]

    @property
    def text_in_image(self) -> np.ndarray:
        """Whether each pair's image shows its caption as text."""
        return self._table()["text_in_image"]


def build_synthetic(
    seed: int = 0,
    num_train: int = DEFAULT_SIZES["train"],
    num_val: int = DEFAULT_SIZES["val"],
    num_test: int = DEFAULT_SIZES["test"],
    num_test_compositional: int = DEFAULT_SIZES["test_compositional"],
    image_size: int = 64,
    min_objects: int = 1,
    max_objects: int = MAX_OBJECTS,
    noisy_caption_frac: float = 0.0,
    low_complexity_frac: float = 0.0,
    text_in_image_frac: float = 0.0,
    action_frac: float = 0.2,
    random_text_frac: float = 0.0,
    num_test_single: int | None = None,
    train_caption: str = "sampled",
) -> dict[str, SyntheticPairs]:
    """All splits (:data:`SPLITS`) of one seed.

    Knobs are those of :class:`SyntheticPairs`; noise knobs and ``train_caption`` reach
    the train split only. ``test_compositional`` scenes each contain one of
    :data:`~vlexp.data.synthetic.ontology.HELD_OUT_COMBOS` (as the primary object,
    its colour always named in the caption); no other split contains any of them.
    ``test_single`` scenes hold exactly one object (random class and attributes);
    ``num_test_single=None`` (default) gives it as many pairs as ``num_test``.
    """
    sizes = {
        "train": _check_int("num_train", num_train, 0),
        "val": _check_int("num_val", num_val, 0),
        "test": _check_int("num_test", num_test, 0),
        "test_compositional": _check_int("num_test_compositional", num_test_compositional, 0),
        "test_single": _check_int(
            "num_test_single", num_test if num_test_single is None else num_test_single, 0
        ),
    }
    knobs = {
        "seed": seed,
        "image_size": image_size,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "noisy_caption_frac": noisy_caption_frac,
        "low_complexity_frac": low_complexity_frac,
        "text_in_image_frac": text_in_image_frac,
        "action_frac": action_frac,
        "random_text_frac": random_text_frac,
        "train_caption": train_caption,
    }
    return {split: SyntheticPairs(split, n, **knobs) for split, n in sizes.items()}
