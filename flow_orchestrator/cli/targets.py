"""Loading what a command works on (part of :mod:`flow_orchestrator.cli`, layer L6, interfaces).

``MODULE:WORKFLOW`` to a :class:`~flow_orchestrator.workflow.Workflow` (a module importable
or a ``.py`` file, an attribute that is a workflow or a zero-argument callable returning
one), ``--data KEY=VALUE`` to a dict, and the benchmark runner (``bench/run.py``) of a
source checkout.  :class:`CliError` and :func:`usage` live here because loading a target
is where most commands first fail; :mod:`.main` raises them too and turns them into one
line on stderr and an exit status.  Nothing here writes output.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..workflow import Workflow, WorkflowBuilder

__all__ = ["CliError", "Target", "bench_candidates", "bench_module", "find_bench", "import_file",
           "import_module_ref", "load_workflow", "parse_data", "usage"]


# -- errors ------------------------------------------------------------------------------------------


class CliError(Exception):
    """A command cannot go on: ``message`` goes to stderr on one line, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def usage(message: str) -> CliError:
    """A usage error (exit status 2): bad arguments, a module or workflow that cannot be found."""
    return CliError(message, 2)


# -- loading workflows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a workflow came from: the ``MODULE:WORKFLOW`` given, the module, its file."""

    spec: str
    module: ModuleType
    file: str | None


def import_file(ref: str) -> ModuleType:
    """Import a ``.py`` file as the module named by its stem (so that worker processes,
    which get this process's ``sys.path``, import it by that name too)."""
    path = Path(ref).expanduser()
    if not path.is_file():
        raise usage(f"no such file: {ref}")
    path = path.resolve()
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    if not name.isidentifier() or existing is not None:
        name = f"_flow_orchestrator_target_{abs(hash(str(path))):x}"  # importable here only
    elif str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as `python FILE` does
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise usage(f"cannot import {ref}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_module_ref(ref: str) -> ModuleType:
    """The module ``ref`` names: a path to a ``.py`` file, or a module importable from
    the working directory or ``sys.path``."""
    is_path = ref.endswith(".py") or "/" in ref or os.sep in ref
    try:
        if is_path:
            return import_file(ref)
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` does
        return importlib.import_module(ref)
    except CliError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (ref == exc.name or ref.startswith(exc.name + ".")):
            raise usage(f"cannot import module {ref!r}: {exc} (the current directory and sys.path are searched; "
                        "or give the path of a .py file)") from None
        raise CliError(f"importing {ref!r} failed: ModuleNotFoundError: {exc}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever the module raised, as one line
        raise CliError(f"importing {ref!r} failed: {type(exc).__name__}: {exc}") from None


def load_workflow(spec: str) -> tuple[Workflow, Target]:
    """The workflow ``MODULE:WORKFLOW`` names (an attribute that is a Workflow, or a
    zero-argument callable returning one)."""
    ref, sep, attr = spec.rpartition(":")
    if not sep or not ref or not attr:
        raise usage(f"expected MODULE:WORKFLOW (e.g. pipelines.etl:workflow or etl.py:build), got {spec!r}")
    module = import_module_ref(ref)
    value: Any = module
    try:
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Workflow))
        hint = f" (workflows there: {', '.join(found)})" if found else ""
        raise usage(f"module {ref!r} has no attribute {attr!r}{hint}") from None
    if isinstance(value, WorkflowBuilder):
        raise usage(f"{spec} is a WorkflowBuilder, not a Workflow: point at builder.build(), or at a function "
                    "returning it")
    if not isinstance(value, Workflow) and callable(value):
        with contextlib.suppress(TypeError, ValueError):  # no signature to check: just call it
            try:
                inspect.signature(value).bind()
            except TypeError:
                raise usage(f"{spec} takes arguments; WORKFLOW must be a Workflow or a callable taking none") \
                    from None
        try:
            value = value()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the user's factory failed: one line
            raise CliError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(value, Workflow):
            raise usage(f"{spec}() returned a {type(value).__name__}, not a Workflow")
    if not isinstance(value, Workflow):
        raise usage(f"{spec} is not a Workflow (nor a callable returning one): it is of type {type(value).__name__}")
    return value, Target(spec, module, getattr(module, "__file__", None))


def parse_data(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs: VALUE as JSON when it parses, else as a string."""
    data: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise usage(f"--data takes KEY=VALUE, got {item!r}")
        try:
            data[key] = json.loads(text)
        except ValueError:
            data[key] = text
    return data


# -- the benchmark runner -----------------------------------------------------------------------------


def bench_candidates() -> list[Path]:
    """Where ``bench/run.py`` is looked for: the working directory (a checkout or an
    unpacked sdist), then the directory holding the package (a checkout in use in place)."""
    return [Path.cwd(), Path(__file__).resolve().parents[2]]  # flow_orchestrator/cli/targets.py -> the checkout


def find_bench() -> Path | None:
    """The first of :func:`bench_candidates` holding ``bench/run.py`` (and ``bench/__init__.py``)."""
    for root in bench_candidates():
        if (root / "bench" / "run.py").is_file() and (root / "bench" / "__init__.py").is_file():
            return root
    return None


def bench_module(root: Path) -> ModuleType:
    """``bench.run`` of the checkout at ``root``, imported without putting the checkout
    first on ``sys.path`` (the installed, compiled package stays the one in use)."""
    package = root / "bench"
    loaded = sys.modules.get("bench")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent != package:
        for name in [n for n in sys.modules if n == "bench" or n.startswith("bench.")]:
            del sys.modules[name]
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench", package / "__init__.py",
                                                      submodule_search_locations=[str(package)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("bench.run")
