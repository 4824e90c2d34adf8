"""Execution benchmarks: our engine against a bare loop, the naive graphlib loop and dask.

Every measurement runs in this process, on the same graph, so ratios are fair:

* ``bare``: a Python loop calling the same functions in topological order; the floor.
* ``ours``: ``Engine(workers).run(workflow)`` (threads; the calling thread works too).
* ``naive graphlib``: stdlib ``graphlib.TopologicalSorter`` feeding a
  ``ThreadPoolExecutor``: ``get_ready``, ``submit``, ``wait(FIRST_COMPLETED)``, ``done``.
* ``dask threaded``: ``dask.threaded.get`` on the equivalent task graph (if installed).

Every run checks that every node ran: actions count their calls into a shared array.
Use :func:`compare_shapes` and friends from ``bench/run.py``, or ``bench_engine.py``
for pytest-benchmark.
"""

from __future__ import annotations

import graphlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from bench.graphs import Graph, chain, fan_out_in, layered, predecessor_dict
from flow_orchestrator import Engine, Workflow

SHAPES: dict[str, Callable[[], Graph]] = {
    "layered 100k (1000x100, 3 deps)": lambda: layered(1000, 100, 3),
    "chain 10k": lambda: chain(10_000),
    "fan 1->10k->1": lambda: fan_out_in(10_000),
}


class Counter:
    """No-op actions that count their calls, to verify that every node ran."""

    def __init__(self, n: int) -> None:
        self.calls = np.zeros(n, dtype=np.int64)
        self.actions = [self._action(i) for i in range(n)]

    def _action(self, i: int) -> Callable[[], None]:
        calls = self.calls

        def action() -> None:
            calls[i] += 1
        return action

    def check(self, runs: int) -> None:
        if not (self.calls == runs).all():
            bad = np.flatnonzero(self.calls != runs)[:5].tolist()
            raise AssertionError(f"nodes {bad} ran {self.calls[bad].tolist()} times, expected {runs}")


def workflow_of(graph: Graph, actions: list[Callable[..., Any]], name: str = "bench") -> Workflow:
    return Workflow.from_arrays(name, [f"n{i}" for i in range(graph.num_nodes)],
                                graph.sources, graph.targets, actions)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def naive_graphlib_loop(graph: Graph, actions: list[Callable[[], Any]], workers: int) -> None:
    """The loop most people write with the standard library."""
    sorter = graphlib.TopologicalSorter(predecessor_dict(graph))
    sorter.prepare()
    with ThreadPoolExecutor(workers) as pool:
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

    sources = np.repeat(np.arange(56, dtype=np.int32), 8)
    targets = np.array([(u // 8 + 1) * 8 + k for u in range(56) for k in range(8)], dtype=np.int32)
    wf = Workflow.from_arrays("numpy", [f"n{i}" for i in range(64)], sources, targets, work)
    serial = Engine(1, executor="serial")
    serial.run(wf)
    serial_s, _ = best_of(lambda: serial.run(wf), repeat)
    with Engine(workers) as engine:
        engine.run(wf)
        threads_s, _ = best_of(lambda: engine.run(wf), repeat)
    return {"serial_s": serial_s, "threads_s": threads_s, "speedup": serial_s / threads_s,
            "workers": workers}


def diamond_runs(runs: int = 10_000, workers: int = 2) -> list[dict[str, Any]]:
    """A 6-node diamond (a -> b, c, d, e -> f) run many times: per-run overhead."""
    sources = np.array([0, 0, 0, 0, 1, 2, 3, 4], dtype=np.int32)
    targets = np.array([1, 2, 3, 4, 5, 5, 5, 5], dtype=np.int32)
    graph = Graph(6, sources, targets)
    counter = Counter(6)
    wf = workflow_of(graph, counter.actions, "diamond")
    rows = []
    with Engine(workers) as engine:
        engine.run(wf)

        def ours() -> None:
            for _ in range(runs):
                engine.run(wf)

        seconds, _ = best_of(ours, 1)
    counter.check(runs + 1)
    rows.append({"engine": f"ours ({workers} threads)", "runs": runs, "us_per_run": seconds / runs * 1e6})
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


def median(values: list[float]) -> float:
    return statistics.median(values)
