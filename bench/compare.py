"""Cross-engine comparison: each engine on each workflow shape, in a fresh process.

    PYTHONPATH=. python -m bench.compare [--quick] [--shapes S ...] [--engines E ...]
                                         [--repeat 5] [--warmup 1] [--cold-repeat N] [--timeout 900]
                                         [--json bench-results.json] [--markdown FILE] [--readme [README.md]]
    flow-orchestrator bench --suite compare [the same options]

Shapes (:data:`SHAPES`): no-op layered DAGs of 10k, 100k and 1M nodes, a chain, a
fan-out/fan-in, a 6-node diamond run many times, GIL-releasing numpy work, pure-Python
CPU work, and the 10k layered DAG with middleware and observers on, and with strict
and with batched checkpoints to SQLite.  Engines (:data:`ENGINES`): ours on threads,
serial and on processes, the naive stdlib ``graphlib`` + ``ThreadPoolExecutor`` loop,
dask's threaded and synchronous schedulers and OpenStack TaskFlow's parallel engine;
peers that are not installed are skipped by name, and :func:`plan` skips or caps the
cells an engine cannot run in reasonable time, saying why.

The parent process runs each (engine, shape) cell as ``python -P -m bench.compare
--worker ENGINE SHAPE ...`` and reads back one JSON line: wall times of ``--repeat``
timed repetitions after ``--warmup`` untimed ones, the bare-loop time of the same
actions (no-op shapes), peak RSS (``VmHWM``) and the number of node runs verified
(every action counts its calls; a cell whose count is not nodes x runs fails).  Ours
is measured twice over: **cold**, the process's first run, timed from the Python list
of ``(source, target)`` pairs with nothing of ours run before it (the workflow built
with ``Workflow.from_edge_list``, or ``np.array`` + ``Workflow.from_arrays`` when the
package lacks it, the engine made, the first run, compiling included), in
``--cold-repeat`` fresh processes (the cell's own and ``--worker ... --cold-only``
ones), reported as their median; and **warm**, the timed repetitions, the same
workflow run again.  The peers pay everything on every run, and are timed as before.
A cell that fails, crashes or runs past ``--timeout`` is reported as such in the table;
the runner goes on.  bench/README.md says what every column means.

A runner: it takes the graphs from :mod:`bench.graphs`, the engines' work from
:mod:`bench.execution` and what it shares with ``run.py`` from :mod:`bench.common`, and
imports no other runner (``run.py --suite compare`` calls :func:`main`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

if not __package__:
    # Run as a script: put the checkout first, for `bench` and an in-place build (as run.py does).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import flow_orchestrator
from bench import common, graphs
from bench.common import cpu_model, dist_version, fmt_ms, fmt_ratio
from bench.execution import (
    Counter,
    EveryNodeHookObserver,
    calibrate,
    cpu_work,
    dask_graph,
    dask_sync,
    edge_list_build,
    naive_graphlib_loop,
    numpy_graph,
    numpy_work,
    ran,
    remote_work,
    taskflow_engine,
    workflow_from_edge_list,
)
from bench.graphs import Graph, predecessor_dict

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULT_TAG = "bench-compare-result: "
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
DEFAULT_TIMEOUT, QUICK_TIMEOUT = 900.0, 120.0

NOOP, NUMPY, CPU = "no-op", "numpy", "cpu"
MIDDLEWARE, STRICT, BATCHED = "middleware", "strict", "batched"
FEATURES = {MIDDLEWARE: "middleware or observers", STRICT: "durable checkpoints", BATCHED: "durable checkpoints"}

#: TaskFlow takes milliseconds a task, more on bigger graphs (about 5 ms at 400 layered
#: nodes, 14-16 ms at 1,000 on 2 cores): its graphs are capped at this many nodes, the
#: diamond at this many runs a repetition, and it skips the 100k and 1M shapes.
TASKFLOW_MAX_NODES = 1000
TASKFLOW_MAX_RUNS = 200


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A workflow to run: ``make(nodes)`` builds its graph; ``size`` is its node count in
    full and in ``--quick`` runs; ``runs`` how many times one timed repetition runs it
    (the diamond's many runs); ``work`` what each node does (``work_arg``: numpy array
    size, or seconds of pure-Python work per node); ``feature`` what is switched on."""

    name: str
    title: str
    make: Callable[[int], Graph]
    size: tuple[int, int]
    runs: tuple[int, int] = (1, 1)
    work: str = NOOP
    work_arg: tuple[float, float] = (0, 0)
    feature: str | None = None


@dataclass(frozen=True)
class EngineSpec:
    """An engine: ``label`` (``{w}`` becomes the worker count) for the tables, ``short``
    for the README's columns, ``requires`` the module a peer needs, ``features`` whether
    it has middleware, observers and durable checkpoints, ``cold`` whether it is ours,
    measured cold (from the edge list: build + first run) and warm (run again)."""

    name: str
    label: str
    short: str
    requires: str | None = None
    features: bool = False
    cold: bool = False

    def title(self, workers: int) -> str:
        """The label with the worker count."""
        return self.label.format(w=workers)


def _layered(nodes: int) -> Graph:
    return graphs.make("layered", nodes)


_LAYERED = "no-op nodes in square layers, each depending on 3 random nodes of the layer before"

