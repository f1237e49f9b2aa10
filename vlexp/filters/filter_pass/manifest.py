"""The output folder's record of its pass (``_pass.json``): input, units, settings.

Written by the first job that starts on an output folder and checked by every later one
(a resumed run, the other jobs of an array, the merge step), so that finished units are
only ever combined with units filtered from the same input with the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlexp.filters.filter_pass.units import Unit
from vlexp.io import write_json_atomic

MANIFEST = "_pass.json"
VERSION = 1


def build_manifest(
    kind: str,
    input_spec: str,
    units: list[Unit],
    settings: dict[str, Any],
    criteria: list[str],
    table: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a pass (``table``: path, format, part suffix of a table input)."""
    return {
        "vlexp_filter_pass": VERSION,
        "kind": kind,
        "input": input_spec,
        "table": table,
        "settings": {**settings, "kind": kind},
        "criteria": criteria,
        "units": [u.as_dict() for u in units],
    }


def load_manifest(output_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``output_dir``; a FileNotFoundError saying what to run first."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {output_dir} holds no filter pass. Run "
            "`python -m vlexp.cli.filter input=... output_dir=...` first."
        )
    return json.loads(path.read_text())


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def write_or_check_manifest(output_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest, or check that the one already there describes the same pass."""
    path = output_dir / MANIFEST
    if not path.is_file():
        write_json_atomic(path, manifest)
        return
    old = json.loads(path.read_text())
    diffs = []
    if old.get("units") != manifest["units"]:
        diffs.append(
            f"units: {len(old.get('units', []))} recorded, {len(manifest['units'])} now "
            "(the input's shards or rows changed)"
        )
    diffs += _differences(
        {"kind": old.get("kind"), "settings": old.get("settings", {})},
        {"kind": manifest["kind"], "settings": manifest["settings"]},
    )
    if diffs:
        raise ValueError(
            f"{output_dir} holds a filter pass run with other input or settings, so its "
            f"finished units cannot be reused: {'; '.join(diffs[:8])}. Use a new output "
            "folder, or run with the recorded settings to resume."
        )
