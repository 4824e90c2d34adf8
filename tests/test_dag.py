"""The CSR graph core, checked against the standard library's graphlib as an oracle."""

from __future__ import annotations

import graphlib
import pickle
import threading
from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow_orchestrator import errors
from flow_orchestrator.dag import CSRGraph

from strategies import dags, digraphs


def stdlib_sorter(n, src, dst):
    ts = graphlib.TopologicalSorter()
    for v in range(n):
        ts.add(v)
    for s, d in zip(src.tolist(), dst.tolist()):
        ts.add(d, s)
    return ts


def reference_levels(n, src, dst):
    preds = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        preds[d].append(s)
    levels = {}
    for v in stdlib_sorter(n, src, dst).static_order():
        levels[v] = 1 + max((levels[p] for p in preds[v]), default=-1)
    return [levels[v] for v in range(n)]


def reference_reach(n, pairs, seeds):
    adj = [[] for _ in range(n)]
    for a, b in pairs:
        adj[a].append(b)
    seen, todo = set(), deque(seeds)
    while todo:
        for w in adj[todo.popleft()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return sorted(seen)


@given(dags())
def test_order_equals_stdlib_static_order(graph):
    n, src, dst = graph
    g = CSRGraph.from_edges(n, src, dst)
    order = g.topological_order().tolist()
    assert order == list(stdlib_sorter(n, src, dst).static_order())
    position = {v: i for i, v in enumerate(order)}
    assert all(position[s] < position[d] for s, d in zip(src.tolist(), dst.tolist()))


@given(dags())
def test_levels_are_minimal_and_generations_partition(graph):
    n, src, dst = graph
    g = CSRGraph.from_edges(n, src, dst)
    assert g.levels().tolist() == reference_levels(n, src, dst)
    gens = g.generations()
    assert len(gens) == g.level_count() == max(reference_levels(n, src, dst)) + 1
    assert sorted(np.concatenate(gens).tolist()) == list(range(n))
    for level, ids in enumerate(gens):
        assert all(g.levels()[ids] == level)


@given(digraphs())
def test_cycle_detection_agrees_with_stdlib(graph):
    n, src, dst = graph
    try:
        stdlib_sorter(n, src, dst).prepare()
        stdlib_cyclic = False
    except graphlib.CycleError:
        stdlib_cyclic = True
    if not stdlib_cyclic:
        CSRGraph.from_edges(n, src, dst)
        return
    with pytest.raises(errors.CycleError) as info:
        CSRGraph.from_edges(n, src, dst)
    cycle = info.value.cycle
    edges = set(zip(src.tolist(), dst.tolist()))
    assert cycle[0] == cycle[-1] and len(cycle) >= 3
    assert len(set(cycle[:-1])) == len(cycle) - 1
    assert all((a, b) in edges for a, b in zip(cycle, cycle[1:]))
    assert isinstance(info.value, graphlib.CycleError)


@given(dags(), st.data())
def test_ancestors_and_descendants(graph, data):
    n, src, dst = graph
    g = CSRGraph.from_edges(n, src, dst)
    seeds = data.draw(st.lists(st.integers(0, n - 1), max_size=4))
    pairs = list(zip(src.tolist(), dst.tolist()))
    assert g.descendants(seeds).tolist() == reference_reach(n, pairs, seeds)
    assert g.ancestors(seeds).tolist() == reference_reach(n, [(b, a) for a, b in pairs], seeds)
    with_self = g.descendants(seeds, include_self=True).tolist()
    assert with_self == sorted(set(reference_reach(n, pairs, seeds)) | set(seeds))


@given(dags())
def test_adjacency_degrees_roots_leaves(graph):
    n, src, dst = graph
    g = CSRGraph.from_edges(n, src, dst)
    for v in range(n):
        assert g.successors(v).tolist() == [d for s, d in zip(src.tolist(), dst.tolist()) if s == v]
        assert sorted(g.predecessors(v).tolist()) == sorted(s for s, d in zip(src.tolist(), dst.tolist()) if d == v)
    assert g.in_degree().tolist() == np.bincount(dst, minlength=n).tolist()
    assert g.out_degree().tolist() == np.bincount(src, minlength=n).tolist()
    assert g.roots().tolist() == [v for v in range(n) if v not in set(dst.tolist())]
    assert g.leaves().tolist() == [v for v in range(n) if v not in set(src.tolist())]
    s2, d2 = g.edges()
    assert sorted(zip(s2.tolist(), d2.tolist())) == sorted(zip(src.tolist(), dst.tolist()))


def test_parallel_edges_count_twice():
    g = CSRGraph.from_edges(2, [0, 0], [1, 1])
    assert g.in_degree().tolist() == [0, 2]
    assert g.topological_order().tolist() == [0, 1]


def test_cycle_error_names_the_nodes():
    with pytest.raises(errors.CycleError) as info:
        CSRGraph.from_edges(4, [0, 1, 2, 3], [1, 2, 3, 1], labels=["a", "b", "c", "d"])
    assert info.value.cycle == ["b", "c", "d", "b"]
    assert "'b' -> 'c' -> 'd' -> 'b'" in str(info.value)


@pytest.mark.parametrize(
    "num_nodes, sources, targets, error, match",
    [
        (0, [], [], errors.EmptyGraphError, "at least one node"),
        (-3, [], [], errors.EmptyGraphError, "at least one node"),
        ("3", [], [], errors.EdgeArrayError, "num_nodes"),
        (2 ** 31, [], [], errors.GraphTooLargeError, "exceeds"),
        (3, [0, 1], [1], errors.EdgeArrayError, "differ in length"),
        (3, [0, -1], [1, 2], errors.EdgeArrayError, "negative"),
        (3, np.array([0, -1], dtype=np.int32), [1, 2], errors.EdgeArrayError, "out of range"),
        (3, [0, 1], np.array([1, 7], dtype=np.int32), errors.EdgeArrayError, "out of range"),
        (3, np.array([0, -1], dtype=np.int64), [1, 2], errors.EdgeArrayError, "negative"),
        (3, [0, 3], [1, 2], errors.EdgeArrayError, "out of range"),
        (3, np.array([0, 3], dtype=np.uint8), [1, 2], errors.EdgeArrayError, "out of range"),
        (3, np.array([0, 2 ** 40]), [1, 2], errors.EdgeArrayError, "int32"),
        (3, [0.0, 1.0], [1, 2], errors.EdgeArrayError, "integer dtype"),
        (3, [True, False], [1, 2], errors.EdgeArrayError, "integer dtype"),
        (3, ["0", "1"], [1, 2], errors.EdgeArrayError, "integer dtype"),
        (3, [[0, 1]], [[1, 2]], errors.EdgeArrayError, "1-D"),
        (3, [0, 1], [1, 1], errors.SelfDependencyError, "depends on itself"),
        (3, [0], [0], errors.SelfDependencyError, "node 0 depends on itself"),
    ],
)
def test_bad_input_gets_a_clear_library_error(num_nodes, sources, targets, error, match):
    with pytest.raises(error, match=match):
        CSRGraph.from_edges(num_nodes, sources, targets)


def test_other_integer_dtypes_are_accepted():
    for dtype in (np.int8, np.uint16, np.int64, np.uint64):
        g = CSRGraph.from_edges(3, np.array([0, 1], dtype=dtype), np.array([1, 2], dtype=dtype))
        assert g.topological_order().tolist() == [0, 1, 2]


def test_labels_must_match_node_count():
    with pytest.raises(errors.EdgeArrayError, match="labels"):
        CSRGraph.from_edges(3, [0], [1], labels=["a"])


@pytest.mark.parametrize("bad", [-1, 3, 2 ** 40, "x", 1.5, None])
def test_bad_node_ids_are_unknown_node_errors(bad):
    g = CSRGraph.from_edges(3, [0, 1], [1, 2])
    with pytest.raises(errors.UnknownNodeError):
        g.successors(bad)
    with pytest.raises(errors.UnknownNodeError):
        g.predecessors(bad)


@pytest.mark.parametrize("bad", [[-1], [3], [0.5], [[0, 1]]])
def test_bad_seed_ids_are_rejected(bad):
    g = CSRGraph.from_edges(3, [0, 1], [1, 2])
    with pytest.raises(errors.EdgeArrayError):
        g.descendants(bad)


def test_constructor_is_not_public():
    with pytest.raises(TypeError, match="from_edges"):
        CSRGraph()


def test_arrays_are_read_only():
    g = CSRGraph.from_edges(3, [0, 1], [1, 2])
    for arr in (g.succ_indptr, g.succ_indices, g.pred_indptr, g.pred_indices,
                g.topological_order(), g.levels(), g.successors(0)):
        with pytest.raises(ValueError):
            arr[0] = 1


def test_lazy_parts_build_once_under_concurrent_first_use():
    n = 20_000
    rng = np.random.default_rng(1)
    dst = np.repeat(np.arange(100, n, dtype=np.int32), 3)
    src = ((dst // 100 - 1) * 100 + rng.integers(0, 100, dst.shape[0])).astype(np.int32)
    g = CSRGraph.from_edges(n, src, dst)
    results = []
    barrier = threading.Barrier(8)

    def use():
        barrier.wait()
        results.append((g.levels().tolist(), g.pred_indptr.tolist(), g.ancestors([n - 1]).tolist()))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert results[0][0][-1] == n // 100 - 1


def test_pickle_round_trip():
    g = CSRGraph.from_edges(4, [0, 0, 1, 2], [1, 2, 3, 3], labels=["a", "b", "c", "d"])
    h = pickle.loads(pickle.dumps(g))
    assert h.topological_order().tolist() == g.topological_order().tolist()
    assert h.labels == ["a", "b", "c", "d"]
    assert h.succ_indices.tolist() == g.succ_indices.tolist()


def test_memory_per_node_and_edge_is_bounded():
    n, width = 50_000, 500
    rng = np.random.default_rng(2)
    dst = np.repeat(np.arange(width, n, dtype=np.int32), 3)
    src = ((dst // width - 1) * width + rng.integers(0, width, dst.shape[0])).astype(np.int32)
    g = CSRGraph.from_edges(n, src, dst)
    g.levels(), g.pred_indptr  # materialise the lazy parts too
    per_node = 8 + 8 + 4 + 4  # two int64 offset arrays, order, levels
    assert g.nbytes == per_node * n + 16 + 8 * g.num_edges
    assert g.nbytes <= 40 * n + 16 * g.num_edges


def test_single_node_graph():
    g = CSRGraph.from_edges(1, [], [])
    assert g.topological_order().tolist() == [0]
    assert g.roots().tolist() == g.leaves().tolist() == [0]
    assert g.level_count() == 1