SHAPES: dict[str, Shape] = {s.name: s for s in [
    Shape("layered-10k", _LAYERED, _layered, (10_000, 400)),
    Shape("layered-100k", _LAYERED, _layered, (100_000, 1_000)),
    Shape("layered-1m", _LAYERED + " (1000 x 1000, ~3M edges)", _layered, (1_000_000, 2_500)),
    Shape("chain-10k", "no-op chain 0 -> 1 -> ... -> n-1", graphs.chain, (10_000, 300)),
    Shape("fan-10k", "no-op fan-out and fan-in: 1 -> n -> 1", lambda n: graphs.fan_out_in(n - 2), (10_002, 302)),
    Shape("diamond-x1000", "no-op diamond a -> b, c, d, e -> f, run many times: per-run overhead",
          lambda n: graphs.fan_out_in(4), (6, 6), runs=(1000, 20)),
    Shape("numpy-64", "GIL-releasing numpy work (each node sorts its array), 8 layers of 8, all-to-all",
          lambda n: numpy_graph(), (64, 64), work=NUMPY, work_arg=(300_000, 20_000)),
    Shape("cpu-64", "pure-Python CPU work, GIL held (~20 ms a node), 8 layers of 8, 3 deps each",
          lambda n: graphs.layered(8, 8, 3), (64, 64), work=CPU, work_arg=(0.020, 0.001)),
    Shape("middleware-10k", "layered-10k with engine middleware (retry(3), circuit_breaker) and an observer "
          "overriding every node hook", _layered, (10_000, 400), feature=MIDDLEWARE),
    Shape("checkpoint-strict-10k", "layered-10k saved to SQLite, strict checkpoints (each completion durable "
          "before its dependents start)", _layered, (10_000, 200), feature=STRICT),
    Shape("checkpoint-batched-10k", "layered-10k saved to SQLite, batched checkpoints (group commits)",
          _layered, (10_000, 400), feature=BATCHED),
]}

ENGINES: dict[str, EngineSpec] = {e.name: e for e in [
    EngineSpec("ours-threads", "ours ({w} threads)", "ours (threads)", features=True, cold=True),
    EngineSpec("ours-serial", "ours (serial)", "ours (serial)", features=True, cold=True),
    EngineSpec("ours-processes", "ours ({w} processes)", "ours (processes)", features=True, cold=True),
    EngineSpec("naive-graphlib", "naive graphlib + ThreadPoolExecutor ({w})", "naive graphlib"),
    EngineSpec("dask-threaded", "dask threaded ({w})", "dask threaded", requires="dask"),
    EngineSpec("dask-sync", "dask synchronous", "dask sync", requires="dask"),
    EngineSpec("taskflow", "TaskFlow parallel ({w} threads)", "TaskFlow", requires="taskflow"),
]}

#: The row every ratio is taken against.
BASELINE = "ours-threads"


@dataclass(frozen=True)
class Plan:
    """What one cell runs: a graph of about ``nodes`` nodes, ``runs`` times a repetition,
    ``warmup`` + ``repeat`` repetitions; or ``skip``, the reason it does not run.
    ``note`` says what was capped."""

    nodes: int
    runs: int
    repeat: int
    warmup: int
    skip: str | None = None
    note: str = ""


def plan(engine: EngineSpec, shape: Shape, *, quick: bool, repeat: int, warmup: int) -> Plan:
    """The cell of ``engine`` on ``shape``: skipped (with the reason), capped, or as asked.

    The rules name shapes rather than sizes, so that ``--quick`` tables have the same rows.
    Ours has at least one warm-up: its first run is the cold one, never a warm figure.
    """
    nodes, runs = shape.size[quick], shape.runs[quick]
    if engine.cold:
        warmup = max(warmup, 1)
    as_asked = Plan(nodes, runs, repeat, warmup)

    def skip(reason: str) -> Plan:
        return Plan(nodes, runs, repeat, warmup, skip=reason)

    if shape.feature is not None and not engine.features:
        return skip(f"has no {FEATURES[shape.feature]}")
    if engine.requires is not None and importlib.util.find_spec(engine.requires) is None:
        return skip(f"{engine.requires} is not installed (pip install -e '.[bench]')")
    if engine.name == "ours-processes" and shape.name == "layered-1m":
        return skip("the process path costs 150-300 us a node (pickling, the pool's queues): minutes a run "
                    "at 1M nodes; its per-node cost is in the 10k and 100k rows")
    if engine.requires == "dask" and shape.name == "layered-1m":
        return skip("dask's scheduler grows faster than linearly on this graph (about a minute and 10 GB "
                    "a run at 100k nodes on 2 cores)")
    if engine.requires == "dask" and shape.name == "layered-100k":
        return Plan(nodes, runs, 1, 0, note="capped: 1 run, no warm-up (about a minute and 10 GB a run)")
    if engine.name == "taskflow":
        if shape.name in ("layered-100k", "layered-1m"):
            return skip(f"milliseconds a task: run capped at {TASKFLOW_MAX_NODES:,} nodes on the 10k shapes instead")
        capped = min(nodes, TASKFLOW_MAX_NODES)
        capped_runs = min(runs, TASKFLOW_MAX_RUNS)
        if (capped, capped_runs) != (nodes, runs):
            what = f"{capped:,} nodes" if capped != nodes else f"{capped_runs:,} runs a repetition"
            return Plan(capped, capped_runs, repeat, warmup,
                        note=f"capped: {what} (milliseconds a task, more on bigger graphs); ratio per node")
    return as_asked


