"""The package's layers (docs/internals.md): no import points up a layer or closes a cycle.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``.  A failure
names the file, the line and the two modules, so the offending import is found at once.
A new module must be placed on the map below (an unplaced module fails the test), which
keeps the map in docs/internals.md and the code in step.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "flow_orchestrator"
PACKAGE = "flow_orchestrator"

# Layer of each module or package (a package's entry covers its submodules), lowest first.
LAYERS: dict[str, int] = {
    # L0 foundations
    "errors": 0, "status": 0, "data": 0, "serialization": 0, "_timer": 0, "_version": 0,
    # L1 core seam: the compiled module and its thin faces
    "_ext": 1, "dag": 1, "graphlib": 1, "_draw": 1, "_calling": 1,
    # L2 definition
    "workflow": 2,
    # L3 run records
    "context": 3, "result": 3, "state": 3,
    # L4 services: durability, executors, observation
    "codecs": 4, "stores": 4, "resume": 4, "checkpoint": 4,
    "external": 4, "dask_executor": 4,
    "observers": 4, "metrics": 4, "middleware": 4,
    # L5 the run
    "engine": 5, "_compile": 5,
    # L6 interfaces
    "": 6, "__main__": 6, "render": 6, "progress": 6, "exporters": 6, "cli": 6,
    "demo": 6, "batch_demo": 6,
}


def _modules() -> dict[str, Path | None]:
    """Dotted names (without the package prefix) of every module, ``""`` for the package."""
    found: dict[str, Path | None] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for path in ROOT.rglob("*.pyi"):  # compiled modules: leaves, known by their stubs
        found.setdefault(".".join(path.relative_to(ROOT).with_suffix("").parts), None)
    return found


MODULES = _modules()


def layer_of(module: str) -> int | None:
    """The layer of ``module``: its own entry, else its nearest enclosing package's."""
    name = module
    while True:
        if name in LAYERS:
            return LAYERS[name]
        if not name:
            return None
        name = name.rpartition(".")[0]


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The dotted name (with the package prefix) an ``ImportFrom`` in ``module`` means."""
    if not level:
        return name or ""
    base = [PACKAGE, *module.split(".")] if module else [PACKAGE]
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _local(dotted: str) -> str | None:
    """``dotted`` as a module of this package (nearest existing parent), or None."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        return None
    name = dotted[len(PACKAGE) + 1:]
    while name not in MODULES and name:
        name = name.rpartition(".")[0]
    return name


def imports() -> list[tuple[str, str, Path, int]]:
    """Every ``(importer, imported, file, line)`` between two modules of the package."""
    edges = []
    for module, path in MODULES.items():
        if path is None:
            continue
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if _local(sub) == sub[len(PACKAGE) + 1:] else base)
            for target in targets:
                local = _local(target)
                if local is not None and local != module:
                    edges.append((module, local, path, node.lineno))
    return edges


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT.parent)}:{line}"


def _name(module: str) -> str:
    return f"{PACKAGE}.{module}" if module else PACKAGE


def test_every_module_is_on_the_map() -> None:
    unplaced = sorted(_name(m) for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"modules with no layer (add them to LAYERS and docs/internals.md): {unplaced}"


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for importer, imported, path, line in imports():
        low, high = layer_of(importer), layer_of(imported)
        if low is not None and high is not None and high > low:
            upward.append(f"{_where(path, line)}: {_name(importer)} (L{low}) imports "
                          f"{_name(imported)} (L{high})")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, dict[str, tuple[Path, int]]] = {m: {} for m in MODULES}
    for importer, imported, path, line in imports():
        graph[importer].setdefault(imported, (path, line))
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    try:
        for v in graph:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    lines = []
    for component in cycles:
        lines.append("cycle: " + ", ".join(_name(m) for m in component))
        for a in component:
            for b, (path, line) in sorted(graph[a].items()):
                if b in component:
                    lines.append(f"  {_where(path, line)}: {_name(a)} imports {_name(b)}")
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser counts imports inside functions and under TYPE_CHECKING, and relative
    imports of submodules, not only module-level ones."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import dag\n"
        "from .stores import base\n"
        "if TYPE_CHECKING:\n"
        "    from .engine import Engine\n"
        "def f():\n"
        "    from ..flow_orchestrator import render\n"
        "    import flow_orchestrator.checkpoint\n"
    )
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute("state", False, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(_local(sub if _local(sub) == sub[len(PACKAGE) + 1:] else base))
        elif isinstance(node, ast.Import):
            found.update(_local(alias.name) for alias in node.names)
    assert {"dag", "stores.base", "engine", "checkpoint"} <= found


@pytest.mark.parametrize("module", ["sqlite3", "flatbuffers", "multiprocessing", "psycopg"])
def test_import_flow_orchestrator_loads_no_back_end(module: str) -> None:
    """``import flow_orchestrator`` stays light: stores and codecs load on first use."""
    import subprocess

    code = f"import sys, flow_orchestrator; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent.parent)
    assert out.stdout.strip() == "False", f"import flow_orchestrator loaded {module}"
