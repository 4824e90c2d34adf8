"""Helpers of the command line (:mod:`flow_orchestrator.cli`): loading ``MODULE:WORKFLOW``,
finding the benchmark runner, the reports (run summaries, stored-run reports and run lists,
as text tables or JSON-ready dicts) and the help texts.  Nothing here writes output: the
command line does.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .engine import RunResult
from .state import RunState
from .status import NodeStatus
from .stores.base import RunInfo
from .workflow import Workflow, WorkflowBuilder

__all__ = ["BENCH_MISSING", "CliError", "RunView", "Target", "bench_candidates", "bench_module", "find_bench",
           "format_table", "load_workflow", "one_line", "parse_data", "runs_json", "runs_table", "summary_json",
           "summary_text", "usage", "view_of_result", "view_of_state"]

_FAILED = (int(NodeStatus.FAILED), int(NodeStatus.TIMED_OUT))
_MESSAGE_WIDTH = 160


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
    return [Path.cwd(), Path(__file__).resolve().parent.parent]


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


BENCH_MISSING = (
    "the benchmarks (bench/run.py) are not installed with the package: run this command from a source "
    "checkout (git clone) or an unpacked sdist (pip download --no-binary :all: --no-deps flow-orchestrator, "
    "then tar xzf the .tar.gz and cd into it)")


# -- reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """What a report shows of one run, whether it just ran (:class:`RunResult`) or was
    loaded from a store (:class:`RunState`).

    Per-node arrays are indexed like ``names``; ``errors`` maps node names to the
    ``(type, message)`` of the exception that ended them.  Times: ``wall_seconds`` for a
    run that just ended, ``started_at``/``updated_at`` (epoch seconds) for a stored one.
    """

    workflow: str
    run_id: str
    status: str
    names: Sequence[str]
    statuses: np.ndarray
    attempts: np.ndarray
    started: np.ndarray
    ended: np.ndarray
    errors: dict[str, tuple[str, str]]
    wall_seconds: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    cancel_reason: str | None = None


def view_of_result(result: RunResult) -> RunView:
    """The report view of a run that just ended."""
    errors = {name: (type(exc).__name__, _text(exc)) for name, exc in result.errors.items()}
    return RunView(result.workflow.name, result.run_id, str(result.status), result.workflow.names,
                   result.statuses, result.attempts, result.started, result.ended, errors,
                   wall_seconds=result.wall_seconds, cancel_reason=result.cancel_reason)


def view_of_state(state: RunState) -> RunView:
    """The report view of a run loaded from a store."""
    errors = {state.node_names[i]: (record.type, record.message) for i, record in sorted(state.errors.items())}
    return RunView(state.workflow, state.run_id, state.run_status, state.node_names, state.statuses,
                   state.attempts, state.started, state.ended, errors,
                   started_at=state.started_at, updated_at=state.updated_at)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the report
        return f"<unprintable {type(exc).__name__}>"


def one_line(text: str, width: int = _MESSAGE_WIDTH) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_seconds(seconds: float) -> str:
    """A duration, readable at any scale: ``850 us``, ``12.5 ms``, ``3.201 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.3f} s"