# -- one cell, in the worker process -----------------------------------------------------------


@dataclass
class Runner:
    """One engine set up on one graph: ``run()`` runs the graph once; ``first()``, when
    given, is the process's first run instead (ours: everything of ours from the edge
    list, timed as the cold figure); ``tally(results)`` counts the node runs that the
    results prove (process pools, whose calls cannot be counted here; ``None``: the
    counting actions prove them); ``final_check()`` checks anything left (the saved
    state of a durable run)."""

    run: Callable[[], Any]
    tally: Callable[[list[Any]], int] | None = None
    final_check: Callable[[], None] | None = None
    first: Callable[[], Any] | None = None


def _middleware_options() -> dict[str, Any]:
    from flow_orchestrator.middleware import circuit_breaker, retry

    return {"middleware": (retry(3), circuit_breaker("bench-compare")), "observers": [EveryNodeHookObserver()]}


def _work(shape: Shape, quick: bool, cpu_iterations: int) -> tuple[Callable[[int], Any] | None, Any]:
    """Node ``i``'s work in this process (``None`` for no-op), and the picklable action
    doing it in a process pool."""
    if shape.work == NUMPY:
        size = int(shape.work_arg[quick])
        return (lambda i: numpy_work(size)), functools.partial(remote_work, kind=NUMPY, param=size)
    if shape.work == CPU:
        return (lambda i: cpu_work(cpu_iterations, i)), functools.partial(remote_work, kind=CPU, param=cpu_iterations)
    return None, ran


def _ours(kind: str, shape: Shape, graph: Graph, counter: Counter, remote_action: Any, workers: int,
          stack: ExitStack) -> Runner:
    """Ours, set up so that nothing of ours runs before ``first()``: the untimed set-up
    makes only the inputs a user holds (node names, the Python list of ``(source,
    target)`` pairs, the actions, a directory for the store); ``first()`` makes the
    middleware, the observer and the engine, opens the store, builds the workflow from
    the list (:func:`execution.workflow_from_edge_list`) and runs it once."""
    from flow_orchestrator import Engine, NodeStatus

    names = [f"n{i}" for i in range(graph.num_nodes)]
    edges = graphs.edge_list(graph)
    # One picklable action for every node on processes (pickled once); counting ones otherwise.
    actions: Any = remote_action if kind == "processes" else counter.actions
    executor: Literal["serial", "processes"] | None = None
    if kind in ("serial", "processes"):
        executor = "serial" if kind == "serial" else "processes"
    durable = shape.feature in (STRICT, BATCHED)
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-compare-")) if durable else ""
    policy: Literal["strict", "batched"] = "strict" if shape.feature == STRICT else "batched"
    run_ids = (f"run-{k}" for k in itertools.count())
    last: list[str] = []
    made: dict[str, Any] = {}

    def run() -> Any:
        engine, wf = made["engine"], made["workflow"]
        if not durable:
            return engine.run(wf)
        last[:] = [next(run_ids)]
        return engine.run(wf, store=made["store"], checkpoint=policy, run_id=last[0])

    def first() -> Any:
        options = _middleware_options() if shape.feature == MIDDLEWARE else {}
        made["engine"] = stack.enter_context(Engine(1 if kind == "serial" else workers, executor, **options))
        if durable:
            from flow_orchestrator.stores import SqliteStore

            made["store"] = stack.enter_context(SqliteStore(os.path.join(directory, "runs.db")))
        made["workflow"] = workflow_from_edge_list(f"compare-{shape.name}", names, edges, actions)
        return run()

    tally: Callable[[list[Any]], int] | None = None
    if kind == "processes":
        def tally(results: list[Any]) -> int:
            return sum(sum(1 for v in r.outputs.values() if v == 1) for r in results)
    final_check: Callable[[], None] | None = None
    if durable:
        def final_check() -> None:
            state = made["store"].load(last[0])
            if not bool(np.all(state.statuses == NodeStatus.COMPLETED)):
                raise AssertionError(f"run {last[0]}: not every node saved as completed")

    return Runner(run, tally, final_check, first)


