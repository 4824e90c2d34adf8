"""Execution benchmarks: our engine against a bare loop, the naive graphlib loop and dask.

Every measurement runs in this process, on the same graph, so ratios are fair:

* ``bare``: a Python loop calling the same functions in topological order; the floor.
* ``ours``: ``Engine(workers).run(workflow)`` (threads; the calling thread works too).
* ``naive graphlib``: stdlib ``graphlib.TopologicalSorter`` feeding a
  ``ThreadPoolExecutor``: ``get_ready``, ``submit``, ``wait(FIRST_COMPLETED)``, ``done``.
* ``dask threaded``: ``dask.threaded.get`` on the equivalent task graph (if installed).

Every run checks that every node ran: actions count their calls into a shared array.
``bench/run.py --suite engine`` uses :func:`measure_shape` and friends, and
``bench_engine.py`` the same for pytest-benchmark.  The last section holds what
``bench/compare.py`` (each engine and shape in its own process) adds: the numpy and
pure-Python work (:func:`burn`, :func:`calibrate`, shared with ``bench_processes.py``),
an observer overriding every node hook (shared with ``bench_observability.py``),
picklable nodes for process pools, dask's synchronous scheduler and OpenStack
TaskFlow's engine.  A library for the runners and the benchmark modules: it imports
neither.
"""

from __future__ import annotations

import functools
import graphlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from contextlib import ExitStack
from typing import Any

import numpy as np

from bench.graphs import Graph, chain, fan_out_in, layered, predecessor_dict
from flow_orchestrator import Engine, Workflow
from flow_orchestrator.observers import Observer

SHAPES: dict[str, Callable[[], Graph]] = {
    "layered 100k (1000x100, 3 deps)": lambda: layered(1000, 100, 3),
    "chain 10k": lambda: chain(10_000),
    "fan 1->10k->1": lambda: fan_out_in(10_000),
}


class Counter:
    """Actions that count their calls, to verify that every node ran.

    Without ``work`` they do nothing else (no-op nodes); with it, node ``i``'s action
    calls ``work(i)`` first, then counts.
    """

    def __init__(self, n: int, work: Callable[[int], Any] | None = None) -> None:
        self.calls = np.zeros(n, dtype=np.int64)
        self.actions = [self._action(i) if work is None else self._work_action(i, work) for i in range(n)]

    def _action(self, i: int) -> Callable[[], None]:
        calls = self.calls

        def action() -> None:
            calls[i] += 1
        return action

    def _work_action(self, i: int, work: Callable[[int], Any]) -> Callable[[], None]:
        calls = self.calls

        def action() -> None:
            work(i)
            calls[i] += 1
        return action

    def check(self, runs: int) -> None:
        if not (self.calls == runs).all():
            bad = np.flatnonzero(self.calls != runs)[:5].tolist()
            raise AssertionError(f"nodes {bad} ran {self.calls[bad].tolist()} times, expected {runs}")


def workflow_of(graph: Graph, actions: list[Callable[..., Any]], name: str = "bench") -> Workflow:
    return Workflow.from_arrays(name, [f"n{i}" for i in range(graph.num_nodes)],
                                graph.sources, graph.targets, actions)


def edge_list_build() -> str:
    """How :func:`workflow_from_edge_list` builds a workflow with the installed package:
    ``Workflow.from_edge_list`` when it has it, else ``np.array`` + ``Workflow.from_arrays``."""
    if callable(getattr(Workflow, "from_edge_list", None)):
        return "Workflow.from_edge_list"
    return "np.array + Workflow.from_arrays"


def workflow_from_edge_list(name: str, node_names: list[str], edges: list[tuple[int, int]],
                            actions: Callable[..., Any] | list[Callable[..., Any]]) -> Workflow:
    """A workflow from a Python list of ``(source, target)`` pairs, the way a user holding
    one does it with the public API: ``Workflow.from_edge_list`` when the installed
    package has it, else the list made into an ``(m, 2)`` int32 array with ``np.array``
    and its columns given to ``Workflow.from_arrays``."""
    from_edge_list = getattr(Workflow, "from_edge_list", None)
    if callable(from_edge_list):
        return from_edge_list(name, node_names, edges, actions)
    pairs = np.array(edges, dtype=np.int32).reshape(-1, 2)
    return Workflow.from_arrays(name, node_names, pairs[:, 0], pairs[:, 1], actions)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def naive_graphlib_loop(graph: Graph, actions: list[Callable[[], Any]], workers: int, *,
                        pool: Executor | None = None, preds: dict[int, list[int]] | None = None) -> None:
    """The loop most people write with the standard library.

    ``pool``: an executor to reuse (default: a new ``ThreadPoolExecutor(workers)`` for
    this call); ``preds``: :func:`predecessor_dict` of ``graph``, made beforehand
    (default: made here, as part of the call).
    """
    sorter = graphlib.TopologicalSorter(predecessor_dict(graph) if preds is None else preds)
    sorter.prepare()
    with ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(ThreadPoolExecutor(workers))
        pending: dict[Any, int] = {}
        while sorter.is_active():
            for node in sorter.get_ready():
                pending[pool.submit(actions[node])] = node
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                sorter.done(pending.pop(future))


