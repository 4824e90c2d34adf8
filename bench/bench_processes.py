"""Process pools: pure-Python CPU-bound workflows, serial vs ``Engine(executor="processes")``.

Issue 6's target: on a 2-core machine, 2 worker processes run a CPU-bound pure-Python
workflow at least 1.8x faster than the serial executor.  Measured, in one process, on:

* ``independent``: 64 nodes, no edges, each ~20 ms of pure-Python integer arithmetic
  (the GIL makes threads useless here);
* ``layered``: the same 64 nodes as 8 layers of 8, each node depending on 3 nodes of the
  layer before and folding their outputs into its own (inputs and outputs cross the
  process boundary);
* ``no-op``: 1,000 independent no-op nodes and a chain of 200: what the process path
  costs per node (pickling, the pool's queues and one result per attempt), where the
  serial executor costs about a microsecond;

each with: ``Engine(1, executor="serial")``; ``Engine(2, executor="processes")`` (its own
forkserver pool, started by an untimed warm-up run); and the naive standard-library loop,
``graphlib.TopologicalSorter`` feeding a ``ProcessPoolExecutor(2)`` of the same start
method (``get_ready``, ``submit``, ``wait(FIRST_COMPLETED)``, ``done``).  Every run's
outputs are checked against the serial run's.  Last, what checking that every action
pickles costs (once per compiled workflow, before the first run on a process pool).

* ``PYTHONPATH=. python bench/run.py --suite processes`` or
  ``PYTHONPATH=. python bench/bench_processes.py``: the table;
  ``from bench.bench_processes import compare; compare()``: its rows.
* ``PYTHONPATH=. python -m pytest bench/bench_processes.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import functools
import graphlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from bench.execution import burn, calibrate
from flow_orchestrator import Engine, Workflow
from flow_orchestrator.external import PICKLE_CODEC, _pickle_actions, default_mp_context

WORKERS = 2
TARGET_SPEEDUP = 1.8


# -- the work (module level: the worker processes import it; burn and calibrate: bench/execution.py) ---


def burn_node(ctx: Any, iterations: int) -> int:
    """A node: :func:`burn`, seeded with the sum of its inputs and its own id."""
    return burn(iterations, sum(ctx.inputs.values()) + ctx.node_id)


def noop() -> None:
    """A node that does nothing."""


# -- graphs ------------------------------------------------------------------------------------------


def independent_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """No edges."""
    empty = np.empty(0, dtype=np.int32)
    return empty, empty


def layered_edges(layers: int = 8, width: int = 8, deps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each node past the first layer depends on ``deps`` nodes of the layer before."""
    rng = np.random.default_rng(0)
    sources, targets = [], []
    for v in range(width, layers * width):
        base = (v // width - 1) * width
        for u in sorted(rng.choice(width, size=deps, replace=False).tolist()):
            sources.append(base + u)
            targets.append(v)
    return np.array(sources, dtype=np.int32), np.array(targets, dtype=np.int32)


def chain_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``0 -> 1 -> ... -> n-1``."""
    ids = np.arange(n, dtype=np.int32)
    return ids[:-1], ids[1:]


def workflow(name: str, n: int, edges: tuple[np.ndarray, np.ndarray], action: Callable[..., Any]) -> Workflow:
    return Workflow.from_arrays(name, [f"n{i}" for i in range(n)], edges[0], edges[1], action)


# -- the naive loop -------------------------------------------------------------------------------------


def naive_process_loop(wf: Workflow, pool: ProcessPoolExecutor, iterations: int | None) -> dict[str, Any]:
    """``graphlib`` + ``ProcessPoolExecutor``: what most people write with the stdlib."""
    names = wf.names
    preds = {v: [int(p) for p in wf.graph.predecessors(v)] for v in range(len(names))}
    sorter = graphlib.TopologicalSorter(preds)
    sorter.prepare()
    results: dict[int, Any] = {}
    pending: dict[Any, int] = {}
    while sorter.is_active():
        for node in sorter.get_ready():
            if iterations is None:
                pending[pool.submit(noop)] = node
            else:
                seed = sum(results[p] for p in preds[node]) + node
                pending[pool.submit(burn, iterations, seed)] = node
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            node = pending.pop(future)
            results[node] = future.result()
            sorter.done(node)
    return {names[v]: value for v, value in results.items()}


# -- measuring -------------------------------------------------------------------------------------------


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (after one untimed warm-up), and the last value."""
    value = fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


@contextmanager
def engines() -> Iterator[tuple[Engine, Engine, ProcessPoolExecutor]]:
    """The serial engine, ours on processes, and the naive loop's pool (same start method)."""
    pool = ProcessPoolExecutor(WORKERS, mp_context=default_mp_context())
    with Engine(1, executor="serial") as serial, Engine(WORKERS, executor="processes") as processes, pool:
        yield serial, processes, pool


def _row(case: str, engine: str, nodes: int, seconds: float, serial: float, note: str = "") -> dict[str, Any]:
    return {"case": case, "engine": engine, "nodes": nodes, "seconds": seconds,
            "us_per_node": seconds / nodes * 1e6, "vs_serial": serial / seconds, "note": note}


def measure(case: str, wf: Workflow, iterations: int | None, serial: Engine, processes: Engine,
            pool: ProcessPoolExecutor, repeat: int, target: bool) -> list[dict[str, Any]]:
    """The three engines on one workflow, best of ``repeat`` rounds after a warm-up.

    Rounds are interleaved (serial, ours, naive, then again) so that a busy patch of the
    machine hits them all alike; every run's outputs are checked against the serial one's.
    """
    n = len(wf)
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "serial": lambda: serial.run(wf).outputs,
        "ours": lambda: processes.run(wf).outputs,
        "naive": lambda: naive_process_loop(wf, pool, iterations),
    }
    expected = runs["serial"]()
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(repeat + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs = run()
            took = time.perf_counter() - start
            if outputs != expected:
                raise AssertionError(f"{case}: {name}'s outputs differ from the serial run's")
            if round_:  # the first round warms up
                best[name] = min(best[name], took)
    serial_s, ours_s, naive_s = best["serial"], best["ours"], best["naive"]
    speedup = serial_s / ours_s
    note = (f"target >= {TARGET_SPEEDUP}x: {'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}" if target
            else "per node: the cost of the process path")
    return [_row(case, "ours serial", n, serial_s, serial_s),
            _row(case, f"ours processes ({WORKERS})", n, ours_s, serial_s, note),
            _row(case, f"naive graphlib + ProcessPoolExecutor ({WORKERS})", n, naive_s, serial_s,
                 f"{naive_s / ours_s:.2f}x ours")]


def pickle_check_cost(repeat: int = 3) -> list[dict[str, Any]]:
    """What pickling every node's action costs, once per compiled workflow (on first use)."""
    rows = []
    cases = {
        "100,000 nodes, one shared action": workflow("one-action", 100_000, independent_edges(0), noop),
        "10,000 nodes, distinct partials": Workflow.from_arrays(
            "partials", [f"n{i}" for i in range(10_000)], *independent_edges(0),
            [functools.partial(burn_node, iterations=i) for i in range(10_000)]),
    }
    with Engine(1, executor="serial") as eng:
        for case, wf in cases.items():
            compiled = eng.compile(wf)
            seconds, _ = best_of(lambda c=compiled: _pickle_actions(c, PICKLE_CODEC), repeat)
            rows.append({"case": "action pickle check (once per compiled workflow)", "engine": case,
                         "nodes": len(wf), "seconds": seconds, "us_per_node": seconds / len(wf) * 1e6,
                         "vs_serial": "-", "note": "paid before the first run only"})
    return rows


def compare(repeat: int = 5) -> list[dict[str, Any]]:
    """Every row of the table: CPU-bound cases, no-op overhead, the pickle check."""
    iterations = calibrate()
    cpu = functools.partial(burn_node, iterations=iterations)
    rows: list[dict[str, Any]] = []
    with engines() as (serial, processes, pool):
        for case, edges, target in [
            ("independent: 64 x 20 ms", independent_edges(64), True),
            ("layered: 8 x 8, 3 deps, 64 x 20 ms", layered_edges(), True),
        ]:
            rows += measure(case, workflow(case, 64, edges, cpu), iterations, serial, processes, pool,
                            repeat, target)
        for case, n, edges in [("no-op: 1,000 independent", 1000, independent_edges(1000)),
                               ("no-op: chain of 200", 200, chain_edges(200))]:
            rows += measure(case, workflow(case, n, edges, noop), None, serial, processes, pool,
                            repeat, False)
    return rows + pickle_check_cost(repeat)


# -- pytest-benchmark ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Engine, Engine, ProcessPoolExecutor, int]]:
    with engines() as (serial, processes, pool):
        yield serial, processes, pool, calibrate()


@pytest.mark.parametrize("engine", ["serial", "processes", "naive"])
def test_cpu_bound_independent(benchmark: Any, setup: Any, engine: str) -> None:
    benchmark.group = "processes: 64 independent nodes of ~20 ms pure Python"
    serial, processes, pool, iterations = setup
    wf = workflow("independent", 64, independent_edges(64), functools.partial(burn_node, iterations=iterations))
    run = {"serial": lambda: serial.run(wf), "processes": lambda: processes.run(wf),
           "naive": lambda: naive_process_loop(wf, pool, iterations)}[engine]
    run()
    benchmark.pedantic(run, rounds=3, iterations=1)


@pytest.mark.parametrize("engine", ["processes", "naive"])
def test_noop_overhead(benchmark: Any, setup: Any, engine: str) -> None:
    benchmark.group = "processes: 1,000 independent no-op nodes"
    _, processes, pool, _ = setup
    wf = workflow("noop", 1000, independent_edges(1000), noop)
    run = {"processes": lambda: processes.run(wf), "naive": lambda: naive_process_loop(wf, pool, None)}[engine]
    run()
    benchmark.pedantic(run, rounds=3, iterations=1)


if __name__ == "__main__":
    for row in compare():
        speedup = row["vs_serial"] if isinstance(row["vs_serial"], str) else f"{row['vs_serial']:.2f}x"
        print(f"{row['case']:40} {row['engine']:48} {row['seconds'] * 1e3:9.2f} ms {row['us_per_node']:9.1f} us/node "
              f"{speedup:>7}  {row['note']}")