def _runner(engine: EngineSpec, shape: Shape, graph: Graph, counter: Counter, remote_action: Any,
            workers: int, stack: ExitStack) -> Runner:
    """Set ``engine`` up on ``graph``, untimed: the peers' pools started, the graph
    converted to their input, TaskFlow's flow built and compiled; for ours, only the
    user's inputs (see :func:`_ours`)."""
    if engine.name.startswith("ours-"):
        return _ours(engine.name.removeprefix("ours-"), shape, graph, counter, remote_action, workers, stack)
    if engine.name == "naive-graphlib":
        pool = stack.enter_context(ThreadPoolExecutor(workers))
        preds = predecessor_dict(graph)
        return Runner(lambda: naive_graphlib_loop(graph, counter.actions, workers, pool=pool, preds=preds))
    if engine.name == "dask-threaded":
        import dask.threaded

        dsk, keys = dask_graph(graph, counter.actions)
        return Runner(lambda: dask.threaded.get(dsk, keys, num_workers=workers))
    if engine.name == "dask-sync":
        get_sync = dask_sync()
        if get_sync is None:
            raise ImportError("dask is not installed")
        dsk, keys = dask_graph(graph, counter.actions)
        return Runner(lambda: get_sync(dsk, keys))
    if engine.name == "taskflow":
        tf_engine, executor = taskflow_engine(graph, counter.actions, workers)
        stack.callback(executor.shutdown)
        started = [False]

        def run() -> None:
            if started[0]:
                tf_engine.reset()
            started[0] = True
            tf_engine.run()
        return Runner(run)
    raise ValueError(f"unknown engine {engine.name!r}")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB: ``VmHWM`` of
    ``/proc/self/status`` on Linux, which is this process's own; elsewhere ``ru_maxrss``
    (KiB on Linux, bytes on macOS), which a child starts from its parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _repetitions(fn: Callable[[int], list[Any]], warmup: int, repeat: int,
                 after: Callable[[list[Any]], None] | None = None) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones (``fn(i)``:
    the ``i``-th call, from 0); ``after`` sees each call's value, outside the timed region."""
    times = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        value = fn(i)
        took = time.perf_counter() - start
        if after is not None:
            after(value)
        del value  # not alive during the next call (peak RSS)
        if i >= warmup:
            times.append(took)
    return times


def run_cell(engine_name: str, shape_name: str, *, quick: bool, repeat: int, warmup: int, workers: int,
             cpu_iterations: int, cold_only: bool = False) -> dict[str, Any]:
    """Run one cell in this process and return its figures (see the module docstring).

    The process's first run goes through ``Runner.first`` and is timed alone
    (``first_s``): for ours, that is the cold figure, everything of ours from the Python
    edge list; it is also the first of the warm-up runs, so never in a warm figure.
    ``cold_only``: that first run only (and its checks), for another cold sample."""
    rss_imports = _peak_rss_mb()
    engine, shape = ENGINES[engine_name], SHAPES[shape_name]
    cell = plan(engine, shape, quick=quick, repeat=repeat, warmup=warmup)
    if cell.skip is not None:
        raise RuntimeError(f"this cell is skipped: {cell.skip}")
    if cold_only and not engine.cold:
        raise RuntimeError(f"{engine_name} has no cold figure (a peer pays everything on every run)")
    started = time.perf_counter()
    graph = shape.make(cell.nodes)
    n, runs = graph.num_nodes, cell.runs
    work, remote_action = _work(shape, quick, cpu_iterations)
    counter = Counter(n, work)
    proven = [0]
    first_s: list[float] = []
    with ExitStack() as stack:
        runner = _runner(engine, shape, graph, counter, remote_action, workers, stack)
        setup_s = time.perf_counter() - started
        rss_setup = _peak_rss_mb()
        first = runner.first or runner.run

        def one_repetition(i: int) -> list[Any]:
            results = []
            for k in range(1 if cold_only else runs):
                if i == 0 and k == 0:
                    start = time.perf_counter()
                    results.append(first())
                    first_s.append(time.perf_counter() - start)
                else:
                    results.append(runner.run())
            return results

        def tally(results: list[Any]) -> None:
            if runner.tally is not None:
                proven[0] += runner.tally(results)

        if cold_only:
            tally(one_repetition(0))
            times: list[float] = []
        else:
            times = _repetitions(one_repetition, cell.warmup, cell.repeat, tally)
        if runner.final_check is not None:
            runner.final_check()
    engine_runs = 1 if cold_only else (cell.warmup + cell.repeat) * runs
    bare_s = None
    if shape.work == NOOP and not cold_only:
        order = [counter.actions[i] for i in graphs_topological_order(graph)]

        def bare(i: int) -> list[Any]:
            for _ in range(runs):
                for action in order:
                    action()
            return []

        bare_s = statistics.median(_repetitions(bare, cell.warmup, cell.repeat))
    counted = engine_runs if runner.tally is None else 0
    counted += (cell.warmup + cell.repeat) * runs if bare_s is not None else 0
    counter.check(counted)  # every node ran exactly this often (the engine's runs and the bare loop's)
    if runner.tally is not None and proven[0] != n * engine_runs:
        raise AssertionError(f"the runs' outputs prove {proven[0]:,} node runs, expected {n * engine_runs:,}")
    common_fields = {
        "ok": True,
        "engine": engine_name,
        "shape": shape_name,
        "nodes": n,
        "edges": graph.num_edges,
        "first_s": first_s[0],
        "cold_s": first_s[0] if engine.cold else None,
        "build": edge_list_build() if engine.cold else None,
        "node_runs_verified": n * engine_runs,
        "setup_s": setup_s,
        "rss_after_imports_mb": rss_imports,
        "rss_after_setup_mb": rss_setup,
        "peak_rss_mb": _peak_rss_mb(),
        "flow_orchestrator": str(Path(flow_orchestrator.__file__).resolve().parent),
    }
    if cold_only:
        return common_fields
    median = statistics.median(times)
    per_node = n * runs
    return {
        **common_fields,
        "runs_per_repetition": runs,
        "repeat": cell.repeat,
        "warmup": cell.warmup,
        "times_s": times,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "us_per_node": median / per_node * 1e6,
        "bare_median_s": bare_s,
        "overhead_us_per_node": None if bare_s is None else (median - bare_s) / per_node * 1e6,
    }


