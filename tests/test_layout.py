"""Tests mirror the package: each module of vlexp/ has tests/<same folder>/test_<module>.py,
or a line in that folder's conftest.py naming the tests that cover it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_its_tests_where_a_reader_looks():
    missing = []
    for module in sorted((ROOT / "vlexp").rglob("*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        folder = ROOT / "tests" / module.relative_to(ROOT / "vlexp").parent
        if (folder / f"test_{module.stem}.py").is_file():
            continue
        conftest = folder / "conftest.py"
        if conftest.is_file() and f"- {module.name}:" in conftest.read_text():
            continue
        missing.append(str(module.relative_to(ROOT)))
    assert not missing, f"modules without a test file or a conftest line: {missing}"


def test_no_test_file_left_outside_its_folder():
    top = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    own = {f"test_{p.stem}.py" for p in (ROOT / "vlexp").glob("*.py")}
    cross = {"test_config_validation.py", "test_import_graph.py", "test_layout.py",
             "test_packaging.py", "test_safe_loading.py", "test_gpu_check.py"}  # fmt: skip
    assert top <= own | cross, sorted(top - own - cross)


def test_module_docstrings_say_what_and_why_in_a_few_lines():
    """The reasoning lives in docs/DESIGN.md; a module docstring stays under 26 lines."""
    import ast

    long = []
    for module in sorted((ROOT / "vlexp").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8")), clean=False)
        if doc and doc.count("\n") + 1 > 25:
            long.append(f"{module.relative_to(ROOT)} ({doc.count(chr(10)) + 1} lines)")
    assert not long, long
