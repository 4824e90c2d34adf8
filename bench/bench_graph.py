"""pytest-benchmark suite of the graph core and its peers.

Run: ``PYTHONPATH=. python -m pytest bench/bench_graph.py --benchmark-only``.
Benchmarks of one ``group`` run on the same graph (a layered one unless named), so
their figures compare.  The input each engine takes (numpy arrays for us, a Python
edge list or dict for the peers) is made outside the timings.  Peers that are not
installed are skipped.  The slow peers (networkx, stdlib graphlib) run at 100k nodes
only; the large cases use ``benchmark.pedantic`` with few rounds.
"""

from __future__ import annotations

import pytest

from bench.engines import (
    networkx_build_sort,
    ours_build_sort,
    rustworkx_build_sort,
    rustworkx_graph,
    stdlib_static_order,
)
from bench.graphs import Graph, diamond, edge_list, make, predecessor_dict
from flow_orchestrator import Workflow, WorkflowBuilder
from flow_orchestrator.dag import CSRGraph

SMALL = 100_000
LARGE = 1_000_000
BIG_ROUNDS = 3

# Each size is its own group, so that the table compares like with like.
BY_SIZE = pytest.mark.parametrize("size", [
    pytest.param("small", marks=pytest.mark.benchmark(group="build+sort 100k")),
    pytest.param("large", marks=pytest.mark.benchmark(group="build+sort 1M")),
])
DIAMOND = pytest.mark.benchmark(group="build+sort diamond")
LEVELS = pytest.mark.benchmark(group="levels 1M")
REACH = pytest.mark.benchmark(group="reachability 1M")


def _noop() -> None:
    pass


# -- graphs and the peers' inputs ----------------------------------------------------


@pytest.fixture(scope="module")
def small() -> Graph:
    return make("layered", SMALL)


@pytest.fixture(scope="module")
def large() -> Graph:
    return make("layered", LARGE)


@pytest.fixture(scope="module")
def large_built(large: Graph) -> CSRGraph:
    """The large graph with its lazy predecessors built, so reachability times the walk only."""
    graph = CSRGraph.from_edges(*large)
    graph.pred_indptr  # noqa: B018 - touched to build it
    return graph


@pytest.fixture(scope="module")
def rx():
    return pytest.importorskip("rustworkx")


@pytest.fixture(scope="module")
def nx():
    return pytest.importorskip("networkx")


@pytest.fixture(scope="module")
def rx_large(rx, large: Graph):
    return rustworkx_graph(rx, edge_list(large))


def _fresh(graph: Graph):
    """pedantic() setup: a newly built CSRGraph, whose lazy parts are not built yet."""
    return (CSRGraph.from_edges(*graph),), {}


# -- build + validate + topological sort ---------------------------------------------


@BY_SIZE
def test_ours_from_edges(benchmark, request, size):
    graph = request.getfixturevalue(size)
    result = benchmark(ours_build_sort, graph)
    assert len(result.topological_order()) == graph.num_nodes


@pytest.mark.benchmark(group="build+sort 1M")
def test_ours_from_edges_shuffled_ids(benchmark):
    # The same graph with ids in random order: our passes then access memory at random.
    benchmark(ours_build_sort, make("layered-shuffled", LARGE))


@BY_SIZE
def test_rustworkx_build_sort(benchmark, request, rx, size):
    graph = request.getfixturevalue(size)
    order = benchmark.pedantic(rustworkx_build_sort, (rx, edge_list(graph)),
                               rounds=BIG_ROUNDS, warmup_rounds=1)
    assert len(order) == graph.num_nodes


@BY_SIZE
def test_rustworkx_sort_prebuilt(benchmark, request, rx, size):
    graph = request.getfixturevalue(size)
    benchmark(rx.topological_sort, rustworkx_graph(rx, edge_list(graph)))


@pytest.mark.benchmark(group="build+sort 100k")
def test_networkx_build_sort(benchmark, nx, small):
    benchmark.pedantic(networkx_build_sort, (nx, edge_list(small), small.num_nodes),
                       rounds=BIG_ROUNDS, warmup_rounds=1)


@pytest.mark.benchmark(group="build+sort 100k")
def test_stdlib_graphlib_static_order(benchmark, small):
    benchmark.pedantic(stdlib_static_order, (predecessor_dict(small),), rounds=BIG_ROUNDS, warmup_rounds=1)


# Per-call overhead: a 4-node graph.


@DIAMOND
def test_ours_diamond(benchmark):
    benchmark(ours_build_sort, diamond())


@DIAMOND
def test_rustworkx_diamond(benchmark, rx):
    benchmark(rustworkx_build_sort, rx, edge_list(diamond()))


@DIAMOND
def test_networkx_diamond(benchmark, nx):
    benchmark(networkx_build_sort, nx, edge_list(diamond()), 4)


@DIAMOND
def test_stdlib_graphlib_diamond(benchmark):
    benchmark(stdlib_static_order, predecessor_dict(diamond()))


# -- levels and the lazily built parts -----------------------------------------------


@LEVELS
@pytest.mark.parametrize("method", ["levels", "generations"])
def test_ours_levels(benchmark, large, method):
    # Levels are computed on first use and cached: every round gets a fresh graph.
    benchmark.pedantic(lambda g: getattr(g, method)(), setup=lambda: _fresh(large), rounds=10)


@LEVELS
def test_ours_predecessors(benchmark, large):
    # Also built on first use (by ancestors(), predecessors()...), and cached.
    benchmark.pedantic(lambda g: g.pred_indptr, setup=lambda: _fresh(large), rounds=10)


@LEVELS
def test_rustworkx_generations(benchmark, rx, rx_large):
    benchmark.pedantic(rx.topological_generations, (rx_large,), rounds=BIG_ROUNDS, warmup_rounds=1)


# -- reachability of one node near the middle ----------------------------------------


@REACH
@pytest.mark.parametrize("direction", ["ancestors", "descendants"])
def test_ours_reach(benchmark, large_built, direction):
    reach = getattr(large_built, direction)
    result = benchmark(reach, [LARGE // 2])
    assert 0 < len(result) < LARGE


@REACH
@pytest.mark.parametrize("direction", ["ancestors", "descendants"])
def test_rustworkx_reach(benchmark, rx, rx_large, direction):
    benchmark(getattr(rx, direction), rx_large, LARGE // 2)


# -- workflows -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def builder_10k() -> WorkflowBuilder:
    graph = make("layered", 10_000)
    names = [f"task{i}" for i in range(graph.num_nodes)]
    builder = WorkflowBuilder("bench")
    for node, preds in predecessor_dict(graph).items():
        builder.add(names[node], _noop, depends_on=[names[p] for p in preds])
    return builder


@pytest.mark.benchmark(group="workflow 10k")
def test_workflow_builder_build(benchmark, builder_10k):
    workflow = benchmark(builder_10k.build)
    assert len(workflow) == len(builder_10k)


@pytest.mark.benchmark(group="workflow 1M")
def test_workflow_from_arrays(benchmark, large):
    names = [f"task{i}" for i in range(large.num_nodes)]
    workflow = benchmark.pedantic(
        Workflow.from_arrays, ("bench", names, large.sources, large.targets, _noop),
        rounds=BIG_ROUNDS, warmup_rounds=1)
    assert len(workflow) == large.num_nodes
