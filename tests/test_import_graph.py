"""The package layout: no import cycle between vlexp's subpackages, at any depth.

The graph is built from the source with ``ast`` (every ``import``/``from ... import``,
including those inside functions: a lazy import is still an import). For every package
the nodes are its direct children (subpackages and modules: for ``vlexp`` the top-level
units ``data``, ``eval``, ``train``, ``io``, ...; for ``vlexp.data`` its ``readers``,
``shards``, ``sources``, ``records``, ...); a child imports another when any module
inside it imports anything inside the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vlexp"


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
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


def _imported(path: Path, root: Path = ROOT) -> set[str]:
    package = _module_name(path, root).split(".")
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


def _modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a ``vlexp`` source folder) by its dotted name."""
    return {_module_name(p, root): p for p in root.rglob("*.py")}


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module, or a name defined in one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _child(package: str, module: str) -> str | None:
    """The direct child of ``package`` that holds ``module``, or None when outside it."""
    if not module.startswith(package + "."):
        return None
    return f"{package}.{module[len(package) + 1 :].split('.')[0]}"


def package_graphs(root: Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """For each package under ``root``: edges between its direct children."""
    modules = _modules(root)
    packages = {_module_name(p, root) for p in root.rglob("__init__.py")}
    graphs: dict[str, dict[str, set[str]]] = {p: {} for p in packages}
    for name, path in modules.items():
        targets = {_owner(m, modules) for m in _imported(path, root)} - {None}
        for package in packages:
            src = _child(package, name)
            if src is None:
                continue
            for target in targets:
                dst = _child(package, target)  # type: ignore[arg-type]
                if dst is not None and dst != src:
                    graphs[package].setdefault(src, set()).add(dst)
    return graphs


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


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_nested_cycle_is_found_in_a_planted_tree(tmp_path: Path) -> None:
    root = tmp_path / "vlexp"
    _write(
        root,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/records.py": "",
            "data/readers/__init__.py": "",
            "data/readers/wds.py": "def f():\n    from vlexp.data.shards.index import g\n",
            "data/shards/__init__.py": "",
            "data/shards/index.py": "from ..readers import wds\nfrom vlexp.data import records\n",
        },
    )
    graphs = package_graphs(root)
    assert graphs["vlexp"] == {}  # the cycle is invisible between top-level units
    assert graphs["vlexp.data"] == {
        "vlexp.data.readers": {"vlexp.data.shards"},
        "vlexp.data.shards": {"vlexp.data.readers", "vlexp.data.records"},
    }
    cycle = find_cycle(graphs["vlexp.data"])
    assert cycle is not None and set(cycle) == {"vlexp.data.readers", "vlexp.data.shards"}
    (root / "data/readers/wds.py").write_text("from vlexp.data.records import x\n")
    assert find_cycle(package_graphs(root)["vlexp.data"]) is None


def test_no_import_cycle_inside_any_package() -> None:
    graphs = package_graphs()
    assert {"vlexp", "vlexp.data", "vlexp.data.shards"} <= set(graphs)
    assert "vlexp.data.shards" in graphs["vlexp.data"]["vlexp.data.readers"]  # seen
    cycles = {p: c for p, g in sorted(graphs.items()) if (c := find_cycle(g))}
    assert not cycles, "import cycles: " + "; ".join(
        f"inside {p}: {' -> '.join(c)}" for p, c in cycles.items()
    )


@pytest.mark.parametrize(
    "library", ["data", "encoders", "objectives", "samplers", "filters", "eval"]
)
def test_library_never_imports_the_app(library: str) -> None:
    reach = unit_graph().get(library, set())
    assert not reach & {"train", "cli", "run"}, f"vlexp.{library} imports {reach}"


def test_data_never_imports_eval() -> None:
    assert "eval" not in unit_graph().get("data", set())
