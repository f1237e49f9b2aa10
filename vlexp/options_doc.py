"""Write docs/OPTIONS.md from the option declarations: ``python -m vlexp.options_doc``.

Every table row comes from a schema (:mod:`vlexp.run_options` for the run's own groups,
each component's ``register(name, schema=...)``), so the reference cannot drift from what
validation accepts; ``tests/test_options_doc.py`` fails when the file is out of date.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlexp import run_options
from vlexp.registry import Opt, Registry

HEADER = """# Options

Generated from the option declarations by `python -m vlexp.options_doc` (do not edit by
hand). Every key below is validated before anything is built; an unknown key or a value
outside the accepted set ends the command with one line naming it. Defaults of the run's
groups are those of `conf/train.yaml`; a component's defaults are its preset's
(`conf/<group>/<name>.yaml`), falling back to the constructor's.
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if value != "" else '`""`'


def _rows(schema: Mapping[str, Opt], defaults: Mapping[str, Any], prefix: str) -> list[str]:
    rows = ["| key | accepts | default | what it does |", "|---|---|---|---|"]
    for key in sorted(schema):
        opt = schema[key]
        accepts = opt.allowed() if opt.registry is None else f"a {opt.registry.kind} config"
        default = _default(defaults[key]) if key in defaults else ""
        what = _cell(opt.help)
        rows.append(f"| `{prefix}{key}` | {_cell(accepts)} | {_cell(default)} | {what} |")
    return rows


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from vlexp.cli import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["paths.output_dir=RUN_DIR", *overrides])
    GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _run_defaults() -> dict[str, Any]:
    return _compose([])


def _preset(group: str, name: str) -> dict[str, Any]:
    """The values preset ``conf/<group>/<name>.yaml`` composes to (empty when none)."""
    from vlexp.cli import CONF_DIR

    if not (Path(CONF_DIR) / group / f"{name}.yaml").is_file():
        return {}
    if group == "sampler/schedule":
        section = _compose(["sampler=tonics", f"sampler/schedule={name}"])["sampler"]["schedule"]
    else:
        section = _compose([f"{group}={name}"])[group.split("/")[0]]
    return section.get("source", {}) if group == "data" else section


def _component_section(title: str, registry: Registry[Any], group: str, key: str) -> list[str]:
    out = [f"## {title}", ""]
    for name in registry.names():
        schema = registry.schema(name)
        if schema is None:
            out += [f"### `{key}.name={name}`", "", "Options: the constructor's arguments.", ""]
            continue
        defaults = {**registry.defaults(name), **_preset(group, name)}
        out += [f"### `{key}.name={name}`", ""]
        out += _rows(schema, defaults, f"{key}.") if schema else ["No options besides `name`."]
        out.append("")
    return out


def render() -> str:
    """The whole docs/OPTIONS.md text."""
    from vlexp.data.sources import DATASETS
    from vlexp.encoders import ENCODERS
    from vlexp.filters import FILTERS
    from vlexp.objectives import OBJECTIVES
    from vlexp.samplers import SAMPLERS
    from vlexp.schedules import SCHEDULES

    cfg = _run_defaults()
    out = [HEADER, "## The run (top level)", ""]
    plain = {k: v for k, v in run_options.TOP.items() if not v.fields}
    out += _rows(plain, cfg, "") + [""]
    groups = [(k, v.fields) for k, v in run_options.TOP.items() if v.fields]
    groups += [("data", run_options.DATA), ("trainer", run_options.TRAINER_CHECKED)]
    for group, schema in groups:
        out += [f"## `{group}`", ""]
        out += _rows(schema or {}, cfg.get(group) or {}, f"{group}.") + [""]
    out += ["Any other `lightning.Trainer` argument is accepted under `trainer.` as well.", ""]
    for name, schema in run_options.LOGGER_OPTIONS.items():
        out += [f"## `logger.name={name}`", ""]
        out += _rows(schema, _preset("logger", name), "logger.") if schema else ["No options."]
        out.append("")
    out += _component_section("Data sources", DATASETS, "data", "data.source")
    out += _component_section("Encoders", ENCODERS, "encoder", "encoder")
    out += _component_section("Objectives", OBJECTIVES, "objective", "objective")
    out += _component_section("Samplers", SAMPLERS, "sampler", "sampler")
    out += _component_section(
        "Sampler schedules", SCHEDULES, "sampler/schedule", "sampler.schedule"
    )
    out += _component_section("Filters", FILTERS, "filter", "filter")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write (or with ``--check``, compare) the options reference."""
    args = sys.argv[1:] if argv is None else argv
    from vlexp.cli import CONF_DIR

    path = Path(CONF_DIR).parent / "docs" / "OPTIONS.md"
    text = render()
    if "--check" in args:
        if not path.is_file() or path.read_text() != text:
            raise SystemExit(f"{path} is out of date: run `python -m vlexp.options_doc`")
        return
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
