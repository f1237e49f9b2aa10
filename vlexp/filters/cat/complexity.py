"""Caption complexity (CAT's "C"): the densest node of a caption's object graph.

A spaCy parse gives a graph of objects (nouns), attributes (adjectives, compounds,
numerals) and relations (prepositions, verbs); complexity is the largest number of edges
at any node, and CAT keeps captions of complexity >= ``filter.min_complexity`` (2). This
is our reading of DiHT, not verified against its code. Shop boilerplate (prices,
percentages, sale and shipping words; :mod:`vlexp.filters.cat.boilerplate`) scores 0.
The graph rules and worked examples are in docs/DESIGN.md ("CAT: complexity").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vlexp.filters.cat.boilerplate import is_boilerplate

if TYPE_CHECKING:  # spaCy is an optional dependency; only its types are used here
    from spacy.tokens import Doc, Token

OBJECT_POS = frozenset({"NOUN", "PROPN"})
ATTRIBUTE_DEPS = frozenset({"amod", "compound", "nummod"})
OBJECT_DEPS = frozenset({"dobj", "obj", "attr", "oprd", "dative"})
SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj"})
PRONOUN_OBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "dobj", "pobj", "attr"})
RELATIVE_PRONOUN_TAGS = frozenset({"WP", "WDT", "WP$"})

FRAMING_NOUNS: frozenset[str] = frozenset(
    """
    photo photos photograph photographs photography picture pictures pic pics image
    images shot shots snapshot snapshots closeup closeups close-up close-ups view views
    illustration illustrations drawing drawings painting paintings sketch sketches
    render renders rendering renderings artwork screenshot screenshots portrait
    portraits footage clipart vector vectors
    """.split()
)
"""Nouns that name the picture rather than something in it ("a *photo* of a cat")."""

QUANTITY_NOUNS: frozenset[str] = frozenset(
    """
    group groups couple pair pairs bunch bunches lot lots number set sets collection
    collections herd herds flock flocks crowd crowds pile piles stack stacks row rows
    handful variety assortment cluster clusters bundle bundles swarm pack packs
    """.split()
)
"""Nouns that count or gather their "of" object ("a *group* of people")."""

DEPICTION_VERBS: frozenset[str] = frozenset(
    """
    show shows showing shown feature features featuring featured depict depicts
    depicting depicted display displays displaying displayed portray portrays portraying
    portrayed capture captures capturing captured
    """.split()
)
"""Verbs that attach a picture to its content ("a photo *showing* a cat")."""

_WRAPPER_WORDS = FRAMING_NOUNS | QUANTITY_NOUNS | {"up"}
_MAX_DEPTH = 8  # malformed parses: never recurse further


def _is_framing(tok: Token) -> bool:
    """A picture noun; spaCy splits "close-up" and tags "up" as the noun."""
    word = tok.lower_
    if word in FRAMING_NOUNS:
        return True
    return word == "up" and any(c.lower_ == "close" for c in tok.children)


def _wrapped(tok: Token, depth: int = 0) -> list[Token]:
    """The objects a framing or quantity noun wraps: its "of" objects; for a framing noun
    also its apposition ("stock photo: a man ...") and what its depiction verbs show."""
    kids = [c for c in tok.children if c.dep_ == "prep" and c.lower_ == "of"]
    inner = [g for c in kids for g in c.children if g.dep_ == "pobj"]
    if _is_framing(tok):
        inner += [c for c in tok.children if c.dep_ == "appos"]
        for verb in _depiction_verbs(tok):
            inner += [c for c in verb.children if c.dep_ in OBJECT_DEPS]
    return _objects_among(inner, depth + 1)


def _depiction_verbs(tok: Token) -> list[Token]:
    """Verbs such as "showing" that hang from the framing noun ``tok``."""
    return [c for c in tok.children if c.dep_ == "acl" and c.lower_ in DEPICTION_VERBS]


def _is_wrapper(tok: Token, depth: int = 0) -> bool:
    """A framing noun that frames something or is the caption's head ("a photo of a cat",
    "a black and white photo"), or a quantity noun with an "of" object ("a group of
    people"): such nouns are not objects of the scene."""
    word = tok.lower_
    if word not in _WRAPPER_WORDS or tok.pos_ not in OBJECT_POS or depth > _MAX_DEPTH:
        return False
    if _is_framing(tok):
        return tok.dep_ == "ROOT" or bool(_wrapped(tok, depth))
    return word in QUANTITY_NOUNS and bool(_wrapped(tok, depth))


@dataclass
class CaptionGraph:
    """Nodes (kind, text) and undirected edges (i, j) of one caption."""

    nodes: list[tuple[str, str]] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)

    def add_node(self, kind: str, text: str) -> int:
        """Append a node of ``kind`` ("object", "attribute", "relation"); return its id."""
        self.nodes.append((kind, text))
        return len(self.nodes) - 1

    def degrees(self) -> np.ndarray:
        """Number of edges at each node."""
        deg = np.zeros(len(self.nodes), dtype=np.int64)
        for i, j in self.edges:
            deg[i] += 1
            deg[j] += 1
        return deg

    @property
    def complexity(self) -> int:
        """The largest number of edges at any node (0 for an empty graph)."""
        return int(self.degrees().max()) if self.nodes else 0


