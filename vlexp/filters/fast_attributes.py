"""A faster stand-in for spaCy's ``attribute_ruler`` + ``lemmatizer`` in the CAT filter.

In ``en_core_web_sm`` the attribute ruler (a token Matcher over ~180 patterns that maps
fine tags to coarse POS, with exceptions) and the rule lemmatizer take about a quarter
of the parse time of a short caption (1,390 vs 1,919 captions/s on the dev machine).
The CAT criteria read only ``pos_`` and ``dep_`` of every token and the lemma of VERB
tokens, so :class:`FastAttributes` applies the *same* ruler patterns with dictionary
lookups (equality patterns) and a few compiled predicates (``IN``/``NOT_IN``/``REGEX``
and multi-token patterns), in the ruler's order so later patterns win as in spaCy, and
lemmatizes VERB/AUX tokens only (after setting MORPH, which its base-form test reads).
``tests/test_cat_fast_attributes.py`` checks POS, DEP and verb lemmas, and the CAT
decisions, against the full pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_TOKEN_ATTRS: dict[str, Callable[[Any], Any]] = {
    "TAG": lambda t: t.tag_,
    "LOWER": lambda t: t.lower_,
    "DEP": lambda t: t.dep_,
    "IS_SPACE": lambda t: t.is_space,
}
_SET_ATTRS = ("POS", "LEMMA", "DEP", "MORPH")  # MORPH: the lemmatizer's base-form test reads it


def _predicate(attr: str, spec: Any) -> Callable[[Any], bool]:
    get = _TOKEN_ATTRS[attr]
    if isinstance(spec, dict):
        ((op, arg),) = spec.items()
        if op == "IN":
            values = set(arg)
            return lambda t: get(t) in values
        if op == "NOT_IN":
            values = set(arg)
            return lambda t: get(t) not in values
        if op == "REGEX":
            rx = re.compile(arg)
            return lambda t: rx.search(get(t)) is not None
        raise ValueError(f"unsupported attribute-ruler operator {op!r}")
    return lambda t: get(t) == spec


class FastAttributes:
    """Sets POS, DEP and verb lemmas on parsed Docs like ``attribute_ruler`` + ``lemmatizer``.

    Built from the pipeline's own components (``nlp.get_pipe("attribute_ruler")`` and
    ``nlp.get_pipe("lemmatizer")``), which must then be disabled in ``nlp``.
    Raises ``ValueError`` for a pattern it cannot evaluate exactly (use the full
    pipeline then: ``CATFilter(fast_attributes=False)``).
    """

    def __init__(self, ruler: Any, lemmatizer: Any | None) -> None:
        # rules in ruler order: (token predicates per position, index, attrs to set)
        self._eq: dict[tuple[str, ...], dict[tuple[Any, ...], list[int]]] = {}
        self._single: list[tuple[int, list[Callable[[Any], bool]]]] = []
        self._multi: list[tuple[int, list[list[Callable[[Any], bool]]], int]] = []
        self._attrs: list[dict[str, Any]] = []
        for rule, p in enumerate(ruler.patterns):
            attrs = {k: v for k, v in p["attrs"].items() if k in _SET_ATTRS}
            self._attrs.append(attrs)
            if not attrs:
                continue
            for pattern in p["patterns"]:
                for tok in pattern:
                    unknown = set(tok) - set(_TOKEN_ATTRS)
                    if unknown:
                        raise ValueError(f"attribute-ruler pattern {pattern} uses {unknown}")
                if len(pattern) == 1 and all(not isinstance(v, dict) for v in pattern[0].values()):
                    keys = tuple(sorted(pattern[0]))
                    values = tuple(pattern[0][k] for k in keys)
                    self._eq.setdefault(keys, {}).setdefault(values, []).append(rule)
                elif len(pattern) == 1:
                    preds = [_predicate(k, v) for k, v in pattern[0].items()]
                    self._single.append((rule, preds))
                else:
                    preds_by_pos = [[_predicate(k, v) for k, v in tok.items()] for tok in pattern]
                    self._multi.append((rule, preds_by_pos, int(p.get("index", 0))))
        self._eq_getters = [
            (keys, table, [_TOKEN_ATTRS[k] for k in keys]) for keys, table in self._eq.items()
        ]
        self.lemmatizer = lemmatizer

    def _matches(self, doc: Any) -> list[tuple[int, int]]:
        """(rule, token index) of every pattern match, as spaCy's Matcher finds them."""
        found: list[tuple[int, int]] = []
        for tok in doc:
            for _keys, table, getters in self._eq_getters:
                rules = table.get(tuple(g(tok) for g in getters))
                if rules:
                    found.extend((r, tok.i) for r in rules)
            for rule, preds in self._single:
                if all(p(tok) for p in preds):
                    found.append((rule, tok.i))
        n = len(doc)
        for rule, preds_by_pos, index in self._multi:
            span = len(preds_by_pos)
            for start in range(n - span + 1):
                if all(
                    all(p(doc[start + j]) for p in preds) for j, preds in enumerate(preds_by_pos)
                ):
                    found.append((rule, start + index))
        return found

    def __call__(self, doc: Any) -> Any:
        """Annotate ``doc`` in place and return it."""
        lemma_set: set[int] = set()
        for rule, i in sorted(self._matches(doc)):
            tok = doc[i]
            for attr, value in self._attrs[rule].items():
                if attr == "POS":
                    tok.pos_ = value
                elif attr == "LEMMA":
                    tok.lemma_ = value
                    lemma_set.add(i)
                elif attr == "MORPH":
                    tok.set_morph(value)
                else:
                    tok.dep_ = value
        if self.lemmatizer is not None:
            for tok in doc:
                if tok.pos_ in ("VERB", "AUX") and tok.i not in lemma_set:
                    tok.lemma_ = self.lemmatizer.rule_lemmatize(tok)[0]
        return doc
