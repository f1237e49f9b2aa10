"""Each option is declared once: the schema is the reference, the presets and the
constructors agree with it, and docs/OPTIONS.md is generated from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF_DIR
from vlexp.data.sources import DATASETS
from vlexp.encoders import ENCODERS
from vlexp.filters import FILTERS
from vlexp.objectives import OBJECTIVES
from vlexp.options_doc import render
from vlexp.samplers import SAMPLERS
from vlexp.schedules import SCHEDULES

REPO = Path(__file__).resolve().parents[1]
GROUPS = [
    (DATASETS, "data"),
    (ENCODERS, "encoder"),
    (OBJECTIVES, "objective"),
    (SAMPLERS, "sampler"),
    (FILTERS, "filter"),
    (SCHEDULES, "sampler/schedule"),
]


def _presets():
    for registry, group in GROUPS:
        for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            data = data.get("source", {}) if group == "data" else data
            if data.get("name") == path.stem:  # a component's own preset, not a variant
                yield registry, path, data


def test_options_reference_is_generated_from_the_declarations():
    assert (REPO / "docs" / "OPTIONS.md").read_text() == render(), (
        "docs/OPTIONS.md is out of date: run `python -m vlexp.options_doc`"
    )


@pytest.mark.parametrize("registry,path,preset", list(_presets()), ids=lambda v: str(v)[-40:])
def test_preset_defaults_equal_the_constructor_defaults(registry, path, preset):
    """A preset's plain values are the constructor's defaults (one default per option)."""
    defaults = registry.defaults(preset["name"])
    for key, value in preset.items():
        if key not in defaults or isinstance(value, dict | list):
            continue
        if value == "???" or (isinstance(value, str) and "${" in value):
            continue  # required or interpolated: no constructor default to agree with
        assert defaults[key] == value, (
            f"{path.name}: {key} is {value}, the constructor's {defaults[key]}"
        )


@pytest.mark.parametrize("registry", [g[0] for g in GROUPS], ids=lambda r: r.kind)
def test_schema_and_signature_name_the_same_options(registry):
    """Where a factory lists its options explicitly, the schema declares exactly those."""
    for name in registry.names():
        schema = registry.schema(name)
        if schema is None:
            continue
        params = inspect.signature(registry.get(name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        explicit = {k for k, p in params.items() if p.default is not inspect.Parameter.empty}
        context = {"seed", "embed_dim", "image_mean", "image_std", "encoder_config", "tags",
                   "rank", "world_size", "tag_table", "total_steps", "dataset"}  # fmt: skip
        config_only = {"tagging"}  # read by the datamodule before the sampler is built
        missing = set(schema) - set(params) - config_only
        undeclared = explicit - set(schema) - context
        assert not missing, f"{registry.kind} {name}: schema keys not in the signature {missing}"
        assert not undeclared, (
            f"{registry.kind} {name}: options without a schema entry {undeclared}"
        )
