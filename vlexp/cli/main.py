"""The ``vlexp`` command: ``vlexp <command> [key=value ...]``.

``train``, ``eval``, ``filter``, ``tag``, ``fewshot``, ``export``, ``export-model`` and
``teacher`` are Hydra apps (configs from conf/, the same ``group=option key=value``
overrides, ``--help``, ``--cfg job``, ``-m`` sweeps and ``--shell-completion``);
``clip_benchmark`` keeps its ``--flag`` options. Nothing heavy (torch, Lightning) is imported until a command actually
runs, so ``--help`` and ``--cfg job`` answer quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlexp.cli import CONF_DIR


@dataclass(frozen=True)
class Command:
    """One subcommand: ``target`` is ``module:function``; Hydra apps name a ``config``."""

    target: str
    help: str
    config: str | None = None  # conf/<config>.yaml for a Hydra app; None: argv-style

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    def load(self) -> Callable[..., Any]:
        """The function that runs the command (imports its module)."""
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


COMMANDS: dict[str, Command] = {
    "train": Command("vlexp.cli.train:run", "train a model (conf/train.yaml)", "train"),
    "eval": Command("vlexp.cli.evaluate:run", "evaluate a checkpoint on any eval set", "evaluate"),
    "filter": Command(
        "vlexp.cli.filter:run_from_config", "CAT filter pass over data files", "filter_pass"
    ),
    "tag": Command("vlexp.cli.tag:run_tag_pass", "tag captions for TOnICS", "tag_pass"),
    "fewshot": Command(
        "vlexp.cli.fewshot:run", "few-shot linear probes of a checkpoint", "fewshot"
    ),
    "export": Command("vlexp.cli.export:run", "write a data source as CSV or tar shards", "export"),
    "export-model": Command(
        "vlexp.cli.export_model:run",
        "write a checkpoint for open_clip / transformers",
        "export_model",
    ),
    "teacher": Command("vlexp.cli.teacher:run", "train the synthetic concept teacher", "teacher"),
    "clip_benchmark": Command("vlexp.cli.clip_benchmark:main", "CLIP_benchmark on a checkpoint"),
}

_COMPLETION_FLAGS = ("-sc", "--shell-completion")

# a leading bare word that stands for ``key=word``: ``vlexp filter merge`` = ``mode=merge``
LEADING_WORDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "filter": ("mode", ("run", "merge")),
    "teacher": ("action", ("train-synthetic",)),
}


def hydra_app(name: str, command: Command) -> Callable[[], Any]:
    """A Hydra app for ``command`` whose task imports the command's module only when run."""
    import hydra

    def task(cfg: Any) -> Any:
        return command.load()(cfg)

    # Hydra names the job (and its log file) after the task function's module
    task.__module__ = command.module
    task.__qualname__ = task.__name__ = name
    return hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=command.config)(task)


def usage() -> str:
    """The command list printed by ``vlexp --help``."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    return (
        "usage: vlexp <command> [overrides ...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`vlexp <command> --help` describes one command; "
        "`vlexp -sc install=bash` prints the bash completion script."
    )


def _complete(args: list[str]) -> None:
    """Shell completion: complete the command name, or hand the line to its Hydra app."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    query = any(a.startswith("query=") for a in args)
    if query and (len(words) < 2 or (len(words) == 2 and not line.endswith(" "))):
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(n for n in COMMANDS if n.startswith(prefix)))
        return
    name = words[1] if query else "train"  # install/uninstall: the script is the same
    command = COMMANDS.get(name)
    if command is None or command.config is None:
        return
    if query:  # the app sees the line without the command word
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (
            " " if line.endswith(" ") else ""
        )
    sys.argv = [sys.argv[0], *args]
    hydra_app(name, command)()


def _prepare_argv(name: str, command: Command, rest: list[str]) -> None:
    """``sys.argv`` and ``__main__`` as if ``python -m <command module> <rest>`` had run.

    Lightning starts DDP ranks by re-running the main module (``python -m
    __main__.__spec__.name`` + ``sys.argv[1:]``); naming the command's module there makes
    every rank run the same command with the same overrides.
    """
    key, words = LEADING_WORDS.get(name, ("", ()))
    if rest and rest[0] in words:
        rest = [f"{key}={rest[0]}", *rest[1:]]
    sys.argv = [sys.argv[0], *rest]
    main_module = sys.modules.get("__main__")
    current = getattr(main_module, "__spec__", None)
    if main_module is not None and (current is None or current.name == "vlexp.cli.main"):
        main_module.__spec__ = importlib.util.find_spec(command.module)


def main(argv: Sequence[str] | None = None) -> Any:
    """``vlexp <command> [args ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in _COMPLETION_FLAGS:
        return _complete(args)
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise SystemExit(f"vlexp: unknown command {name!r}; one of: {', '.join(COMMANDS)}")
    if command.config is None:
        return command.load()(rest)
    if not any(a in _COMPLETION_FLAGS for a in rest):
        _prepare_argv(name, command, rest)
    else:
        sys.argv = [sys.argv[0], *rest]
    return hydra_app(name, command)()


if __name__ == "__main__":
    main()
