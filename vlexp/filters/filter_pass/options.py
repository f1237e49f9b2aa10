"""Settings of the filtering pass (what ``conf/filter_pass.yaml`` holds), checked up front."""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("auto", "webdataset", "table")
PATH_STYLES = ("absolute", "relative")
# options that say where and how this job runs, not what it decides
RUN_ONLY_KEYS = ("input", "output_dir", "workers", "batch_size", "shard_range", "array_index",
                 "array_count", "progress")  # fmt: skip


def full_filter_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the registered filter's defaults filled in, so that a spec that
    leaves a default out and one that spells it out compare equal."""
    from vlexp.filters import FILTERS

    params = inspect.signature(FILTERS.get(spec["name"])).parameters.values()
    defaults = {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return {"name": spec["name"], **defaults, **spec}


def speed_options(name: str) -> frozenset[str]:
    """Config keys of filter ``name`` that change only its speed (its ``speed_options``)."""
    from vlexp.filters import FILTERS

    return frozenset(getattr(FILTERS.get(name), "speed_options", frozenset()))


def available_cores() -> int:
    """CPU cores this process may use (the SLURM/cgroup allocation where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class PassOptions:
    """Everything the pass needs. See ``conf/filter_pass.yaml`` for the documented defaults.

    Only :meth:`result_settings` affect which pairs are kept and what the unit reports
    say; a resumed run must use the same ones (the output folder records them).
    """

    input: str | None
    output_dir: str
    filter: dict[str, Any] = field(default_factory=lambda: {"name": "cat"})
    kind: str = "auto"
    workers: int | None = None
    batch_size: int = 256
    chunk_rows: int = 10000
    image_col: str = "filepath"
    caption_col: str = "caption"
    sep: str | None = None
    image_root: str | None = None
    image_paths: str = "absolute"
    check_files: bool = True
    max_bad_fraction: float = 0.01
    min_samples: int = 1000
    max_examples: int = 5
    shard_range: str | None = None
    array_index: int | None = None
    array_count: int | None = None
    progress: bool = True

    def validate(self) -> PassOptions:
        """Raise a ValueError naming the bad option and what to pass instead."""
        if not self.input:
            raise ValueError(
                "input is not set: pass input=/path/to/shards (a folder, a glob or a brace "
                "list such as '/data/{00000..00099}.tar') or input=/path/to/pairs.csv"
            )
        if not self.output_dir:
            raise ValueError("output_dir is not set: pass output_dir=/path/to/new/folder")
        if not isinstance(self.filter, dict) or "name" not in self.filter:
            raise ValueError(f"filter must be a mapping with a 'name', got {self.filter!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.image_paths not in PATH_STYLES:
            raise ValueError(f"image_paths must be one of {PATH_STYLES}, got {self.image_paths!r}")
        for name, low in (("batch_size", 1), ("chunk_rows", 1), ("min_samples", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {self.max_examples}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ValueError(
                f"workers must be an integer >= 1 or null (all cores), got {self.workers!r}"
            )
        if not 0.0 <= float(self.max_bad_fraction) <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if (self.array_index is None) != (self.array_count is None):
            raise ValueError("give both array_index and array_count (or neither)")
        if self.array_count is not None and self.shard_range is not None:
            raise ValueError("give either shard_range or array_index/array_count, not both")
        return self

    @property
    def num_workers(self) -> int:
        """Worker processes to use (``workers`` or all available cores)."""
        return self.workers if self.workers is not None else available_cores()

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide the results (recorded in the output folder)."""
        d = asdict(self)
        for k in RUN_ONLY_KEYS:
            d.pop(k)
        d["filter"] = {
            k: v
            for k, v in full_filter_spec(d["filter"]).items()
            if k not in speed_options(d["filter"]["name"])
        }
        if d["image_root"] is not None:
            d["image_root"] = os.path.abspath(d["image_root"])
        return d
