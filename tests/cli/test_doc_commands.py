"""Every vlexp command line written in README.md and docs/*.md composes as written.

Each command of a fenced code block (``vlexp <command> ...``, ``python -m vlexp.run ...``,
``python -m vlexp.cli.<command> ...``, continuation lines joined) is composed with its
command's Hydra config, as ``--cfg job`` would: a key the config does not have, a group
option that does not exist or an override Hydra cannot parse fails here, so the docs
cannot drift from the configs. Sweeps (``-m``) compose their first value of each list;
launcher and ``hydra.*`` overrides are Hydra's own and are left out.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF_DIR
from vlexp.cli.main import COMMANDS, LEADING_WORDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
START = re.compile(r"^\s*(vlexp [a-z_-]+|python -m vlexp\.(run|cli\.[a-z_]+))\b")


def _commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        in_block, pending = False, ""
        for line in doc.read_text().splitlines():
            if line.strip().startswith("```"):
                in_block, pending = not in_block, ""
                continue
            if not in_block:
                continue
            if pending:
                pending += " " + line.strip()
            elif START.match(line):
                pending = line.strip()
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            out.append((doc.name, pending))
            pending = ""
    return out


def _command_of(words: list[str]) -> tuple[str, list[str]]:
    if words[0] == "vlexp":
        return words[1], words[2:]
    module = words[2]  # python -m <module>
    if module == "vlexp.run":
        return "train", words[3:]
    for name, command in COMMANDS.items():
        if command.module == module:
            return name, words[3:]
    raise AssertionError(f"no vlexp command runs module {module}")


def _overrides(name: str, args: list[str]) -> list[str]:
    key, leading = LEADING_WORDS.get(name, ("", ()))
    if args and args[0] in leading:
        args = [f"{key}={args[0]}", *args[1:]]
    out = []
    for arg in args:
        if arg.startswith("#"):
            break  # a trailing comment
        if arg in ("-m", "--multirun") or arg.startswith(("hydra.", "hydra/", "-")):
            continue
        k, _, v = arg.partition("=")
        if v.startswith("range("):
            v = v[len("range(") :].split(",")[0]  # a range sweep: its first value
        elif "," in v and not v.startswith(("[", "{", "'", '"')):
            v = v.split(",")[0]  # a sweep: its first value
        out.append(f"{k}={v}")
    return out


CASES = [c for c in _commands() if c[1].split()[1] not in ("clip_benchmark",)]
CASES = [c for c in CASES if "vlexp.cli.clip_benchmark" not in c[1]]


@pytest.mark.parametrize(("doc", "line"), CASES, ids=[f"{d}:{line[:60]}" for d, line in CASES])
def test_documented_command_composes(doc, line):
    words = shlex.split(line, comments=True)
    name, args = _command_of(words)
    command = COMMANDS.get(name)
    assert command is not None, f"{doc}: unknown command in `{line}`"
    if command.config is None:
        return
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose(config_name=command.config, overrides=_overrides(name, args))


def test_the_docs_hold_commands_to_check():
    assert len(CASES) >= 20
