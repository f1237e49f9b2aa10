"""Action: does a caption describe something happening?

DiHT's CAT filter keeps captions that contain an action. A third-party
reimplementation counts only verbs that have a nominal subject, but web and COCO-style
captions are mostly noun phrases: in "a dog chasing a ball on the beach" the verb
"chasing" has no subject (spaCy attaches it to "dog" as a clausal modifier), and that
rule would drop it. Our rule, on a spaCy parse (tagger + parser + lemmatizer):

A caption has an action if one of its tokens is a ``VERB`` (spaCy tags auxiliaries
``AUX``, so "is"/"has" in "is riding"/"has eaten" never count by themselves) that

1. is not one of :data:`NON_ACTION_LEMMAS` -- verbs that relate a picture to its
   content or state a property ("a photo *showing* a cat", "a t-shirt *featuring* a
   logo", "a box *containing* toys", "a dog *has* a ball" is a VERB "have");
2. if it is a past participle (``VBN``), has an auxiliary: "a man *is being chased*",
   "a boy *has thrown* a ball" count, while a bare participle describes a state and does
   not: "a red car *parked* on the street", "a plate *filled* with food", "a house
   *surrounded* by trees" (decision: a parked car is not doing anything; the price is
   that "a ball *thrown* by a boy" does not count either);
3. if it is a base form (``VB``), is not a bare imperative (at the root with neither
   subject nor auxiliary: "*Buy* now", "*Click* to enlarge" are shop boilerplate, not
   a scene) nor a verb hanging from one ("Click to *enlarge*"), and has an auxiliary
   or a subject ("a dog about *to jump*", "a girl trying *to catch* a frisbee") or is
   coordinated with an action ("dogs run and *play*"); a bare base form elsewhere is
   usually a tagging slip ("a hamburger with cheese and *lettuce*").

Present participles and gerunds acting as verbs count: "a dog *chasing* a ball", "two
people *sitting* at a table", "a woman *wearing* a hat"; gerunds used as nouns do not
("a *swimming* pool" is tagged NOUN). Noun phrases such as "a photo of a cat", "cat",
"the best sunset" have no verb and therefore no action.

Known limits of the small English model: without an article a caption such as "woman
cooking dinner in the kitchen" may be tagged as one noun compound (no verb, no action),
while "a woman cooking dinner in the kitchen" is parsed correctly.
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