def graphs_topological_order(graph: Graph) -> list[int]:
    """Our core's topological order of ``graph``, for the bare loop."""
    from flow_orchestrator.dag import CSRGraph

    return CSRGraph.from_edges(*graph).topological_order().tolist()


def worker_main(args: argparse.Namespace) -> int:
    """``--worker ENGINE SHAPE``: run one cell, write one tagged JSON line to stdout."""
    engine, shape = args.worker
    try:
        expected = args.expect_package
        here = str(Path(flow_orchestrator.__file__).resolve().parent)
        if expected and here != expected:
            raise RuntimeError(f"this process imported flow_orchestrator from {here}, the runner from {expected}")
        result = run_cell(engine, shape, quick=args.quick, repeat=args.repeat, warmup=args.warmup,
                          workers=args.workers, cpu_iterations=args.cpu_iterations or 1,
                          cold_only=args.cold_only)
        code = 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which goes on
        traceback.print_exc(file=sys.stderr)
        result = {"ok": False, "engine": engine, "shape": shape, "error": f"{type(exc).__name__}: {exc}",
                  "peak_rss_mb": _peak_rss_mb()}
        code = 1
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


# -- the parent: one process per cell -------------------------------------------------------------


def _site_dirs() -> set[str]:
    dirs = set(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.add(user)
    return {str(Path(d).resolve()) for d in dirs}


def child_environment(scratch: Path) -> dict[str, str]:
    """The environment of the cells' processes, so that they import the same
    ``flow_orchestrator`` as this process and ``bench`` from this checkout.

    They run with ``python -P`` (nothing prepended to ``sys.path``), so the checkout
    they start in cannot shadow an installed, compiled package with its source tree.
    ``bench`` is reached through a link to it in ``scratch``; this process's
    ``flow_orchestrator`` goes first on ``PYTHONPATH`` unless it is installed in
    site-packages, where the child finds it anyway.
    """
    link = scratch / "bench"
    if not link.exists():
        try:
            link.symlink_to(BENCH_DIR, target_is_directory=True)
        except OSError:
            shutil.copytree(BENCH_DIR, link, ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(scratch)]
    package_root = str(Path(flow_orchestrator.__file__).resolve().parent.parent)
    if package_root not in _site_dirs():
        paths.insert(0, package_root)
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the cell and any pool it started
    except (ProcessLookupError, PermissionError):
        proc.kill()


def spawn_cell(engine: str, shape: str, args: argparse.Namespace, env: dict[str, str],
               cpu_iterations: int, *, cold_only: bool = False) -> dict[str, Any]:
    """Run one cell in a fresh process (cwd: the checkout) and return its figures, or
    ``status`` ``failed``/``timeout`` with the ``reason``; ``cold_only``: only ours'
    cold run, for one more sample of it."""
    cmd = [sys.executable, "-P", "-m", "bench.compare", "--worker", engine, shape,
           "--repeat", str(args.repeat), "--warmup", str(args.warmup), "--workers", str(args.workers),
           "--cpu-iterations", str(cpu_iterations),
           "--expect-package", str(Path(flow_orchestrator.__file__).resolve().parent)]
    if args.quick:
        cmd.append("--quick")
    if cold_only:
        cmd.append("--cold-only")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return {"status": "timeout", "reason": f"timed out after {args.timeout:g} s (--timeout)",
                "elapsed_s": time.perf_counter() - started}
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    elapsed = time.perf_counter() - started
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(RESULT_TAG)), None)
    if line is None:
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit status {proc.returncode}: {tail[0].strip()}",
                "elapsed_s": elapsed}
    result = json.loads(line[len(RESULT_TAG):])
    if not result.pop("ok"):
        return {"status": "failed", "reason": result["error"], "elapsed_s": elapsed,
                "peak_rss_mb": result.get("peak_rss_mb")}
    return {"status": "ok", **result, "elapsed_s": elapsed}


def run_all(args: argparse.Namespace, cpu_iterations: int) -> list[dict[str, Any]]:
    """Every requested cell, in registry order; progress on stderr."""
    todo = [(s, e) for s in args.shapes for e in args.engines]
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        env = child_environment(Path(scratch))
        for k, (shape, engine) in enumerate(todo, 1):
            spec = ENGINES[engine]
            cell_plan = plan(spec, SHAPES[shape], quick=args.quick, repeat=args.repeat, warmup=args.warmup)
            cell: dict[str, Any] = {"shape": shape, "engine": engine, "label": spec.title(args.workers),
                                    "note": cell_plan.note}
            if cell_plan.skip is not None:
                cell.update(status="skipped", reason=cell_plan.skip)
            else:
                cell.update(spawn_cell(engine, shape, args, env, cpu_iterations))
                if spec.cold and cell["status"] == "ok":
                    _more_cold_samples(cell, engine, shape, args, env, cpu_iterations)
            cells.append(cell)
            cold = f"cold {fmt_ms(cell['cold_s'])} ms, warm " if cell.get("cold_s") is not None else ""
            outcome = (f"{cold}median {fmt_ms(cell['median_s'])} ms, {cell['elapsed_s']:.1f} s in all"
                       if cell["status"] == "ok" else f"{cell['status']}: {cell['reason']}")
            sys.stderr.write(f"[{k}/{len(todo)}] {shape} / {engine}: {outcome}\n")
            sys.stderr.flush()
    _add_ratios(cells)
    return cells


