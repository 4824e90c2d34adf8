"""bench/'s import graph, read with ``ast`` (nothing is imported): no cycle, and no
module imports a runner, save ``run.py`` handing ``--suite compare`` to ``compare.py``.

Every import counts wherever it is (module level, in a function, under
``TYPE_CHECKING``), and so does ``importlib.import_module`` of a literal name; a failure
names the file and line of each import involved.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

#: The programs of bench/: nothing in bench/ imports them, but for this one hand-over.
RUNNERS = {"bench.run", "bench.compare"}
RUNNER_IMPORTS_ALLOWED = {("bench.run", "bench.compare")}

pytestmark = pytest.mark.skipif(not (BENCH / "__init__.py").is_file(), reason="no bench/ in this tree")


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        where = self.path.relative_to(self.path.parent.parent)
        return f"{where}:{self.line}: {self.source} imports {self.target}"


def _imported_names(node: ast.Import | ast.ImportFrom | ast.Call, module: str, is_package: bool, package: str) -> list[str]:
    """The dotted names ``node`` imports, relative imports resolved; ``pkg.mod`` for
    ``from pkg import mod`` (it may be a module), besides ``pkg`` itself."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            parts = (module if is_package else module.rpartition(".")[0]).split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__"):
            return [node.args[0].value]
    return []


def imports_within(directory: Path, package: str = "bench") -> list[Import]:
    """Every import from one module of the flat package in ``directory`` of another."""
    modules = {package if p.stem == "__init__" else f"{package}.{p.stem}": p for p in sorted(directory.glob("*.py"))}
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
                continue
            targets = []
            for name in _imported_names(node, module, path.stem == "__init__", package):
                parts = name.split(".")
                if parts[0] == package:  # bench.x.y is module bench.x (the package is flat)
                    targets.append(".".join(parts[:2]))
            for target in dict.fromkeys(targets):
                if target in modules and target != module and target != package:
                    found.append(Import(module, target, path, node.lineno))
    return found


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """Each cycle closed by an import, as the imports around it (depth-first, in file order)."""
    graph: dict[str, list[Import]] = {}
    for imp in sorted(imports, key=lambda i: (i.source, i.line)):
        graph.setdefault(imp.source, []).append(imp)
    done: set[str] = set()
    path: list[Import] = []
    on_path: dict[str, int] = {}
    cycles = []

    def visit(module: str) -> None:
        on_path[module] = len(path)
        for imp in graph.get(module, []):
            if imp.target in on_path:
                cycles.append([*path[on_path[imp.target]:], imp])
            elif imp.target not in done:
                path.append(imp)
                visit(imp.target)
                path.pop()
        del on_path[module]
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return cycles


def _report(cycles: list[list[Import]]) -> str:
    return "\n".join("import cycle:\n" + "\n".join(f"  {imp}" for imp in cycle) for cycle in cycles)


def test_bench_has_no_import_cycle() -> None:
    cycles = import_cycles(imports_within(BENCH))
    assert not cycles, _report(cycles)


def test_no_bench_module_imports_a_runner() -> None:
    wrong = [imp for imp in imports_within(BENCH)
             if imp.target in RUNNERS and (imp.source, imp.target) not in RUNNER_IMPORTS_ALLOWED]
    assert not wrong, "runners are imported by nothing in bench/ (shared code goes in bench/common.py):\n" + \
        "\n".join(f"  {imp}" for imp in wrong)


def test_every_bench_module_says_what_it_is_for() -> None:
    missing = [p.name for p in sorted(BENCH.glob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"bench modules without a docstring: {missing}"


def test_the_check_finds_every_kind_of_import(tmp_path: Path) -> None:
    """A package whose cycle runs through a function-level relative import, an
    ``import_module`` of a literal name and a ``TYPE_CHECKING`` import is caught, with
    each file and line; an acyclic one is not."""
    package = tmp_path / "bench"
    package.mkdir()
    files = {
        "__init__.py": '"""The package."""\n',
        "a.py": """\
            from bench import b, common
            """,
        "b.py": """\
            import importlib

            def load():
                return importlib.import_module("bench.c")
            """,
        "c.py": """\
            from typing import TYPE_CHECKING

            from .common import helper

            if TYPE_CHECKING:
                import bench.a
            """,
        "common.py": "helper = None\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text), encoding="utf-8")
    cycles = import_cycles(imports_within(package))
    assert [[str(imp) for imp in cycle] for cycle in cycles] == [[
        "bench/a.py:1: bench.a imports bench.b",
        "bench/b.py:4: bench.b imports bench.c",
        "bench/c.py:6: bench.c imports bench.a",
    ]]
    (package / "c.py").write_text("from .common import helper\n", encoding="utf-8")
    assert import_cycles(imports_within(package)) == []