def _is_object(tok: Token, depth: int = 0) -> bool:
    if tok.pos_ in OBJECT_POS:
        if tok.dep_ == "compound" and tok.head is not tok and tok.head.pos_ in OBJECT_POS:
            return False  # a modifier ("coffee" cup) or a part of a name ("New" York)
        return not _is_wrapper(tok, depth)
    if tok.pos_ == "PRON":
        return tok.dep_ in PRONOUN_OBJECT_DEPS and tok.tag_ not in RELATIVE_PRONOUN_TAGS
    return False


def _is_compound_attribute(tok: Token) -> bool:
    """A noun modifying another noun ("coffee cup"), but not part of a name ("New York")."""
    if tok.dep_ != "compound" or tok.head.pos_ not in OBJECT_POS or tok.head is tok:
        return False
    return not (tok.pos_ == "PROPN" and tok.head.pos_ == "PROPN")


def _with_conjuncts(tok: Token) -> list[Token]:
    """``tok`` and the tokens coordinated with it ("plates and cups")."""
    out, stack = [], [tok]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(c for c in t.children if c.dep_ == "conj")
    return out


def _objects_among(tokens: Iterable[Token], depth: int = 0) -> list[Token]:
    """The objects among ``tokens`` and their conjuncts; a wrapper noun stands for the
    objects it wraps ("a man holding a *photo* of his dog" -> dog)."""
    out: list[Token] = []
    for tok in tokens:
        for t in _with_conjuncts(tok):
            if _is_object(t, depth):
                out.append(t)
            elif depth < _MAX_DEPTH and _is_wrapper(t, depth):
                out.extend(_wrapped(t, depth))
    return out


def _anchor_objects(tok: Token, depth: int = 0) -> list[Token]:
    """The object(s) a modifier or relation hanging from ``tok`` is about."""
    if depth > _MAX_DEPTH:
        return []
    if _is_object(tok):
        return [tok]
    if _is_wrapper(tok):
        return _wrapped(tok)  # "a photo of a cat *on a sofa*": the cat is on the sofa
    if tok.pos_ in {"VERB", "AUX"}:
        subjects = _objects_among(c for c in tok.children if c.dep_ in SUBJECT_DEPS)
        if subjects:
            return subjects
        if tok.dep_ in {"acl", "relcl"} or (tok.dep_ == "conj" and tok.head is not tok):
            return _anchor_objects(tok.head, depth + 1)
        return []
    if tok.pos_ == "ADJ" and tok.dep_ in {"amod", "acomp", "conj"} and tok.head is not tok:
        return _anchor_objects(tok.head, depth + 1)
    if tok.pos_ == "ADV" and tok.dep_ == "advmod" and tok.head is not tok:
        return _anchor_objects(tok.head, depth + 1)  # "a dog *next* to a car"
    return []


