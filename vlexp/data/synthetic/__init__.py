"""The embedded procedural image-caption benchmark (shapes, attributes, relations, actions).

``build_synthetic(seed=0, **knobs)`` returns the ``train``, ``val``, ``test``,
``test_compositional`` and ``test_single`` (one object per image) splits as
:class:`SyntheticPairs` (PairSources). Modules:
``ontology`` (vocabulary and class hierarchy), ``scene`` (scene specs and sampling),
``render`` (PIL drawing), ``captions`` (caption specs, complexity, counterfactuals),
``dataset`` (the splits).
"""

from vlexp.data.synthetic.captions import (
    KINDS,
    CaptionSpec,
    Mention,
    complete_caption,
    counterfactual_candidates,
    counterfactual_captions,
    detailed_caption,
    noun_caption,
    sample_caption,
)
from vlexp.data.synthetic.dataset import (
    DEFAULT_SIZES,
    SPLITS,
    TRAIN_CAPTIONS,
    PairInfo,
    SyntheticPairs,
    build_synthetic,
    classification_class_names,
    prompt_templates,
)
from vlexp.data.synthetic.ontology import (
    ACTIONS,
    COLOUR_NAMES,
    COLOURS,
    FAMILIES,
    FAMILY_CLASSES,
    HELD_OUT_COMBOS,
    LEAF_CLASSES,
    NUM_LEAF_CLASSES,
    RELATIONS,
    SIZES,
    TEXTURES,
    class_names,
    parents,
)
from vlexp.data.synthetic.render import render_scene
from vlexp.data.synthetic.scene import Action, Scene, SceneObject, relation_holds, sample_scene

__all__ = [
    "ACTIONS",
    "COLOURS",
    "COLOUR_NAMES",
    "DEFAULT_SIZES",
    "FAMILIES",
    "FAMILY_CLASSES",
    "HELD_OUT_COMBOS",
    "KINDS",
    "LEAF_CLASSES",
    "NUM_LEAF_CLASSES",
    "RELATIONS",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "TRAIN_CAPTIONS",
    "Action",
    "CaptionSpec",
    "Mention",
    "PairInfo",
    "Scene",
    "SceneObject",
    "SyntheticPairs",
    "build_synthetic",
    "class_names",
    "classification_class_names",
    "complete_caption",
    "counterfactual_candidates",
    "counterfactual_captions",
    "detailed_caption",
    "noun_caption",
    "parents",
    "prompt_templates",
    "relation_holds",
    "render_scene",
    "sample_caption",
    "sample_scene",
]
