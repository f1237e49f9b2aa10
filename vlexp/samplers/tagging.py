"""Object tags for a tag-aware sampler (``sampler.tagging`` of ``sampler=tonics``).

``sampler.tagging.source`` picks the tags: the data's own (``data``), the captions tagged
with an ontology (``captions``, on the fly or from a ``vlexp tag`` file), or whichever
covers more (``auto``). ``sampler.tagging.groups`` decides group membership: ``named``
(default: the caption names the object) or ``any`` (the object is anywhere in the
image). Coverage is logged and written to ``metrics.json`` (``tag_report``); too little
coverage stops the run before training. Details: docs/DESIGN.md ("TOnICS tags").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from vlexp.data.tags import CaptionTagger, Ontology, OntologyClass, TagCoverage, load_tag_file
from vlexp.data.types import Subset, TagTable
from vlexp.notices import loaded

log = logging.getLogger(__name__)

TAG_SOURCES = ("data", "captions", "auto")
GROUP_RULES = ("named", "any")


@dataclass(frozen=True)
class TaggingOptions:
    """``sampler.tagging``: where the sampler's object tags come from (module docstring)."""

    source: str = "auto"
    ontology: str = "coco"
    backend: str = "auto"
    lemmatize: bool = True
    path: str | None = None
    groups: str = "named"

    def __post_init__(self) -> None:
        if self.source not in TAG_SOURCES:
            raise ValueError(
                f"sampler.tagging.source={self.source!r} is not one of {list(TAG_SOURCES)}"
            )
        if self.groups not in GROUP_RULES:
            raise ValueError(
                f"sampler.tagging.groups={self.groups!r} is not one of {list(GROUP_RULES)}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TaggingOptions:
        """From the config mapping; unknown keys are an error naming the accepted ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(
                f"sampler.tagging got unknown option(s) {unknown}; accepted: {sorted(known)}"
            )
        return cls(**dict(cfg))


@dataclass
class TrainTags:
    """The resolved tags, their coverage report, and the sampler's remaining options."""

    table: TagTable | None
    report: TagCoverage | None
    sampler_options: dict[str, Any]


def split_sampler_config(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], TaggingOptions | None]:
    """The sampler's own options and its ``tagging`` options (``None`` when absent)."""
    options = dict(cfg)
    tagging = options.pop("tagging", None)
    return options, None if tagging is None else TaggingOptions.from_config(tagging)


def caption_tags(
    source: Any, indices: np.ndarray | None, opts: TaggingOptions, ontology: Ontology | None = None
) -> tuple[TagTable, TagCoverage]:
    """Caption tags of ``source`` (restricted to ``indices``): from the tag file or on the fly
    (against ``ontology``, by default ``opts.ontology``)."""
    if opts.path:
        table, header = load_tag_file(opts.path, list(source.captions))
        if indices is not None:
            table = table.subset(indices)
        detail = {"path": str(opts.path), "ontology": header.get("ontology")}
        report = TagCoverage.of(table, table.num_pairs, "file", **detail)
        loaded(
            "tag file",
            opts.path,
            f"{table.num_pairs} pairs, {100 * report.coverage:.1f}% tagged, "
            f"{len(table.class_names)} classes (ontology {header.get('ontology')})",
        )
        return table, report
    captions = source.captions if indices is None else Subset(source, indices).captions
    tagger = CaptionTagger(
        ontology or opts.ontology, lemmatize=opts.lemmatize, backend=opts.backend
    )
    table = tagger.tag_captions(captions)
    detail = {"ontology": tagger.ontology.name, "backend": tagger.last_report.backend}
    return table, TagCoverage.of(table, table.num_pairs, "captions", **detail)