def dask_graph(graph: Graph, actions: list[Callable[[], Any]]) -> tuple[dict[str, Any], list[str]]:
    """The same DAG as a dask task graph: each task depends on its predecessors' keys."""
    preds = predecessor_dict(graph)

    def call(fn: Callable[[], Any], *_deps: Any) -> None:
        fn()

    dsk = {f"n{v}": (call, actions[v], *[f"n{p}" for p in ps]) for v, ps in preds.items()}
    return dsk, list(dsk)


def measure_shape(name: str, graph: Graph, *, workers: int = 2, repeat: int = 5,
                  with_dask: bool = True, with_naive: bool = True) -> list[dict[str, Any]]:
    """Rows of per-node cost for one shape: bare, ours, naive graphlib, dask."""
    n = graph.num_nodes
    counter = Counter(n)
    wf = workflow_of(graph, counter.actions)
    order = [counter.actions[i] for i in wf.graph.topological_order().tolist()]
    rows: list[dict[str, Any]] = []

    def row(engine: str, seconds: float, runs: int) -> None:
        counter.check(runs)
        rows.append({"shape": name, "engine": engine, "nodes": n, "seconds": seconds,
                     "us_per_node": seconds / n * 1e6})

    runs = 0

    def bare() -> None:
        for fn in order:
            fn()

    seconds, _ = best_of(bare, repeat)
    runs += repeat
    row("bare loop", seconds, runs)
    with Engine(workers) as engine:
        engine.run(wf)  # warm-up: compiles the workflow, starts the pool
        runs += 1
        seconds, _ = best_of(lambda: engine.run(wf), repeat)
        runs += repeat
        row(f"ours ({workers} threads)", seconds, runs)
    serial = Engine(1, executor="serial")
    serial.run(wf)
    seconds, _ = best_of(lambda: serial.run(wf), repeat)
    runs += repeat + 1
    row("ours (serial)", seconds, runs)
    if with_naive:
        seconds, _ = best_of(lambda: naive_graphlib_loop(graph, counter.actions, workers), 1)
        runs += 1
        row(f"naive graphlib + ThreadPoolExecutor ({workers})", seconds, runs)
    if with_dask:
        dask_threaded = _dask()
        if dask_threaded is not None:
            dsk, keys = dask_graph(graph, counter.actions)
            seconds, _ = best_of(lambda: dask_threaded.get(dsk, keys, num_workers=workers), 1)
            runs += 1
            row(f"dask threaded ({workers})", seconds, runs)
    return rows


def _dask() -> Any:
    try:
        import dask.threaded
    except ImportError:
        return None
    return dask.threaded