def _more_cold_samples(cell: dict[str, Any], engine: str, shape: str, args: argparse.Namespace,
                       env: dict[str, str], cpu_iterations: int) -> None:
    """Ours' cold figure in ``--cold-repeat`` fresh processes in all: the cell's own first
    run and ``--cold-repeat`` - 1 more processes doing only that; ``cold_s`` becomes
    their median, ``cold_samples_s`` lists them.  A sample that fails fails the cell."""
    samples = [cell["cold_s"]]
    for _ in range(args.cold_repeat - 1):
        sample = spawn_cell(engine, shape, args, env, cpu_iterations, cold_only=True)
        cell["elapsed_s"] += sample["elapsed_s"]
        if sample["status"] != "ok":
            cell.update(status=sample["status"], reason=f"a cold-only process: {sample['reason']}")
            return
        samples.append(sample["cold_s"])
    cell.update(cold_s=statistics.median(samples), cold_samples_s=samples)


def _add_ratios(cells: list[dict[str, Any]]) -> None:
    """Per node: ``cold_us_per_node`` (ours: the cold run / nodes; peers: none), and the
    ratios to ours (threads) on the same shape: ``x_vs_ours_cold`` (ours: its cold figure
    over ours (threads)'s; a peer: its only figure over it) and ``x_vs_ours_warm`` (the
    warm figure, or a peer's only one, over ours (threads)'s warm one)."""
    for c in cells:
        ok = c["status"] == "ok"
        c["cold_us_per_node"] = c["cold_s"] / c["nodes"] * 1e6 if ok and c.get("cold_s") is not None else None
    base = {c["shape"]: c for c in cells if c["engine"] == BASELINE and c["status"] == "ok"}
    for c in cells:
        ours = base.get(c["shape"]) if c["status"] == "ok" else None
        cold = c["cold_us_per_node"] if ENGINES[c["engine"]].cold else c.get("us_per_node")
        c["x_vs_ours_cold"] = (cold / ours["cold_us_per_node"]
                               if ours is not None and cold is not None and ours["cold_us_per_node"] else None)
        c["x_vs_ours_warm"] = c["us_per_node"] / ours["us_per_node"] if ours is not None else None


# -- report --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine, the Python and the packages, for the JSON file and the tables' heading."""
    from flow_orchestrator import _ext

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "extension_debug_build": bool(_ext.DEBUG_BUILD),
        "flow_orchestrator_path": str(Path(flow_orchestrator.__file__).resolve().parent),
    }


def package_versions() -> dict[str, str | None]:
    """Versions of ours and of the peers (``None``: not installed)."""
    return {"flow-orchestrator": flow_orchestrator.__version__,
            **{name: dist_version(name) for name in ("numpy", "dask", "taskflow", "futurist")}}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def _nodes(cell: dict[str, Any]) -> str:
    runs = cell.get("runs_per_repetition", 1)
    return f"{cell['nodes']:,}" + (f" x {runs:,} runs" if runs > 1 else "")


def _headline(report: dict[str, Any]) -> list[str]:
    m, v, o = report["machine"], report["packages"], report["options"]
    build = "DEBUG build: times mean nothing" if m["extension_debug_build"] else "release build"
    peers = ", ".join(f"{name} {version}" for name, version in v.items()
                      if name != "flow-orchestrator" and version)
    cold_repeat = o.get("cold_repeat", 1)
    return [
        (f"Measured {report['date']} on {m['os']}, {m['cpu']}, {m['cpu_count']} CPUs; Python {m['python']}; "
         f"flow-orchestrator {v['flow-orchestrator']} ({build}); {peers}."),
        (f"Each engine and shape in a fresh process; {o['workers']} workers"
         f"{'; --quick sizes' if o['quick'] else ''}. Ours cold: the median of {cold_repeat} fresh "
         f"process{'es' * (cold_repeat != 1)}, each timing `{report.get('build', 'Workflow.from_arrays')}` "
         f"from a Python list of (source, target) pairs + `Engine(...)` + the first run. Ours warm, and the "
         f"peers: median, min and max of {o['repeat']} timed run{'s' * (o['repeat'] != 1)} after "
         f"{o['warmup']} warm-up{'s' * (o['warmup'] != 1)} (ours: at least its cold run). "
         f"Command: `{report['command']}`."),
    ]


#: What the README's table says about its figures (a test checks the README has it).
README_LEGEND = (
    "µs a node, median wall time / nodes run. **Cold**: what a batch job pays: from the Python edge list "
    "the peers are given, in a fresh process where nothing of ours has run, the workflow built, the engine "
    "made and the first run (compiling the workflow included). **Warm**: the same workflow run again. "
    "The peers pay everything on every run, so they have one figure, and in brackets times ours (threads) "
    "cold / warm: above 1x is slower. -: skipped (a peer not installed, or an engine that lacks the "
    "feature or would take too long); †: capped to a smaller graph or fewer runs. bench/README.md explains "
    "each figure.")