def data_vocabulary(table: TagTable, ontology: str) -> Ontology:
    """The data's classes as an ontology to read captions with: each class matched by its
    name, plus the synonyms and plurals of the class of that name in ``ontology``."""
    known = {c.name.lower(): c for c in Ontology.load(ontology).classes}
    names, parents = table.class_names, table.parents
    classes = []
    for name, parent in zip(names, parents):
        same = known.get(name.lower())
        classes.append(
            OntologyClass(
                name,
                None if parent < 0 else names[parent],
                synonyms=same.synonyms if same else (),
                plurals=same.plurals if same else (),
            )
        )
    return Ontology(classes, name=f"data classes + {ontology} synonyms")


def named_tags(data: TagTable, captions: TagTable) -> TagTable:
    """Per pair, the data's tags that its caption names too (classes matched by name)."""
    if data.num_pairs != captions.num_pairs:
        raise ValueError(
            f"{data.num_pairs} pairs have data tags but {captions.num_pairs} have caption tags"
        )
    column = {n.lower(): i for i, n in enumerate(data.class_names)}
    to_data = np.array([column.get(n.lower(), -1) for n in captions.class_names], np.int64)
    c = max(data.num_classes, 1)
    cap_class = to_data[captions.values] if len(captions.values) else np.zeros(0, np.int64)
    cap_pair = np.repeat(np.arange(captions.num_pairs), captions.counts())
    named = np.unique(cap_pair[cap_class >= 0] * c + cap_class[cap_class >= 0])
    data_pair = np.repeat(np.arange(data.num_pairs), data.counts())
    keep = np.isin(data_pair * c + data.values, named)
    offsets = np.zeros(data.num_pairs + 1, dtype=np.int64)
    np.cumsum(np.bincount(data_pair[keep], minlength=data.num_pairs), out=offsets[1:])
    return TagTable(offsets, data.values[keep], data.class_names, data.parents)


def resolve_train_tags(
    source: Any, indices: np.ndarray | None, sampler_cfg: Mapping[str, Any]
) -> TrainTags:
    """The tags a sampler gets for the training pairs ``source[indices]`` (all when ``None``).

    ``source`` is the training source before filtering (a tag file is checked against its
    captions), ``indices`` the pairs the filter kept. Without ``tagging`` in
    ``sampler_cfg`` (samplers that ignore tags) the data's table is passed through.
    """
    options, opts = split_sampler_config(sampler_cfg)
    train = source if indices is None else Subset(source, indices)
    if opts is None:
        return TrainTags(train.tag_table, None, options)
    min_coverage = float(options.get("min_tag_coverage", 0.0))
    n = len(train)
    table: TagTable | None = None
    report: TagCoverage | None = None
    if opts.source in ("data", "auto"):
        table = train.tag_table
        report = TagCoverage.of(table, n, "data")
    if opts.source == "captions" or (
        opts.source == "auto" and (table is None or report.coverage < min_coverage)  # type: ignore[union-attr]
    ):
        cap_table, cap_report = caption_tags(source, indices, opts)
        if report is None or cap_report.coverage > report.coverage:
            if report is not None:
                log.info(
                    "sampler.tagging.source=auto: the data's tags cover %.1f%% of the pairs, "
                    "the captions' %.1f%%: using caption tags",
                    100 * report.coverage,
                    100 * cap_report.coverage,
                )
            table, report = cap_table, cap_report
    assert report is not None
    if opts.groups == "named" and report.source == "data" and table is not None:
        vocabulary = None if opts.path else data_vocabulary(table, opts.ontology)
        cap_table, cap_report = caption_tags(source, indices, opts, vocabulary)
        table = named_tags(table, cap_table)
        detail = {"groups": "named", **cap_report.detail}
        report = TagCoverage.of(table, n, "data+captions", **detail)
    log.info("%s", report.table_text())
    return TrainTags(table, report, options)


__all__ = [
    "GROUP_RULES",
    "TAG_SOURCES",
    "TaggingOptions",
    "TrainTags",
    "caption_tags",
    "data_vocabulary",
    "named_tags",
    "resolve_train_tags",
    "split_sampler_config",
]
