"""The wheel ships the configs, and the commands find them in a wheel and in a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package() -> None:
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vlexp").rglob("__init__.py")
    }
    assert listed == on_disk | {"vlexp.conf"}


def test_checkout_finds_top_level_conf() -> None:
    from vlexp.cli import conf_dir

    assert Path(conf_dir()) == REPO / "conf"


def test_wheel_holds_conf_and_finds_it(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: the build leaves build/ next to pyproject
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("vlexp", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vlexp-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    shipped = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert {f"vlexp/conf/{n}" for n in shipped} <= names
    code = "import vlexp, vlexp.cli; print(vlexp.__file__); print(vlexp.cli.conf_dir())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, capture_output=True,
        text=True,
    ).stdout.split()  # fmt: skip
    assert out[0].startswith(str(tmp_path / "site"))
    assert Path(out[1]) == tmp_path / "site" / "vlexp" / "conf"
    assert (Path(out[1]) / "train.yaml").is_file()
