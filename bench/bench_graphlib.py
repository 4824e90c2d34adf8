"""flow_orchestrator.graphlib against the standard library's graphlib, in one process.

The graph is a layered DAG of ``str`` nodes given as a dict: ``n_layers`` layers of
``width`` nodes, each node depending on 3 distinct random nodes of the layer before
(fixed seed).  Each case builds the sorter from the dict, since a sorter runs once:

* ``static_order``: ``list(TopologicalSorter(graph).static_order())``;
* ``protocol_batches``: ``prepare()``, then ``get_ready()`` / ``done(*batch)`` until
  inactive;
* ``protocol_one_by_one``: the same with one ``done(node)`` call per node.

With pytest-benchmark::

    PYTHONPATH=. python -m pytest bench/bench_graphlib.py --benchmark-group-by=group

or without it: :func:`compare` returns the best times and the speedups.
"""

from __future__ import annotations

import graphlib as std_graphlib
import itertools
import random
import time

import pytest

import flow_orchestrator.graphlib as fo_graphlib

IMPLEMENTATIONS = {"stdlib": std_graphlib, "flow_orchestrator": fo_graphlib}


def layered_graph(n_layers: int = 100, width: int = 1000, seed: int = 0) -> dict[str, list[str]]:
    """The benchmark graph: ``{node: predecessors}``, keys layer by layer."""
    rng = random.Random(seed)
    layers = [[f"n{layer}_{i}" for i in range(width)] for layer in range(n_layers)]
    graph = {name: [] for name in layers[0]}
    for previous, layer in itertools.pairwise(layers):
        for name in layer:
            graph[name] = rng.sample(previous, 3)
    return graph


def static_order(impl, graph):
    return list(impl.TopologicalSorter(graph).static_order())


def protocol_batches(impl, graph):
    ts = impl.TopologicalSorter(graph)
    ts.prepare()
    count = 0
    while ts.is_active():
        batch = ts.get_ready()
        ts.done(*batch)
        count += len(batch)
    return count


def protocol_one_by_one(impl, graph):
    ts = impl.TopologicalSorter(graph)
    ts.prepare()
    count = 0
    while ts.is_active():
        for node in ts.get_ready():
            ts.done(node)
            count += 1
    return count


CASES = {
    "static_order": static_order,
    "protocol_batches": protocol_batches,
    "protocol_one_by_one": protocol_one_by_one,
}


@pytest.fixture(scope="module")
def graph():
    return layered_graph()


IMPL_PARAMS = pytest.mark.parametrize("impl", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


@IMPL_PARAMS
def test_static_order(benchmark, graph, impl):
    benchmark.group = "graphlib: static_order, 100k str nodes"
    assert len(benchmark(static_order, impl, graph)) == len(graph)


@IMPL_PARAMS
def test_protocol_batches(benchmark, graph, impl):
    benchmark.group = "graphlib: prepare/get_ready/done(*batch), 100k str nodes"
    assert benchmark(protocol_batches, impl, graph) == len(graph)


@IMPL_PARAMS
def test_protocol_one_by_one(benchmark, graph, impl):
    benchmark.group = "graphlib: prepare/get_ready/done(node), 100k str nodes"
    assert benchmark(protocol_one_by_one, impl, graph) == len(graph)


def _best_time(case, impl, graph, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        case(impl, graph)
        best = min(best, time.perf_counter() - start)
    return best


def compare(n_layers: int = 100, width: int = 1000, repeat: int = 5) -> list[dict]:
    """Time every case on both implementations (best of ``repeat``, perf_counter).

    Returns two rows a case, in the fields of ``bench.common.Row``: ``engine``, ``graph``,
    ``nodes``, ``edges``, ``seconds`` and ``ratio`` (that row's time / ours).
    """
    graph = layered_graph(n_layers, width)
    edges = sum(len(preds) for preds in graph.values())
    rows = []
    for name, case in CASES.items():
        ours = _best_time(case, fo_graphlib, graph, repeat)
        theirs = _best_time(case, std_graphlib, graph, repeat)
        common = {"graph": "layered, str nodes", "nodes": len(graph), "edges": edges}
        rows.append({"engine": f"graphlib drop-in: {name}", "seconds": ours, "ratio": 1.0, **common})
        rows.append({"engine": f"stdlib graphlib: {name}", "seconds": theirs, "ratio": theirs / ours, **common})
    return rows