def format_time(epoch: float) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float) -> str:
    """Epoch seconds as ISO 8601 in UTC (``2025-01-31T12:00:00+00:00``)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A plain-text table: a header line, then one line per row, columns padded to fit;
    the columns whose indexes are in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# -- one run ---------------------------------------------------------------------------------------


def _counts(view: RunView) -> dict[str, int]:
    counts = np.bincount(view.statuses, minlength=len(NodeStatus))
    return {str(status): int(counts[status]) for status in NodeStatus}


def _failures(view: RunView) -> list[dict[str, Any]]:
    bad = np.flatnonzero(np.isin(view.statuses, _FAILED))
    out = []
    for i in bad.tolist():
        name = view.names[i]
        kind, message = view.errors.get(name, ("", ""))
        out.append({"node": name, "status": str(NodeStatus(int(view.statuses[i]))),
                    "attempts": int(view.attempts[i]), "error_type": kind, "message": message})
    return out


def _slowest(view: RunView, limit: int) -> list[dict[str, Any]]:
    durations = view.ended - view.started
    ran = np.flatnonzero(np.isfinite(durations))
    if not ran.size:
        return []
    order = ran[np.argsort(-durations[ran], kind="stable")][:limit]
    return [{"node": view.names[i], "status": str(NodeStatus(int(view.statuses[i]))),
             "seconds": float(durations[i])} for i in order.tolist()]


def _node_seconds(view: RunView) -> float:
    durations = view.ended - view.started
    finite = durations[np.isfinite(durations)]
    return float(finite.sum()) if finite.size else 0.0


def summary_json(view: RunView, slowest: int = 5) -> dict[str, Any]:
    """The report of one run as a JSON-ready dict (full error messages, no NaN)."""
    report: dict[str, Any] = {
        "run_id": view.run_id,
        "workflow": view.workflow,
        "status": view.status,
        "nodes": len(view.names),
        "counts": _counts(view),
        "attempts": int(view.attempts.sum()),
        "node_seconds": _node_seconds(view),
    }
    if view.wall_seconds is not None:
        report["wall_seconds"] = view.wall_seconds
    if view.started_at is not None and view.updated_at is not None:
        report.update(started_at=view.started_at, started_at_iso=iso_time(view.started_at),
                      updated_at=view.updated_at, updated_at_iso=iso_time(view.updated_at),
                      elapsed_seconds=max(0.0, view.updated_at - view.started_at))
    report["failures"] = _failures(view)
    report["slowest"] = _slowest(view, slowest)
    if view.cancel_reason:
        report["cancel_reason"] = view.cancel_reason
    return report


def summary_text(view: RunView, slowest: int = 5, max_failures: int = 20) -> str:
    """The report of one run as text: a headline, the timings, a table of node status
    counts, the failures (node, status, attempts, error) and the slowest nodes."""
    report = summary_json(view, slowest)
    lines = [f"run {view.run_id} of workflow {view.workflow!r}: {view.status}"]
    if view.wall_seconds is not None:
        lines.append(f"wall time {format_seconds(view.wall_seconds)}, node time "
                     f"{format_seconds(report['node_seconds'])}, {report['attempts']} attempt(s)")
    if view.started_at is not None and view.updated_at is not None:
        lines.append(f"started {format_time(view.started_at)}, updated {format_time(view.updated_at)} "
                     f"({format_seconds(report['elapsed_seconds'])} later); node time "
                     f"{format_seconds(report['node_seconds'])}, {report['attempts']} attempt(s)")
    if view.cancel_reason:
        lines.append(f"cancelled: {one_line(view.cancel_reason)}")
    rows = [(status, count) for status, count in report["counts"].items() if count]
    rows.append(("total", report["nodes"]))
    lines += ["", format_table(("status", "nodes"), rows, right=(1,))]
    failures = report["failures"]
    if failures:
        shown = failures[:max_failures]
        lines += ["", f"failures ({len(failures)})"]
        lines.append(format_table(
            ("node", "status", "attempts", "error"),
            [(f["node"], f["status"], f["attempts"],
              one_line(f"{f['error_type']}: {f['message']}" if f["error_type"] else "(no error recorded)"))
             for f in shown], right=(2,)))
        if len(failures) > len(shown):
            lines.append(f"... and {len(failures) - len(shown)} more")
    if report["slowest"]:
        lines += ["", "slowest nodes"]
        lines.append(format_table(("node", "status", "time"),
                                  [(s["node"], s["status"], format_seconds(s["seconds"])) for s in report["slowest"]],
                                  right=(2,)))
    return "\n".join(lines)


# -- run lists -------------------------------------------------------------------------------------


def _latest_first(runs: Sequence[RunInfo]) -> list[RunInfo]:
    return sorted(runs, key=lambda r: (-r.updated_at if math.isfinite(r.updated_at) else math.inf, r.run_id))


def runs_json(runs: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """The runs of a store as JSON-ready dicts, most recently updated first."""
    return [{"run_id": r.run_id, "workflow": r.workflow, "status": r.run_status, "updated_at": r.updated_at,
             "updated_at_iso": iso_time(r.updated_at)} for r in _latest_first(runs)]


def runs_table(runs: Sequence[RunInfo]) -> str:
    """The runs of a store as a text table (run id, workflow, status, updated at), most
    recently updated first."""
    return format_table(("run id", "workflow", "status", "updated at"),
                        [(r.run_id, r.workflow, r.run_status, format_time(r.updated_at))
                         for r in _latest_first(runs)])


# -- help texts ------------------------------------------------------------------------------------

HELP_MAIN = "An embeddable workflow engine for Python with a Cython core: run, resume, inspect and draw workflows."

HELP_MAIN_EPILOG = """commands (COMMAND --help explains each one, with examples):
  run       run MODULE:WORKFLOW, optionally saved to a store
  resume    continue a saved run: completed nodes are not run again
  status    list the runs of a store, or show one run
  graph     draw a workflow (DOT, Mermaid, SVG, PNG), coloured by a stored run's statuses
  demo      a numpy batch workflow, then ordering a 1,000,000-node DAG
  bench     the benchmark runner of a source checkout

examples:
  flow-orchestrator demo
  flow-orchestrator run pipelines/etl.py:workflow --store sqlite:///runs.db --run-id nightly
  flow-orchestrator status --store sqlite:///runs.db
  flow-orchestrator resume pipelines/etl.py:workflow nightly --store sqlite:///runs.db

