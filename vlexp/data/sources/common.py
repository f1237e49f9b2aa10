"""What the file sources share: one options object, path checks, caps and held-out sets.

Every file source (``csv``, ``webdataset``, ``wds_indexed``) accepts the options of
:class:`SplitOptions` next to its own: ``class_names``, ``eval_name`` and ``templates``
(held-out sets and their zero-shot prompts), ``num_train`` / ``num_val`` / ``num_test``
(keep at most the first N pairs of each split; ``null``: all, so the size presets written
for the synthetic source, e.g. ``debug=tiny_run``, also shrink file data),
``max_bad_fraction`` / ``min_samples`` (the bad-sample policy) and ``image_size`` (read by
the tiny encoders). The synthetic generator's own knobs are refused here like any other
unknown key.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.eval_set import EvalSet
from vlexp.data.paths import need_path
from vlexp.data.readers.webdataset_reader import STREAMING_SAMPLERS
from vlexp.data.records import ClassVocab
from vlexp.data.shards.index import IndexedShardPairs, ShardIndex, cached_index
from vlexp.data.shards.listing import list_shards
from vlexp.data.templates import load_templates
from vlexp.data.types import Subset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitOptions:
    """The options every file source accepts (see the module docstring)."""

    class_names: Any = None
    eval_name: str = "heldout"
    templates: Any = None
    num_train: int | None = None
    num_val: int | None = None
    num_test: int | None = None
    max_bad_fraction: float = 0.01
    min_samples: int = 1000
    image_size: int | None = None

    @classmethod
    def take(
        cls, source: str, factory: Callable[..., Any], options: Mapping[str, Any]
    ) -> SplitOptions:
        """The shared options out of ``options`` (the rest of a source's config keys):
        caps checked, anything else refused with the accepted list."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(k for k in options if k not in fields)
        if unknown:
            raise TypeError(
                f"data.source '{source}' got unknown option(s) {unknown}; accepted options: "
                f"{sorted(_accepted(factory) + fields)}"
            )
        shared = {k: v for k, v in options.items() if k in fields}
        for key in ("num_train", "num_val", "num_test"):
            shared[key] = _check_cap(shared.get(key), f"data.source.{key}")
        return cls(**shared)

    def cap(self, split: str) -> int | None:
        """The pair cap of ``split`` (``train``, ``val`` or ``test``)."""
        return getattr(self, f"num_{split}")

    def prompt_templates(self) -> list[str]:
        """The zero-shot prompt templates of the held-out sets."""
        return load_templates(self.templates, "data.source.templates")

    def held_out(self, stage: str, build: Any, templates: list[str]) -> list[EvalSet]:
        """The held-out ``stage`` set built by ``build()`` (none when ``build`` is None)."""
        return _held_out(self.eval_name, stage, build, self.cap(stage), templates)


def _accepted(func: Any) -> list[str]:
    return [
        n
        for n, p in inspect.signature(func).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD and n not in ("seed", "build_train")
    ]


def need_file(value: Any, key: str, what: str) -> Path:
    """An existing file named by config ``key`` (ValueError when unset)."""
    return need_path(value, key, what)


def need_dir(value: Any, key: str, what: str) -> Path:
    """An existing folder named by config ``key`` (ValueError when unset)."""
    return need_path(value, key, what, folder=True)


def shards_of(spec: Any, key: str) -> list[str]:
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise ValueError(
            f"{key} is not set: give the shards, e.g. {key}='/data/cc3m/{{00000..00331}}.tar' "
            "(brace ranges, a folder, a glob, or several specs joined by '::')"
        )
    try:
        return list_shards(spec if isinstance(spec, str) else [str(s) for s in spec])
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{key}: {e}") from None


def _check_cap(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: expected a positive integer or null (all pairs)")
    return int(value)


def capped(source: Any, n: int | None) -> Any:
    """The first ``n`` pairs of a map-style source (the source itself when ``n`` is None
    or not smaller)."""
    if n is None or n >= len(source):
        return source
    return Subset(source, np.arange(n))


def _labels_of(source: Any) -> np.ndarray | None:
    """Per-pair class ids of a reader (through :class:`Subset` views), None when unknown."""
    if isinstance(source, Subset):
        inner = _labels_of(source.source)
        return None if inner is None else inner[source.indices]
    labels = getattr(source, "labels", None)
    if labels is None and isinstance(getattr(source, "index", None), ShardIndex):
        labels = source.index.labels
    return None if labels is None else np.asarray(labels)


def pairs_eval_set(name: str, source: Any, templates: list[str]) -> EvalSet:
    """A held-out :class:`EvalSet` of a pair source: retrieval (one caption per image) plus
    zero-shot classification when the pairs carry labels and class names exist."""
    labels = _labels_of(source)
    names = list(source.class_names or [])
    zeroshot = bool(names) and labels is not None and bool((labels >= 0).any())
    top = int(labels.max()) if zeroshot else -1  # type: ignore[union-attr]
    if top >= len(names):
        log.warning(
            "eval set %s: labels go up to %d but only %d class names exist; zero-shot "
            "classification is off",
            name,
            top,
            len(names),
        )
        zeroshot = False
    return EvalSet.from_pairs(name, source, names if zeroshot else (), templates)


def _held_out(
    name: str, stage: str, build: Any, cap: int | None, templates: list[str]
) -> list[EvalSet]:
    if build is None:
        return []
    source = capped(build(), cap)
    log.info("%s set '%s': %d pairs", stage, name, len(source))
    return [pairs_eval_set(name, source, templates)]


def plain_list(value: Any) -> Any:
    if value is None or isinstance(value, str | os.PathLike | ClassVocab):
        return value
    return [str(v) for v in value]


def shard_eval_builder(
    spec: Any,
    key: str,
    class_names: Any,
    index_workers: int,
    index_dir: str | None,
    opts: SplitOptions,
) -> Any:
    """A builder of the held-out pairs in shards ``spec`` (indexed once, cached in
    ``index_dir``), or None when ``spec`` is unset."""
    if spec is None:
        return None
    shards = shards_of(spec, key)
    bad = {"max_bad_fraction": opts.max_bad_fraction, "min_samples": opts.min_samples}
    return lambda: IndexedShardPairs(
        cached_index(shards, class_names, index_dir, None, False, index_workers, False, **bad),
        **bad,
    )


# --------------------------------------------------------------------- datamodule support
def is_streaming(source: Any) -> bool:
    """True for sources read as a stream (no random access; batched by a plain DataLoader)."""
    return isinstance(source, torch.utils.data.IterableDataset)


def check_streaming_setup(
    source: Any,
    sampler_cfg: Mapping[str, Any],
    filter_cfg: Mapping[str, Any],
    total_steps: int | None,
) -> None:
    """Raise a clear error when the config asks a streaming source for something it cannot do."""
    name = getattr(source, "__class__", type(source)).__name__
    sampler = str(sampler_cfg.get("name"))
    if sampler not in STREAMING_SAMPLERS:
        raise ValueError(
            f"sampler={sampler} needs random access to the training pairs, but the data source "
            f"streams them ({name}, data=webdataset). A stream supports only sampler="
            f"{'|'.join(STREAMING_SAMPLERS)} (shards shuffled per epoch + a shuffle buffer of "
            "data.source.shuffle_buffer samples). For TOnICS and other batch-planning samplers "
            "use data=wds_indexed on the same shards (a one-off index pass, then random access)."
        )
    length = total_steps if total_steps is not None else -1
    reasons = stream_checks(
        {"resampled": getattr(source, "resampled", False)},
        {"filter": filter_cfg, "trainer": {"max_steps": length}},
    )
    if reasons:  # the same reasons validation gives, for callers that skipped it
        raise ValueError("; ".join(reasons))


def bad_sample_report(source: Any) -> dict[str, Any] | None:
    """Skipped/altered record counts of a reader (``None`` for sources that keep none):
    ``read`` (this process's counter) and, for indexed shards, ``index_pass``."""
    while isinstance(source, Subset):
        source = source.source
    out: dict[str, Any] = {}
    index = getattr(source, "index", None)
    if isinstance(index, ShardIndex) and index.bad:
        out["index_pass"] = dict(index.bad)
    counter = getattr(source, "bad", None)
    if isinstance(counter, BadSampleCounter):
        out["read"] = counter.as_dict()
    return out or None


def held_out_names(options: dict[str, Any]) -> list[str]:
    """The ``eval_names`` hook of file sources: the one held-out set name they log under."""
    return [str(options.get("eval_name") or "heldout")]


def stream_checks(options: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """The ``checks`` hook of a streamed source: a length and no pre-pass filter."""
    out: list[str] = []
    flt = (context.get("filter") or {}).get("name", "none")
    if flt != "none":
        out.append(
            f"filter={flt} scans every training caption before training, which a stream cannot "
            "offer; run the standalone pass first (python -m vlexp.cli.filter input=... "
            "output_dir=..., docs/FILTER_PASS.md) and stream its output with filter=none, or "
            "use data=wds_indexed"
        )
    max_steps = (context.get("trainer") or {}).get("max_steps")
    if not options.get("resampled") and not (isinstance(max_steps, int) and max_steps > 0):
        out.append(
            "resampled=false: a non-resampled stream has no known length; set trainer.max_steps "
            "(> 0), or data.source.resampled=true with data.source.samples_per_epoch"
        )
    return out