def readme_columns(engines: Sequence[str]) -> list[str]:
    """The README table's header cells after ``shape`` and ``nodes``: ours (threads) cold
    and warm apart, ours' other engines ``cold / warm`` in one column, a peer's one figure."""
    columns = []
    for name in engines:
        spec = ENGINES[name]
        if name == BASELINE:
            columns += [f"{spec.short} cold", f"{spec.short} warm"]
        elif spec.cold:
            columns.append(f"{spec.short} cold / warm")
        else:
            columns.append(spec.short)
    return columns


def _readme_cells(name: str, c: dict[str, Any] | None) -> list[str]:
    """The README's cell(s) of engine ``name`` on one shape (two for ours (threads))."""
    width = 2 if name == BASELINE else 1
    if c is None or c["status"] == "skipped":
        return ["-"] * width
    if c["status"] != "ok":
        return [c["status"]] * width
    cold, warm = _us(c.get("cold_us_per_node")), _us(c["us_per_node"])
    if name == BASELINE:
        return [cold, warm]
    if ENGINES[name].cold:
        return [f"{cold} / {warm}"]
    ratios = (c.get("x_vs_ours_cold"), c.get("x_vs_ours_warm"))
    bracket = "" if None in ratios else f" ({fmt_ratio(ratios[0])} / {fmt_ratio(ratios[1])})"
    return [f"{warm}{bracket}{' †' if c['note'] else ''}"]


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown: a heading, then a table per shape."""
    lines = ["## Cross-engine comparison", "", *_headline(report), "",
             ("cold (ours only): everything of ours from the Python edge list in a fresh process (the workflow "
              "built, the engine made, the first run); median, min, max ms and µs/node: the timed runs, warm "
              "for ours, everything every time for a peer; overhead: µs/node less a bare loop calling the same "
              "actions (no-op shapes); x ours cold / warm: this row's cold figure (a peer's only one) over ours "
              "(threads)'s cold one, and its run figure over ours (threads)'s warm one, above 1x is slower; "
              "peak RSS: VmHWM of the cell's process (interpreter, imports, graph, every run; not process-pool "
              "workers). bench/README.md has the details.")]
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for cell in report["cells"]:
        by_shape.setdefault(cell["shape"], []).append(cell)
    for name, cells in by_shape.items():
        shape = SHAPES[name]
        lines += ["", f"### {name}: {shape.title}", "",
                  ("| engine | nodes | cold ms | cold µs/node | median ms | min ms | max ms | µs/node "
                   "| overhead µs/node | x ours cold | x ours warm | peak RSS MB | notes |"),
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for c in cells:
            if c["status"] != "ok":
                lines.append(f"| {c['label']} |" + " - |" * 11 + f" {c['status']}: {c['reason']} |")
                continue
            cold_ms = "-" if c.get("cold_s") is None else fmt_ms(c["cold_s"])
            lines.append(f"| {c['label']} | {_nodes(c)} | {cold_ms} | {_us(c.get('cold_us_per_node'))} "
                         f"| {fmt_ms(c['median_s'])} | {fmt_ms(c['min_s'])} | {fmt_ms(c['max_s'])} "
                         f"| {_us(c['us_per_node'])} | {_us(c['overhead_us_per_node'])} "
                         f"| {fmt_ratio(c.get('x_vs_ours_cold'))} | {fmt_ratio(c.get('x_vs_ours_warm'))} "
                         f"| {c['peak_rss_mb']:,.0f} | {c['note']} |")
        if shape.feature is not None:
            plain = next((c for c in report["cells"] if c["shape"] == "layered-10k" and c["engine"] == BASELINE
                          and c["status"] == "ok"), None)
            if plain is not None:
                lines += ["", (f"Without it (layered-10k, {plain['label']}): cold "
                               f"{_us(plain.get('cold_us_per_node'))}, warm {_us(plain['us_per_node'])} µs/node.")]
    return "\n".join(lines) + "\n"


def readme_block(report: dict[str, Any]) -> str:
    """The README's figures: the date and machine line, the legend, and one table: a row
    per shape; ours cold and warm side by side, cold first; a peer's one figure with its
    ratios to ours (threads) cold and warm."""
    engines = report["options"]["engines"]
    cells = {(c["shape"], c["engine"]): c for c in report["cells"]}
    columns = readme_columns(engines)
    lines = [*_headline(report), "", README_LEGEND, "",
             "| shape | nodes | " + " | ".join(columns) + " |",
             "| --- | ---: |" + " ---: |" * len(columns)]
    for shape in report["options"]["shapes"]:
        row = [cells.get((shape, e)) for e in engines]
        ran = [c for c in row if c is not None and c["status"] == "ok" and not c["note"]]
        size = _nodes(ran[0]) if ran else "-"
        texts = [text for name, c in zip(engines, row) for text in _readme_cells(name, c)]
        lines.append(f"| {shape} | {size} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


class MarkerError(ValueError):
    """The README lacks the ``<!-- bench:start -->`` / ``<!-- bench:end -->`` pair."""


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with what lies between the bench markers replaced by ``block`` (the
    marker lines kept); :class:`MarkerError` unless each marker is there once, in order."""
    start, end = text.find(README_START), text.find(README_END)
    if text.count(README_START) != 1 or text.count(README_END) != 1 or end < start:
        raise MarkerError(f"expected one '{README_START}' line followed by one '{README_END}' line")
    return text[: start + len(README_START)] + "\n" + block.strip("\n") + "\n" + text[end:]