exit status: 0 success; 1 a run failed or was cancelled, or the command could not be carried out
(missing run, unreachable store, locked run, incompatible workflow); 2 usage error; 130 interrupted.
"""

_STORE_URLS = """store URLs (--store):
  sqlite:///runs.db             SQLite file, relative to the current directory (three slashes)
  sqlite:////var/lib/runs.db    SQLite file, absolute path (four slashes)
  json:///runs                  a directory of JSON states (json:////abs/dir for an absolute path)
  flatbuffers:///runs           a directory of FlatBuffers states
  postgresql://user@host/db?schema=flows   PostgreSQL (pip install 'flow-orchestrator[postgres]')
  memory:                       nothing saved
"""

HELP_RUN = """Run a workflow to the end and print a summary: node status counts, wall time, failures (node and
error) and the slowest nodes.  MODULE is an importable module (the current directory is searched) or
the path of a .py file; WORKFLOW an attribute of it that is a Workflow, or a function taking no
arguments that returns one.  With --store the run is saved while it runs, so that it can be resumed
after a failure or a crash.  A progress bar goes to stderr when it is a terminal."""

HELP_RUN_EPILOG = """examples:
  flow-orchestrator run pipelines/etl.py:workflow
  flow-orchestrator run pipelines.etl:build --workers 8 --data day='"2025-01-31"' --data limit=100
  flow-orchestrator run etl.py:workflow --store sqlite:///runs.db --run-id nightly-0131 --checkpoint strict
  flow-orchestrator run etl.py:workflow --executor processes --workers 4 --continue-on-error
  flow-orchestrator run etl.py:workflow --executor dask --dask-scheduler tcp://scheduler:8786

""" + _STORE_URLS + """
exit status: 0 every node completed; 1 the run failed or was cancelled (or could not start); 2 usage error.
"""

HELP_RESUME = """Continue a run saved in a store: its completed nodes are not run again (their outputs and the
run's data are restored); every other node runs.  The workflow must be the one the run was saved
for (same nodes and dependencies), or have new nodes with --allow-new-nodes.  --data adds to (or
overrides) the saved data.  Takes the options of run."""

HELP_RESUME_EPILOG = """examples:
  flow-orchestrator resume etl.py:workflow nightly-0131 --store sqlite:///runs.db
  flow-orchestrator resume etl.py:workflow nightly-0131 --store sqlite:///runs.db --rerun transform
  flow-orchestrator resume etl.py:workflow nightly-0131 --store postgresql://etl@db/flows --allow-new-nodes

""" + _STORE_URLS + """
exit status: 0 the run completed; 1 it failed again, or the run is missing, locked by another
process or saved for an incompatible workflow; 2 usage error.
"""

HELP_STATUS = """Without RUN_ID: the runs of a store (run id, workflow, status, when last updated), most recent
first.  With RUN_ID: that run's node status counts, failures (node, error type and message),
timings and slowest nodes.  --json prints the same as JSON."""

HELP_STATUS_EPILOG = """examples:
  flow-orchestrator status --store sqlite:///runs.db
  flow-orchestrator status --store sqlite:///runs.db --workflow etl --json
  flow-orchestrator status nightly-0131 --store sqlite:///runs.db
  flow-orchestrator status nightly-0131 --store json:///runs --json | jq .failures

""" + _STORE_URLS

HELP_GRAPH = """Draw a workflow as Graphviz DOT or a Mermaid flowchart (text), or as SVG or PNG through Graphviz's
dot program (install Graphviz for those).  With --store and --run-id the nodes are coloured by the
stored run's statuses; without MODULE:WORKFLOW the stored run is drawn from its saved graph."""

HELP_GRAPH_EPILOG = """examples:
  flow-orchestrator graph etl.py:workflow > etl.dot
  flow-orchestrator graph etl.py:workflow --format mermaid --direction LR
  flow-orchestrator graph etl.py:workflow -o etl.svg
  flow-orchestrator graph etl.py:workflow --store sqlite:///runs.db --run-id nightly-0131 -o run.png
  flow-orchestrator graph --store sqlite:///runs.db --run-id nightly-0131 --format svg > run.svg
"""

HELP_DEMO = """Run a CPU-bound numpy batch workflow (a few hundred nodes) with a progress line and print its
summary; then generate a layered DAG (each node depends on DEPS random nodes of the previous layer),
build it with the compiled core and print timings and memory."""

HELP_DEMO_EPILOG = """examples:
  flow-orchestrator demo                 run a numpy batch workflow, then order a 1,000,000-node DAG
  flow-orchestrator demo --workers 4     the same with 4 worker threads
  flow-orchestrator demo --layers 100    order a 100,000-node DAG instead
"""

HELP_BENCH = """Run the benchmark runner, bench/run.py, passing every OPTION to it.  The benchmarks are not
installed with the package: they are looked for in the current directory (a source checkout or an
unpacked sdist), then next to the package (a checkout used in place)."""

HELP_BENCH_EPILOG = """examples:
  flow-orchestrator bench                                 every suite
  flow-orchestrator bench --suite engine middleware --repeat 3
  flow-orchestrator bench --suite graph --nodes 100000 --json graph.json
"""
