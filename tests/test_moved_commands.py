"""Old ``python -m`` names of moved commands fail with the new command line."""

import subprocess
import sys

import pytest

from vlexp import MOVED_COMMANDS


@pytest.mark.parametrize("module", sorted(MOVED_COMMANDS) + ["vlexp.eval.fewshot"])
def test_old_module_name_names_the_new_command(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "x=1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    command = MOVED_COMMANDS.get(module, "fewshot")
    assert f"vlexp {command}" in proc.stderr + proc.stdout


def test_new_modules_still_import():
    import vlexp.cli.filter  # noqa: F401
    import vlexp.eval.fewshot  # noqa: F401
