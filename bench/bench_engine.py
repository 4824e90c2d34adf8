"""pytest-benchmark micro figures for the engine (``pytest bench/bench_engine.py``).

The ratio table against the bare loop, the naive graphlib loop and dask comes from
``python bench/run.py --suite engine``; these give pytest-benchmark's statistics for ours and
the in-process baselines on the issue's shapes.
"""

from __future__ import annotations

import pytest

from bench.execution import SHAPES, Counter, naive_graphlib_loop, workflow_of
from flow_orchestrator import Engine


@pytest.fixture(scope="module")
def engine():
    with Engine(2) as eng:
        yield eng


@pytest.mark.parametrize("shape", list(SHAPES))
def test_engine_noop(benchmark, engine, shape):
    benchmark.group = f"engine: {shape}"
    graph = SHAPES[shape]()
    counter = Counter(graph.num_nodes)
    wf = workflow_of(graph, counter.actions)
    engine.run(wf)
    result = benchmark.pedantic(engine.run, args=(wf,), rounds=5, iterations=1)
    assert result.ok
    counter.check(6)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_bare_loop(benchmark, shape):
    benchmark.group = f"engine: {shape}"
    graph = SHAPES[shape]()
    counter = Counter(graph.num_nodes)
    wf = workflow_of(graph, counter.actions)
    order = [counter.actions[i] for i in wf.graph.topological_order().tolist()]

    def bare():
        for fn in order:
            fn()

    benchmark.pedantic(bare, rounds=5, iterations=1)
    counter.check(5)


@pytest.mark.parametrize("shape", ["chain 10k", "fan 1->10k->1"])
def test_naive_graphlib_loop(benchmark, shape):
    benchmark.group = f"engine: {shape}"
    graph = SHAPES[shape]()
    counter = Counter(graph.num_nodes)
    benchmark.pedantic(naive_graphlib_loop, args=(graph, counter.actions, 2), rounds=1, iterations=1)
    counter.check(1)


def test_diamond_run_overhead(benchmark, engine):
    benchmark.group = "engine: 6-node diamond, one run"
    from bench.execution import Graph
    import numpy as np

    graph = Graph(6, np.array([0, 0, 0, 0, 1, 2, 3, 4], dtype=np.int32),
                  np.array([1, 2, 3, 4, 5, 5, 5, 5], dtype=np.int32))
    counter = Counter(6)
    wf = workflow_of(graph, counter.actions, "diamond")
    engine.run(wf)
    benchmark(engine.run, wf)
    assert (counter.calls >= 2).all()