def numpy_speedup(workers: int = 2, size: int = 600_000, repeat: int = 3) -> dict[str, Any]:
    """64 nodes of GIL-releasing numpy work (8 layers of 8, all-to-all): threads vs serial."""
    data = np.random.default_rng(0).standard_normal(size)

    def work() -> float:
        return float(np.sort(data)[size // 2])

    graph = numpy_graph()
    wf = Workflow.from_arrays("numpy", [f"n{i}" for i in range(64)], graph.sources, graph.targets, work)
    serial = Engine(1, executor="serial")
    serial.run(wf)
    serial_s, _ = best_of(lambda: serial.run(wf), repeat)
    with Engine(workers) as engine:
        engine.run(wf)
        threads_s, _ = best_of(lambda: engine.run(wf), repeat)
    return {"serial_s": serial_s, "threads_s": threads_s, "speedup": serial_s / threads_s,
            "workers": workers}


def diamond_runs(runs: int = 10_000, workers: int = 2, repeat: int = 3) -> list[dict[str, Any]]:
    """A 6-node diamond (a -> b, c, d, e -> f) run many times, end to end (``engine.run``
    returning a ``RunResult``): the fixed cost of a run, serial and on threads, against
    dask's threaded scheduler on the same graph in this process."""
    sources = np.array([0, 0, 0, 0, 1, 2, 3, 4], dtype=np.int32)
    targets = np.array([1, 2, 3, 4, 5, 5, 5, 5], dtype=np.int32)
    graph = Graph(6, sources, targets)
    counter = Counter(6)
    wf = workflow_of(graph, counter.actions, "diamond")
    rows = []
    calls = 0
    for label, engine in ((f"ours ({workers} threads)", Engine(workers)), ("ours (serial)", Engine(1, "serial"))):
        with engine:
            engine.run(wf)

            def ours() -> None:
                for _ in range(runs):
                    engine.run(wf)

            seconds, _ = best_of(ours, repeat)
        calls += runs * repeat + 1
        rows.append({"engine": label, "runs": runs, "us_per_run": seconds / runs * 1e6})
    counter.check(calls)
    dask_threaded = _dask()
    if dask_threaded is not None:
        dsk, keys = dask_graph(graph, counter.actions)
        dask_runs = max(runs // 10, 1)

        def dask_loop() -> None:
            for _ in range(dask_runs):
                dask_threaded.get(dsk, keys, num_workers=workers)

        seconds, _ = best_of(dask_loop, 1)
        rows.append({"engine": f"dask threaded ({workers})", "runs": dask_runs,
                     "us_per_run": seconds / dask_runs * 1e6})
    return rows


def timeout_costs(num_nodes: int = 100_000, workers: int = 2, repeat: int = 3,
                  memory_runs: int = 5) -> dict[str, Any]:
    """``timeout=`` on every node of a ``num_nodes`` chain against the same chain without
    (best of ``repeat``, alternated in this process), and the memory left behind across
    ``memory_runs`` runs with ``timeout=3600`` (tracemalloc, after a warm-up run)."""
    import gc
    import tracemalloc

    from flow_orchestrator.workflow import NodeOptions

    graph = chain(num_nodes)
    names = [f"n{i}" for i in range(num_nodes)]
    plain = Workflow.from_arrays("chain", names, graph.sources, graph.targets, _noop)
    timed = Workflow.from_arrays("chain-timeouts", names, graph.sources, graph.targets, _noop,
                                 NodeOptions(timeout=3600))
    best = {"plain": float("inf"), "timed": float("inf")}
    with Engine(workers) as engine:
        engine.run(plain)
        engine.run(timed)
        for _ in range(repeat):
            for key, wf in (("plain", plain), ("timed", timed)):
                start = time.perf_counter()
                engine.run(wf)
                best[key] = min(best[key], time.perf_counter() - start)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            grown = []
            for _ in range(memory_runs):
                engine.run(timed)
                gc.collect()
                grown.append(tracemalloc.get_traced_memory()[0] - base)
        finally:
            tracemalloc.stop()
        timer_entries = engine._timer.entries()
    return {"nodes": num_nodes, "plain_us_per_node": best["plain"] / num_nodes * 1e6,
            "timed_us_per_node": best["timed"] / num_nodes * 1e6, "ratio": best["timed"] / best["plain"],
            "memory_runs": memory_runs, "grown_bytes": grown, "timer_entries": timer_entries}


def run_state_bytes(num_nodes: int = 1_000_000) -> dict[str, float]:
    """Bytes a run holds per node beyond the graph, outputs excluded, at ``num_nodes``."""
    from flow_orchestrator import _ext

    graph = layered(num_nodes // 1000, 1000, 3)
    wf = workflow_of(graph, [_noop] * graph.num_nodes)
    with Engine(1, executor="serial") as engine:
        compiled = engine.compile(wf)
        core = _ext.begin_run(compiled, None, "mem", None, None, 0, False)
        per_node = core.nbytes / num_nodes
        core.detach()
    return {"nodes": num_nodes, "bytes_per_node": per_node}


def _noop() -> None:
    return None


# -- work for the cross-engine comparison (bench/compare.py) --------------------------------


def numpy_graph(layers: int = 8, width: int = 8) -> Graph:
    """``layers`` layers of ``width`` nodes, each depending on every node of the layer
    before (all-to-all): the GIL-releasing numpy workflow's graph (64 nodes, 448 edges)."""
    n = layers * width
    sources = np.repeat(np.arange(n - width, dtype=np.int32), width)
    targets = np.array([(u // width + 1) * width + k for u in range(n - width) for k in range(width)],
                       dtype=np.int32)
    return Graph(n, sources, targets)


@functools.cache
def _numpy_data(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(size)


def numpy_work(size: int) -> float:
    """GIL-releasing work: sort ``size`` float64 values (made once per process, seed 0),
    return the median."""
    return float(np.sort(_numpy_data(size))[size // 2])


#: Seconds of pure-Python work a node of the CPU-bound workflows does, by default.
WORK_SECONDS = 0.020
MOD = 1_000_003


def burn(iterations: int, seed: int) -> int:
    """Pure-Python integer arithmetic: ``iterations`` rounds of a small LCG, GIL held."""
    x = seed % MOD
    for _ in range(iterations):
        x = (x * 48271 + 11) % MOD
    return x


def calibrate(seconds: float = WORK_SECONDS) -> int:
    """Iterations of :func:`burn` that take about ``seconds`` here."""
    n = 20_000
    while True:
        start = time.perf_counter()
        burn(n, 1)
        took = time.perf_counter() - start
        if took > 0.005:
            return max(1, int(n * seconds / took))
        n *= 4


def cpu_work(iterations: int, seed: int) -> int:
    """Pure-Python work, GIL held: :func:`burn` (a small LCG) ``iterations`` times."""
    return burn(iterations, seed)


class EveryNodeHookObserver(Observer):
    """An observer overriding every node hook with one that does nothing: the engine
    calls each hook of each node (the middleware shapes, ``bench_observability.py``)."""

    def on_node_start(self, event):
        """Nothing."""

    def on_node_success(self, event):
        """Nothing."""

    def on_node_failure(self, event):
        """Nothing."""

    def on_node_retry(self, event):
        """Nothing."""

    def on_node_skip(self, event):
        """Nothing."""

    def on_node_cancel(self, event):
        """Nothing."""

    def on_node_timeout(self, event):
        """Nothing."""


def ran() -> int:
    """A picklable no-op node for process pools: returns 1, and the caller counts the 1s
    among the run's outputs to verify that every node ran (calls in another process
    cannot be counted here)."""
    return 1


def remote_work(ctx: Any, kind: str, param: int) -> int:
    """A picklable node for process pools doing ``kind`` of work (``"numpy"``: sort
    ``param`` values; ``"cpu"``: ``param`` LCG rounds seeded by the node id), then
    returning 1 like :func:`ran`."""
    if kind == "numpy":
        numpy_work(param)
    elif kind == "cpu":
        cpu_work(param, ctx.node_id)
    else:
        raise ValueError(f"unknown kind of work {kind!r}")
    return 1


def dask_sync() -> Any:
    """dask's synchronous scheduler (``dask.local.get_sync``), or ``None`` without dask."""
    try:
        import dask.local
    except ImportError:
        return None
    return dask.local.get_sync


def taskflow_engine(graph: Graph, actions: list[Callable[[], Any]], workers: int) -> tuple[Any, Any]:
    """The same DAG as an OpenStack TaskFlow ``graph_flow`` (one task per node, one
    ``link`` per edge) loaded on its parallel engine with a ``futurist`` thread pool of
    ``workers``; compiled, prepared and validated.  Returns ``(engine, executor)``:
    run with ``engine.run()``, again after ``engine.reset()``; shut the executor down
    when done.  Raises ``ImportError`` without taskflow."""
    import futurist
    from taskflow import engines
    from taskflow import task as tf_task
    from taskflow.patterns import graph_flow

    class Node(tf_task.Task):  # type: ignore[misc]
        """Calls one action; no inputs, no outputs (``requires``/``provides`` unused)."""

        def __init__(self, node: int, action: Callable[[], Any]) -> None:
            super().__init__(name=f"n{node}")
            self._action = action

        def execute(self) -> None:
            self._action()

    flow = graph_flow.Flow("bench")
    tasks = [Node(i, action) for i, action in enumerate(actions)]
    flow.add(*tasks)
    for u, v in zip(graph.sources.tolist(), graph.targets.tolist()):
        flow.link(tasks[u], tasks[v])
    executor = futurist.ThreadPoolExecutor(max_workers=workers)
    engine = engines.load(flow, engine="parallel", executor=executor)
    engine.compile()
    engine.prepare()
    engine.validate()
    return engine, executor


def median(values: list[float]) -> float:
    return statistics.median(values)
