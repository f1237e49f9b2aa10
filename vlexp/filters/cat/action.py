"""Action: does a caption describe something happening? (CAT's "A")

A caption has an action when a spaCy ``VERB`` token is not a picture-relating or state
verb (:data:`NON_ACTION_LEMMAS`), is not a bare past participle ("a car parked"), and is
not a bare imperative ("Buy now"); present participles count ("a dog chasing a ball"),
which a subject-only rule would drop. The rule, its examples and its known limits are
in docs/DESIGN.md ("CAT: action").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # spaCy is an optional dependency; only its types are used here
    from spacy.tokens import Doc, Token

NON_ACTION_LEMMAS: frozenset[str] = frozenset(
    {
        # being / having
        "be", "have", "exist", "belong", "consist", "own", "possess", "lack",
        # a picture and its content
        "show", "feature", "depict", "include", "contain", "represent", "illustrate",
        "portray", "display", "picture", "photograph", "capture", "frame",
        # seeming, naming
        "seem", "appear", "resemble", "call", "name", "title", "entitle",
        "label", "tag", "know",
    }
)  # fmt: skip
"""Lemmas of verbs that do not describe anything happening in the scene."""

AUX_DEPS = frozenset({"aux", "auxpass"})
SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj", "expl"})
GOVERNED_DEPS = frozenset({"xcomp", "advcl", "ccomp", "conj"})


def _is_imperative_root(tok: Token) -> bool:
    """A base-form verb at the root with neither subject nor auxiliary ("Buy now")."""
    if tok.pos_ != "VERB" or tok.tag_ != "VB" or tok.dep_ != "ROOT":
        return False
    return not {c.dep_ for c in tok.children} & (AUX_DEPS | SUBJECT_DEPS)


def is_action_verb(tok: Token, _depth: int = 0) -> bool:
    """True if ``tok`` is a verb describing an action (rules in the module docstring)."""
    if tok.pos_ != "VERB" or tok.lemma_.lower() in NON_ACTION_LEMMAS or _depth > 8:
        return False
    deps = {c.dep_ for c in tok.children}
    head = tok.head
    if tok.tag_ == "VBN" and not deps & AUX_DEPS:
        return False  # bare past participle: a state ("a car parked on the street")
    if tok.tag_ == "VB":
        if _is_imperative_root(tok):
            return False  # shop boilerplate ("Buy now")
        if tok.dep_ in GOVERNED_DEPS and _is_imperative_root(head):
            return False  # "Click to *enlarge*"
        if not deps & (AUX_DEPS | SUBJECT_DEPS):
            # a bare base form counts only when coordinated with an action ("dogs run and
            # *play*"); elsewhere it is a tagging slip ("cheese and *lettuce*")
            return tok.dep_ == "conj" and head is not tok and is_action_verb(head, _depth + 1)
    return True


def action_verbs(doc: Doc) -> list[Token]:
    """The tokens of a parsed caption that count as actions."""
    return [t for t in doc if is_action_verb(t)]


def has_action(doc: Doc) -> bool:
    """True if the parsed caption contains an action."""
    return any(is_action_verb(t) for t in doc)


def have_actions(docs: Iterable[Doc]) -> np.ndarray:
    """:func:`has_action` for each parsed caption, as a bool array."""
    return np.fromiter((has_action(d) for d in docs), dtype=bool)
