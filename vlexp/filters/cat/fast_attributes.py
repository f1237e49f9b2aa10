"""A faster stand-in for spaCy's ``attribute_ruler`` + ``lemmatizer`` in the CAT filter.

In ``en_core_web_sm`` the attribute ruler (a token Matcher over ~180 patterns that maps
fine tags to coarse POS, with exceptions) and the rule lemmatizer take about a quarter
of the parse time of a short caption (1,390 vs 1,919 captions/s on the dev machine).
The CAT criteria read only ``pos_`` and ``dep_`` of every token and the lemma of VERB
tokens, so :class:`FastAttributes` applies the *same* ruler patterns with dictionary
lookups (equality patterns) and a few compiled predicates (``IN``/``NOT_IN``/``REGEX``
and multi-token patterns), in the ruler's order so later patterns win as in spaCy, and
lemmatizes VERB/AUX tokens only (after setting MORPH, which its base-form test reads).
``tests/filters/cat/test_fast_attributes.py`` checks POS, DEP and verb lemmas, and the CAT
decisions, against the full pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# a token is read once into a row (tag, lower, dep, is_space); patterns test rows
_FIELDS = {"TAG": 0, "LOWER": 1, "DEP": 2, "IS_SPACE": 3}
_SET_ATTRS = ("POS", "LEMMA", "DEP", "MORPH")  # MORPH: the lemmatizer's base-form test reads it
Row = tuple[str, str, str, bool]


def _predicate(attr: str, spec: Any) -> Callable[[Row], bool]:
    k = _FIELDS[attr]
    if isinstance(spec, dict):
        ((op, arg),) = spec.items()
        if op == "IN":
            values = frozenset(arg)
            return lambda r: r[k] in values
        if op == "NOT_IN":
            values = frozenset(arg)
            return lambda r: r[k] not in values
        if op == "REGEX":
            rx = re.compile(arg)
            return lambda r: rx.search(r[k]) is not None
        raise ValueError(f"unsupported attribute-ruler operator {op!r}")
    return lambda r: r[k] == spec


def _allowed(tok: dict[str, Any], attr: str) -> frozenset[Any] | None:
    """The values ``attr`` must take for ``tok`` to match (None: not a finite set)."""
    spec = tok.get(attr)
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return frozenset([spec])
    if set(spec) == {"IN"}:
        return frozenset(spec["IN"])
    return None


def _index_field(tok: dict[str, Any]) -> tuple[int, frozenset[Any]] | None:
    """A field whose allowed values are a finite set (the smallest), to index a pattern by."""
    best = None
    for attr in tok:
        values = _allowed(tok, attr)
        if values is not None and (best is None or len(values) < len(best[1])):
            best = (_FIELDS[attr], values)
    return best


def _add_indexed(
    by_field: dict[int, dict[Any, list[Any]]],
    unindexed: list[Any],
    first: dict[str, Any],
    entry: Any,
) -> None:
    """File ``entry`` under each value its pattern's first token allows for the field of
    :func:`_index_field`, or in ``unindexed`` when no field has a finite set of values."""
    key = _index_field(first)
    if key is None:
        unindexed.append(entry)
        return
    field_index, values = key
    by_value = by_field.setdefault(field_index, {})
    for value in values:
        by_value.setdefault(value, []).append(entry)


class FastAttributes:
    """Sets POS, DEP and verb lemmas on parsed Docs like ``attribute_ruler`` + ``lemmatizer``.

    Built from the pipeline's own components (``nlp.get_pipe("attribute_ruler")`` and
    ``nlp.get_pipe("lemmatizer")``), which must then be disabled in ``nlp``.
    Raises ``ValueError`` for a pattern it cannot evaluate exactly (use the full
    pipeline then: ``CATFilter(fast_attributes=False)``).
    """

    def __init__(self, ruler: Any, lemmatizer: Any | None) -> None:
        # equality patterns: field indices -> {values: [rule, ...]}
        eq: dict[tuple[int, ...], dict[tuple[Any, ...], list[int]]] = {}
        # other one-token patterns: field -> value -> [(rule, predicates)]
        self._single: dict[int, dict[Any, list[tuple[int, list[Callable[[Row], bool]]]]]] = {}
        self._single_any: list[tuple[int, list[Callable[[Row], bool]]]] = []
        # multi-token patterns, indexed by a field of their first token where it can be
        self._multi: dict[int, dict[Any, list[tuple[int, list, int]]]] = {}
        self._multi_any: list[tuple[int, list, int]] = []
        self._attrs: list[dict[str, Any]] = []
        for rule, p in enumerate(ruler.patterns):
            attrs = {k: v for k, v in p["attrs"].items() if k in _SET_ATTRS}
            self._attrs.append(attrs)
            if not attrs:
                continue
            for pattern in p["patterns"]:
                for tok in pattern:
                    unknown = set(tok) - set(_FIELDS)
                    if unknown:
                        raise ValueError(f"attribute-ruler pattern {pattern} uses {unknown}")
                if len(pattern) == 1 and all(not isinstance(v, dict) for v in pattern[0].values()):
                    keys = tuple(sorted(pattern[0]))
                    fields = tuple(_FIELDS[k] for k in keys)
                    values = tuple(pattern[0][k] for k in keys)
                    eq.setdefault(fields, {}).setdefault(values, []).append(rule)
                elif len(pattern) == 1:
                    preds = [_predicate(k, v) for k, v in pattern[0].items()]
                    _add_indexed(self._single, self._single_any, pattern[0], (rule, preds))
                else:
                    preds_by_pos = [[_predicate(k, v) for k, v in tok.items()] for tok in pattern]
                    entry = (rule, preds_by_pos, int(p.get("index", 0)))
                    _add_indexed(self._multi, self._multi_any, pattern[0], entry)
        self._eq = list(eq.items())
        self._single_items = list(self._single.items())
        self._multi_items = list(self._multi.items())
        # a row's one-token matches depend on the row alone: memoised (rows repeat a lot)
        self._row_rules: dict[Row, tuple[int, ...]] = {}
        self.lemmatizer = lemmatizer

    def _one_token_rules(self, r: Row) -> tuple[int, ...]:
        """The one-token patterns (rules) that match the row ``r``."""
        found: list[int] = []
        for fields, table in self._eq:
            rules = table.get(tuple([r[f] for f in fields]))
            if rules:
                found.extend(rules)
        for field, by_value in self._single_items:
            for rule, preds in by_value.get(r[field], ()):
                if all(p(r) for p in preds):
                    found.append(rule)
        for rule, preds in self._single_any:
            if all(p(r) for p in preds):
                found.append(rule)
        return tuple(found)

    def _matches(self, rows: list[Row]) -> list[tuple[int, int]]:
        """(rule, token index) of every pattern match, as spaCy's Matcher finds them."""
        found: list[tuple[int, int]] = []
        n = len(rows)
        cache = self._row_rules
        if len(cache) > 1_000_000:  # bounded memory on endless streams of new words
            cache.clear()
        for i, r in enumerate(rows):
            rules = cache.get(r)
            if rules is None:
                rules = cache[r] = self._one_token_rules(r)
            found.extend([(rule, i) for rule in rules])
            for field, by_value in self._multi_items:
                for rule, preds_by_pos, index in by_value.get(r[field], ()):
                    if self._match_at(rows, i, n, preds_by_pos):
                        found.append((rule, i + index))
            for rule, preds_by_pos, index in self._multi_any:
                if self._match_at(rows, i, n, preds_by_pos):
                    found.append((rule, i + index))
        return found

    @staticmethod
    def _match_at(rows: list[Row], start: int, n: int, preds_by_pos: list) -> bool:
        if start + len(preds_by_pos) > n:
            return False
        return all(all(p(rows[start + j]) for p in preds) for j, preds in enumerate(preds_by_pos))

    def __call__(self, doc: Any) -> Any:
        """Annotate ``doc`` in place and return it."""
        lemma_set: set[int] = set()
        tokens = list(doc)
        rows = [(t.tag_, t.lower_, t.dep_, t.is_space) for t in tokens]
        for rule, i in sorted(self._matches(rows)):
            tok = tokens[i]
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
            for tok in tokens:
                if tok.pos_ in ("VERB", "AUX") and tok.i not in lemma_set:
                    tok.lemma_ = self.lemmatizer.rule_lemmatize(tok)[0]
        return doc
