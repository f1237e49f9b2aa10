"""Command-line entry points (``vlexp <command>``, or ``python -m vlexp.cli.<command>``) and
where their configs are."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def conf_dir() -> str:
    """The Hydra config folder: the copy shipped inside an installed wheel (``vlexp/conf``),
    else the top-level ``conf/`` of a source checkout."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no vlexp config folder (conf/train.yaml) next to {_PACKAGE}; reinstall vlexp or run "
        "from a source checkout"
    )


CONF_DIR = conf_dir()
