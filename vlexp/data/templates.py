"""Prompt templates and name lists read from files (JSON list, JSON dict or text lines).

Shared by the data sources (held-out sets' zero-shot prompts) and the extra evaluation
sets; errors name the config key to fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlexp.data.paths import need_path

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class EvalDataError(FileNotFoundError):
    """An evaluation set's file or folder is missing or unusable (names the config key)."""


def need_file(path: Any, key: str, what: str) -> Path:
    """``path`` as a :class:`Path`; :class:`EvalDataError` naming ``key`` when unset or missing."""
    return need_path(path, key, what, error=EvalDataError, unset_error=EvalDataError)


def read_text_lines(path: Path) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def load_templates(
    templates: str | os.PathLike | Sequence[str] | None,
    key: str = "templates",
    templates_key: str | None = None,
) -> list[str]:
    """Prompt templates from a list, a JSON file (a list, or a dict read at ``templates_key``,
    e.g. CLIP_benchmark's ``en_zeroshot_classification_templates.json``) or a text file (one
    per line). ``{c}`` placeholders (CLIP_benchmark's) become ``{}``; each template must hold
    exactly one placeholder. ``None`` gives ``["a photo of a {}."]``.
    """
    if templates is None:
        out = list(DEFAULT_TEMPLATES)
    elif isinstance(templates, str | os.PathLike):
        p = need_file(templates, key, "prompt templates file")
        out = load_name_list(p, key, templates_key, "templates")
    else:
        out = [str(t) for t in templates]
    out = [t.replace("{c}", "{}") for t in out]
    bad = [t for t in out if t.count("{}") != 1 or t.replace("{}", "").count("{") > 0]
    if not out or bad:
        raise ValueError(
            f"{key}: every prompt template needs exactly one '{{}}' (or '{{c}}') placeholder for "
            f"the class name; got {bad[:3] if bad else 'no templates'}"
        )
    return out


def load_name_list(path: Path, key: str, dict_key: str | None, what: str) -> list[str]:
    """A list of strings from a JSON list/dict (at ``dict_key``) or a text file."""
    if path.suffix.lower() != ".json":
        return read_text_lines(path)
    blob = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(blob, dict):
        if dict_key is None:
            raise ValueError(
                f"{key}={path} holds a JSON object with keys {sorted(blob)[:8]}; say which list to "
                f"use with {what}_key=<key> (e.g. {what}_key=imagenet1k)"
            )
        if dict_key not in blob:
            raise KeyError(f"{key}={path} has no key {dict_key!r}; its keys: {sorted(blob)[:8]}")
        blob = blob[dict_key]
    if not isinstance(blob, list) or not all(isinstance(x, str) for x in blob):
        raise ValueError(f"{key}={path}: expected a JSON list of strings")
    return list(blob)