def _check_readme(path: Path) -> str | None:
    """Why ``path`` cannot take the figures, or ``None`` if it can."""
    try:
        replace_between_markers(path.read_text(encoding="utf-8"), "")
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    except MarkerError as exc:
        return f"{path}: {exc}"
    return None


# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, prog: str = "python -m bench.compare") -> argparse.Namespace:
    """The options (see the module docstring); ``--worker`` and what follows it are the
    parent's to pass, not documented in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog="bench/README.md explains every column.")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), metavar="SHAPE",
                        help=f"shapes to run (default: all): {', '.join(SHAPES)}")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES), metavar="ENGINE",
                        help=f"engines to run (default: all): {', '.join(ENGINES)}")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cell (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default: 1; "
                        "ours: at least 1, its cold run)")
    parser.add_argument("--cold-repeat", type=int, default=None, metavar="N",
                        help="fresh processes measuring ours' cold figure (build from the edge list + first "
                             "run), whose median is reported (default: --repeat; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (hundreds of nodes, 20 diamond runs, light work): checks that every "
                             "cell runs, for tests and CI; the figures mean little")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds a cell may take, its process's start included (default: {DEFAULT_TIMEOUT:g}; "
                             f"{QUICK_TIMEOUT:g} with --quick)")
    parser.add_argument("--workers", type=int, default=2, help="threads or processes of the parallel engines "
                        "(default: 2)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"),
                        help="write the figures, machine and versions here (default: bench-results.json)")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown tables to this file")
    parser.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", metavar="README",
                        help=f"rewrite the figures between '{README_START}' and '{README_END}' in this file "
                             "(default: the checkout's README.md)")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="run nothing: print (and --markdown, --readme) the tables of a previous run's JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "SHAPE"), help=argparse.SUPPRESS)
    parser.add_argument("--cpu-iterations", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--expect-package", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cold-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_repeat is None:
        args.cold_repeat = 1 if args.quick else args.repeat
    if args.repeat < 1 or args.warmup < 0 or args.workers < 1 or args.cold_repeat < 1:
        parser.error("--repeat, --cold-repeat and --workers must be at least 1, --warmup at least 0")
    if args.timeout is None:
        args.timeout = QUICK_TIMEOUT if args.quick else DEFAULT_TIMEOUT
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.worker is not None and (args.worker[0] not in ENGINES or args.worker[1] not in SHAPES):
        parser.error(f"--worker: unknown engine or shape {args.worker}")
    args.shapes = [s for s in SHAPES if s in args.shapes]
    args.engines = [e for e in ENGINES if e in args.engines]
    return args


def _cpu_iterations(args: argparse.Namespace) -> int:
    """LCG rounds for ~``work_arg`` seconds of pure-Python work here, if a CPU shape runs."""
    shapes = [SHAPES[s] for s in args.shapes if SHAPES[s].work == CPU]
    if not shapes:
        return 1
    return calibrate(shapes[0].work_arg[args.quick])


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench.compare") -> int:
    """Run the comparison (or, with ``--worker``, one cell of it); 0 when every cell that
    was not skipped ran and verified, 1 otherwise, 2 for a README without markers.
    ``prog``: the command that runs this, for ``--help`` and the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    if args.worker is not None:
        return worker_main(args)
    if args.readme is not None:
        problem = _check_readme(args.readme)
        if problem is not None:
            sys.stderr.write(f"bench compare: --readme: {problem}; nothing was run or written\n")
            return 2
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
        return emit(report, args, write_json=False)
    cpu_iterations = _cpu_iterations(args)
    cells = run_all(args, cpu_iterations)
    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "packages": package_versions(),
        "commit": _commit(),
        "command": f"{prog} {shlex.join(argv)}".strip(),
        "build": edge_list_build(),
        "options": {"shapes": args.shapes, "engines": args.engines, "repeat": args.repeat, "warmup": args.warmup,
                    "cold_repeat": args.cold_repeat,
                    "quick": args.quick, "timeout_s": args.timeout, "workers": args.workers,
                    "cpu_iterations": cpu_iterations},
        "shapes": {name: {"title": SHAPES[name].title, "work": SHAPES[name].work, "feature": SHAPES[name].feature}
                   for name in args.shapes},
        "cells": cells,
    }
    return emit(report, args, write_json=True)


def emit(report: dict[str, Any], args: argparse.Namespace, *, write_json: bool) -> int:
    """Print the Markdown and write the files asked for; the exit status of :func:`main`."""
    markdown = markdown_report(report)
    sys.stdout.write(markdown)
    if write_json:
        common.write_json(args.json, report)
    if args.markdown is not None:
        args.markdown.write_text(markdown, encoding="utf-8")
    if args.readme is not None:
        try:
            text = replace_between_markers(args.readme.read_text(encoding="utf-8"), readme_block(report))
        except MarkerError as exc:  # the file changed while the cells ran
            sys.stderr.write(f"bench compare: --readme: {args.readme}: {exc}; not written\n")
            return 2
        args.readme.write_text(text, encoding="utf-8")
    return 0 if all(c["status"] in ("ok", "skipped") for c in report["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
