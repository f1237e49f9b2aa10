"""Caption tagging pass: ``python -m vlexp.cli.tag data=<source> [key=value ...]``.

Tags the captions of a training set once with an object ontology
(:class:`~vlexp.data.tags.CaptionTagger`) and writes a *tag file* next to the data (a
new ``.npz`` file; the data itself is never touched), plus a JSON report with the tag
coverage and the pairs of every class. Training then reads the file instead of tagging
at start-up::

    python -m vlexp.cli.tag data=csv data.source.path=/data/cc3m/train.tsv
    python -m vlexp.run data=csv data.source.path=/data/cc3m/train.tsv sampler=tonics \\
        sampler.tagging.path=/data/cc3m/train.tags.npz

The config is ``conf/tag_pass.yaml``; its ``data`` group is the trainer's ``conf/data``,
so the same data overrides select the same pairs (the file records a fingerprint of
the captions and training refuses a file made for other pairs).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from vlexp.cli import CONF_DIR
from vlexp.data.tags import (
    CaptionTagger,
    TagCoverage,
    captions_fingerprint,
    save_tag_file,
)
from vlexp.data.types import Subset, TagTable

log = logging.getLogger("vlexp.tag_pass")


def default_output(source: Any) -> Path:
    """Where the tag file goes when ``output`` is not set: next to the data."""
    while isinstance(source, Subset):
        source = source.source
    table = getattr(source, "path", None)
    if table is not None:
        table = Path(table)
        return table.with_name(f"{table.stem}.tags.npz")
    shards = getattr(getattr(source, "index", None), "shards", None)
    if shards is not None and len(shards):
        folders = {Path(str(s)).parent for s in shards}
        if len(folders) == 1:
            return folders.pop() / "tags.npz"
    raise ValueError(
        f"no default place next to the data for {type(source).__name__}; set output=<file>.npz"
    )


def report_path(output: Path) -> Path:
    """The JSON report written beside the tag file (``x.tags.npz`` -> ``x.tags.json``)."""
    return output.with_suffix(".json")


def tag_in_chunks(tagger: CaptionTagger, captions: Any, chunk: int) -> tuple[TagTable, int]:
    """Tag ``captions`` ``chunk`` at a time (one progress line each); the number read by spaCy."""
    lists: list[list[int]] = []
    n, spacy_read, start = len(captions), 0, time.time()
    for s in range(0, n, chunk):
        lists.extend(tagger.tag_lists([captions[i] for i in range(s, min(n, s + chunk))]))
        spacy_read += tagger.last_report.num_spacy
        log.info("tagged %d / %d captions (%.0f s)", len(lists), n, time.time() - start)
    return tagger.ontology.table(lists), spacy_read


def run_tag_pass(cfg: DictConfig) -> dict[str, Any]:
    """Build the configured training source, tag its captions, write file and report."""
    from vlexp.data.sources import DATASETS  # heavy imports only once the config is valid

    opts = dict(OmegaConf.to_container(cfg.tagging, resolve=True))  # type: ignore[arg-type]
    tagger = CaptionTagger(
        opts.pop("ontology", "coco"),
        lemmatize=bool(opts.pop("lemmatize", True)),
        backend=str(opts.pop("backend", "auto")),
    )
    if opts:
        raise ValueError(f"unknown tagging options {sorted(opts)}; see conf/tag_pass.yaml")
    source_cfg = OmegaConf.to_container(cfg.data.source, resolve=True)
    train = DATASETS.build(source_cfg, seed=int(cfg.seed)).train  # type: ignore[arg-type]
    output = Path(cfg.output) if cfg.get("output") else default_output(train)
    if output.suffix != ".npz":
        raise ValueError(f"output must be a .npz file, got {output}")
    if output.exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{output} exists; set overwrite=true to replace it")
    captions = train.captions
    table, spacy_read = tag_in_chunks(tagger, captions, int(cfg.chunk_size))
    meta = {
        "ontology": tagger.ontology.name,
        "backend": tagger.last_report.backend,  # "rules" when spaCy was unavailable
        "lemmatize": tagger.lemmatize,
        "data": source_cfg.get("name") if isinstance(source_cfg, dict) else None,
    }
    save_tag_file(output, table, captions_fingerprint(captions), meta)
    coverage = TagCoverage.of(table, table.num_pairs, "captions", **meta)
    report = coverage.as_dict() | {"tag_file": str(output), "read_with_spacy": spacy_read}
    report_path(output).write_text(json.dumps(report, indent=2))
    log.info("%s", coverage.table_text())
    log.info("wrote %s and %s", output, report_path(output))
    log.info("train with: sampler=tonics sampler.tagging.path=%s", output)
    return report


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="tag_pass")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry point."""
    return run_tag_pass(cfg)


if __name__ == "__main__":
    main()
