"""vlexp: data-efficient vision-language alignment experiments."""

from __future__ import annotations

import importlib.abc
import sys

__version__ = "0.1.0"

# Commands whose modules moved into ``vlexp.cli``: importing or running the old name
# (``python -m vlexp.filter ...``) fails with the command to use instead.
MOVED_COMMANDS = {
    "vlexp.filter": "filter",
    "vlexp.teachers": "teacher",
    "vlexp.data.export_cli": "export",
    "vlexp.data.tag_pass": "tag",
}


class _MovedCommandFinder(importlib.abc.MetaPathFinder):
    """Refuses the old module names of moved commands with the new command line."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        command = MOVED_COMMANDS.get(fullname)
        if command is None:
            return None
        raise ModuleNotFoundError(
            f"{fullname} moved: the command is now `vlexp {command}` (or `python -m "
            f"vlexp.cli.{command}`); `vlexp {command} --help` lists its options",
            name=fullname,
        )


if not any(isinstance(f, _MovedCommandFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedCommandFinder())
