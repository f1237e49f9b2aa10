"""The package layout: no import cycle between vlexp's subpackages.

The graph is built from the source with ``ast`` (every ``import``/``from ... import``,
including those inside functions: a lazy import is still an import). Nodes are the
top-level units of ``vlexp`` (``data``, ``eval``, ``train``, ``io``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vlexp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, package: list[str]) -> set[str]:
    """Fully qualified vlexp modules (or names in them) that ``source`` imports;
    ``package`` resolves relative imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in out if m == "vlexp" or m.startswith("vlexp.")}


def _imported(path: Path) -> set[str]:
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    return imports_in(path.read_text(encoding="utf-8"), package)


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def unit_graph() -> dict[str, set[str]]:
    """Edges between vlexp's top-level units (``vlexp.<unit>``)."""
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()}
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        src = _unit(_module_name(path))
        if src is None:
            continue
        for module in _imported(path):
            dst = _unit(module)
            if dst in units and dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_graph_sees_lazy_relative_and_submodule_imports() -> None:
    source = "def f():\n    from vlexp.eval import metrics\n    from ..data import types\n"
    found = imports_in(source, ["vlexp", "train"])
    assert {"vlexp.eval.metrics", "vlexp.data.types"} <= found
    assert "eval" in unit_graph().get("train", set())  # train reads eval's metrics


def test_no_import_cycle_between_subpackages() -> None:
    cycle = find_cycle(unit_graph())
    assert cycle is None, f"import cycle between vlexp subpackages: {' -> '.join(cycle)}"


@pytest.mark.parametrize(
    "library", ["data", "encoders", "objectives", "samplers", "filters", "eval"]
)
def test_library_never_imports_the_app(library: str) -> None:
    reach = unit_graph().get(library, set())
    assert not reach & {"train", "cli", "run"}, f"vlexp.{library} imports {reach}"


def test_data_never_imports_eval() -> None:
    assert "eval" not in unit_graph().get("data", set())