def _is_framing_link(tok: Token) -> bool:
    """The "of" of a wrapper ("photo *of* a cat") or a depiction verb hanging from a
    framing noun ("photo *showing* a cat"): part of the frame, not a relation."""
    dep, word = tok.dep_, tok.lower_
    if not ((dep == "prep" and word == "of") or (dep == "acl" and word in DEPICTION_VERBS)):
        return False
    head = tok.head
    if head is tok or not _is_wrapper(head):
        return False
    return dep == "prep" or _is_framing(head)


def caption_graph(doc: Doc) -> CaptionGraph:
    """Build the object/attribute/relation graph of a parsed caption."""
    g = CaptionGraph()
    obj_id: dict[int, int] = {}

    def obj(t: Token) -> int:
        if t.i not in obj_id:
            obj_id[t.i] = g.add_node("object", t.text)
        return obj_id[t.i]

    def relation(text: str, ends: Iterable[Token]) -> None:
        ids = sorted({obj(t) for t in ends})
        if ids:
            r = g.add_node("relation", text)
            g.edges.extend((r, i) for i in ids)

    for tok in doc:
        if _is_object(tok):
            obj(tok)
            if tok.dep_ == "poss" and tok.head is not tok and _is_object(tok.head):
                relation("has", [tok, tok.head])
        elif _is_wrapper(tok) and not _is_framing(tok):  # "a group of people": an attribute
            for o in _wrapped(tok):
                g.edges.append((g.add_node("attribute", tok.text), obj(o)))
        # attributes of objects
        if tok.dep_ in ATTRIBUTE_DEPS and tok.head is not tok and _is_object(tok.head):
            if tok.dep_ != "compound" or _is_compound_attribute(tok):
                for t in _with_conjuncts(tok):
                    if t.pos_ in {"ADJ", "NOUN", "PROPN", "NUM", "VERB"}:
                        g.edges.append((g.add_node("attribute", t.text), obj(tok.head)))
        elif tok.dep_ == "acomp" and tok.pos_ == "ADJ":
            for o in _anchor_objects(tok.head):
                for t in _with_conjuncts(tok):
                    g.edges.append((g.add_node("attribute", t.text), obj(o)))
        # relations
        if _is_framing_link(tok):
            continue
        if tok.dep_ in {"prep", "agent"} and tok.head is not tok:
            pobjs = _objects_among(c for c in tok.children if c.dep_ == "pobj")
            subjects = _anchor_objects(tok.head)
            if pobjs or subjects:
                verb = tok.head.lemma_ + " " if tok.head.pos_ == "VERB" else ""
                relation(verb + tok.text, subjects + pobjs)
        elif tok.pos_ == "VERB":
            objects = _objects_among(c for c in tok.children if c.dep_ in OBJECT_DEPS)
            has_prep = any(
                c.dep_ in {"prep", "agent"} and any(gc.dep_ == "pobj" for gc in c.children)
                for c in tok.children
            )
            if objects or not has_prep:  # otherwise the verb lives in its prep relations
                relation(tok.text, _anchor_objects(tok) + objects)
    return g


def doc_complexity(doc: Doc) -> int:
    """Complexity of one parsed caption (see the module docstring)."""
    return caption_graph(doc).complexity


def caption_complexity(docs: Iterable[Doc], drop_boilerplate: bool = True) -> np.ndarray:
    """Complexity of each parsed caption, as an int64 array (0 for shop boilerplate
    unless ``drop_boilerplate`` is false)."""
    return np.fromiter(
        (0 if drop_boilerplate and is_boilerplate(d.text) else doc_complexity(d) for d in docs),
        dtype=np.int64,
    )
