"""The cold path, by behaviour (never by wall time): the graph build's passes agree with
the standard library's graphlib and with the edges, whatever order the edges come in;
compiling builds no predecessor CSR and no per-node external tuples for thread runs;
a new run arena starts zeroed without being written, and reused ones are reset."""

from __future__ import annotations

import graphlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags

from flow_orchestrator import Engine, NodeContext, Workflow, _ext, errors
from flow_orchestrator._ext import group_by
from flow_orchestrator.dag import CSRGraph
from flow_orchestrator.metrics import MetricsRegistry


def stdlib_order(n: int, src: np.ndarray, dst: np.ndarray) -> list[int]:
    sorter = graphlib.TopologicalSorter({v: [] for v in range(n)})
    for s, d in zip(src.tolist(), dst.tolist()):
        sorter.add(d, s)
    return list(sorter.static_order())


@settings(max_examples=80, deadline=None)
@given(dags(), st.sampled_from(["as drawn", "grouped by source", "grouped by target", "reversed"]))
def test_build_agrees_with_graphlib_in_every_edge_order(graph, layout):
    """Edges grouped by source take the copy instead of the scatter; the CSR, the order,
    the in-degrees and the roots must not depend on which path was taken."""
    n, src, dst = graph
    if layout == "grouped by source":
        keep = np.argsort(src, kind="stable")
    elif layout == "grouped by target":
        keep = np.argsort(dst, kind="stable")
    elif layout == "reversed":
        keep = np.arange(src.size)[::-1]
    else:
        keep = np.arange(src.size)
    src, dst = src[keep], dst[keep]
    for g in (CSRGraph.from_edges(n, src, dst),
              CSRGraph.from_edge_list(n, np.stack([src, dst], axis=1).reshape(-1, 2)),
              CSRGraph.from_edge_list(n, list(zip(src.tolist(), dst.tolist())))):
        # Successors of each node in input order: the stable counting sort.
        expected = [[int(d) for s, d in zip(src, dst) if s == v] for v in range(n)]
        ptr, idx = g.succ_indptr.tolist(), g.succ_indices.tolist()
        assert [idx[ptr[v]:ptr[v + 1]] for v in range(n)] == expected
        # Kahn's FIFO order is the standard library's static order.
        assert g.topological_order().tolist() == stdlib_order(n, src, dst)
        assert g.in_degree().tolist() == np.bincount(dst, minlength=n).tolist()
        assert g.roots().tolist() == [v for v in range(n) if v not in set(dst.tolist())]
        assert g.pred_indptr.tolist()[-1] == src.size
        assert g.in_degree().tolist() == np.diff(g.pred_indptr).tolist()  # from the preds now


@pytest.mark.parametrize("stride_form", [False, True])
@pytest.mark.parametrize("bad, error", [((2, 9), errors.EdgeArrayError), ((3, 3), errors.SelfDependencyError),
                                        ((-1, 2), errors.EdgeArrayError)])
def test_the_first_bad_edge_is_named_after_a_clean_prefix(bad, error, stride_form):
    """Validation no longer stops at the first bad edge; the error still names it."""
    edges = [(0, 1), (1, 2), (0, 2), bad, (4, 5), (5, 6), (6, 6)]
    src = np.array([e[0] for e in edges])
    dst = np.array([e[1] for e in edges])
    build = ((lambda: CSRGraph.from_edge_list(7, np.array(edges))) if stride_form
             else (lambda: CSRGraph.from_edges(7, src, dst)))
    with pytest.raises(error, match="edge 3"):
        build()


def test_roots_is_a_read_only_prefix_of_the_order():
    g = CSRGraph.from_edges(5, np.array([4, 0, 1]), np.array([1, 2, 3]))
    assert g.roots().tolist() == [0, 4]
    assert g.topological_order().tolist()[:2] == [0, 4]
    assert not g.roots().flags.writeable


def test_compiling_builds_no_predecessor_csr_and_inputs_build_it_once():
    wf = Workflow.from_edge_list("w", ["a", "b", "c"], [(0, 2), (1, 2)], lambda: 1)
    before = wf.graph.nbytes
    with Engine(2) as engine:
        engine.compile(wf)
        assert wf.graph.nbytes == before  # no predecessor arrays yet
        assert engine.run(wf).ok
        assert wf.graph.nbytes == before
    seen = {}
    wf2 = Workflow.from_edge_list("w2", ["a", "b", "c"], [(0, 2), (1, 2)],
                                  [lambda: 1, lambda: 2, lambda ctx: seen.update(ctx.inputs)])
    with Engine(2) as engine:
        assert engine.run(wf2).ok
    assert seen == {"a": 1, "b": 2}


def test_inputs_from_many_threads_build_the_predecessors_once():
    n = 2000
    edges = [(i, n - 1) for i in range(n - 1)]
    wf = Workflow.from_edge_list("fan-in", [f"n{i}" for i in range(n)], edges,
                                 [*(lambda i=i: i for i in range(n - 1)), lambda ctx: sum(ctx.inputs.values())])
    with Engine(4) as engine:
        result = engine.run(wf)
    assert result.ok and result.output(f"n{n - 1}") == sum(range(n - 1))


def test_external_actions_are_made_on_first_use_only():
    acts = [(lambda i=i: i) for i in range(50)]
    wf = Workflow.from_edge_list("w", [f"n{i}" for i in range(50)], [(i, i + 1) for i in range(49)], acts)
    with Engine(2) as engine:
        compiled = engine.compile(wf)
        assert engine.run(wf).ok
        triples = compiled.external_actions
    assert [t[0] for t in triples] == acts
    assert all(t[1] is p for t, p in zip(triples, wf.call_plans))
    assert compiled.external_actions is triples  # made once, then kept
    with pytest.raises(ValueError, match="one action per node"):
        compiled.defer_external_actions(acts[:3], wf.call_plans[:3], [()], np.zeros(3, np.uint32))


def test_external_actions_made_concurrently_are_one_list():
    acts = [(lambda i=i: i) for i in range(3000)]
    wf = Workflow.from_edge_list("w", [f"n{i}" for i in range(3000)], [], acts)
    with Engine(2) as engine:
        compiled = engine.compile(wf)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: compiled.external_actions, range(8)))
    assert all(g is got[0] for g in got)
    assert len(got[0]) == 3000


def test_a_process_executor_ships_the_lazily_made_actions():
    wf = Workflow.from_edge_list("w", ["a", "b"], [(0, 1)], [int, int])
    with Engine(1, executor="processes") as engine:
        result = engine.run(wf)
        compiled = engine.compile(wf)
    assert result.ok and result.output("b") == 0
    assert [t[0] for t in compiled.external_actions] == [int, int]


def test_a_new_arena_is_zero_and_a_reused_one_is_reset():
    n = 300
    wf = Workflow.from_edge_list("chain", [f"n{i}" for i in range(n)], [(i, i + 1) for i in range(n - 1)],
                                 lambda: None)
    with Engine(2) as engine:
        compiled = engine.compile(wf)
        fresh = _ext.RunCore(compiled)
        assert fresh.statuses().tolist() == [0] * n
        assert fresh.attempts().tolist() == [0] * n
        started, ended = fresh.times()
        assert np.isnan(started).all() and np.isnan(ended).all()
        results = [engine.run(wf) for _ in range(4)]  # the later ones reuse pooled arenas
        assert compiled.pool_size() >= 1
    for result in results:
        assert result.ok
        assert result.attempts.tolist() == [1] * n
        assert not np.isnan(result.started).any() and not np.isnan(result.ended).any()


def test_metrics_get_their_ready_times_in_new_and_reused_arenas():
    """ready_ns exists only for runs with metrics: allocated by the first such run."""
    n = 40
    wf = Workflow.from_edge_list("chain", [f"n{i}" for i in range(n)], [(i, i + 1) for i in range(n - 1)],
                                 lambda: None)
    with Engine(2) as plain:
        core = _ext.RunCore(plain.compile(wf))
        assert core.nbytes < n * 24 + 4096  # no ready_ns yet (8 bytes a node)
    metrics = MetricsRegistry()
    with Engine(2, metrics=metrics) as measured:
        for _ in range(3):
            assert measured.run(wf).ok
    stats = metrics.workflow("chain").node("n7")
    assert stats["started"] == 3 and stats["completed"] == 3
    assert stats["wait_sum"] >= 0.0


@pytest.mark.parametrize("big", [2 ** 30 - 1, 2 ** 30, 2 ** 30 + 1, -(2 ** 30) + 1, -(2 ** 30), 2 ** 31 - 1,
                                 2 ** 60, -(2 ** 64)])
def test_ints_around_the_one_digit_boundary_are_read_exactly(big):
    """Small ints are read from the object (one 30-bit digit); the others by the C API:
    either way the same error as from_edges on the same values."""
    pairs = [(0, 1), (1, big)]
    expected = None
    if abs(big) < 2 ** 63:
        with pytest.raises(errors.EdgeArrayError) as from_arrays:
            CSRGraph.from_edges(3, np.array([0, 1], dtype=np.int64), np.array([1, big], dtype=np.int64))
        expected = str(from_arrays.value)
    with pytest.raises(errors.EdgeArrayError) as caught:
        CSRGraph.from_edge_list(3, pairs)
    if expected is not None:
        assert str(caught.value) == expected
    assert f"edge 1 (1 -> {big})" in str(caught.value)


def test_small_ints_in_range_are_read_from_the_object():
    n = 2 ** 16
    pairs = [(v, v + 1) for v in range(0, n - 1, 7)] + [(0, n - 1)]
    g = CSRGraph.from_edge_list(n, pairs)
    assert g.edges()[0].tolist() == sorted(p[0] for p in pairs)
    assert sorted(zip(*(a.tolist() for a in g.edges()))) == sorted(pairs)


def _annotated_closures(n: int) -> list:
    def make(i: int):
        def action() -> int:
            return i
        return action
    return [make(i) for i in range(n)]


def _annotated_context_closures(n: int) -> list:
    def make(i: int):
        def action(c: NodeContext) -> int:
            return c.node_id + i - i
        return action
    return [make(i) for i in range(n)]


def test_functions_of_one_def_with_a_return_annotation_share_their_call_plan():
    """Annotations only matter for required parameters: closures of one annotated def
    without any are grouped by code object (one signature), as unannotated ones are."""
    actions = _annotated_closures(200)
    first, group = group_by(actions, signatures=True)
    assert first.tolist() == [0] and set(group.tolist()) == {0}
    wf = Workflow.from_edge_list("w", [f"n{i}" for i in range(200)], [(i, i + 1) for i in range(199)], actions)
    assert len({id(p) for p in wf.call_plans}) == 1 and wf.call_plans[0].nothing
    with Engine(2) as engine:
        result = engine.run(wf)
    assert result.ok and result.output("n7") == 7


def test_an_annotated_required_parameter_still_decides_per_function():
    """A required parameter annotated NodeContext asks for the context: such functions
    are not grouped by code object, and each gets the context."""
    actions = _annotated_context_closures(20)
    first, _ = group_by(actions, signatures=True)
    assert first.tolist() == list(range(20))
    wf = Workflow.from_edge_list("w", [f"n{i}" for i in range(20)], [], actions)
    assert all(plan.context_only for plan in wf.call_plans)
    with Engine(2) as engine:
        result = engine.run(wf)
    assert result.ok and [result.output(f"n{i}") for i in range(20)] == list(range(20))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["plain", "annotated", "ctx-annotated", "ctx-named", "default"]),
                min_size=1, max_size=12))
def test_grouped_signatures_agree_with_reading_each_function(kinds):
    from flow_orchestrator._calling import signature_of

    def make(kind: str, i: int):
        if kind == "plain":
            return lambda: i
        if kind == "annotated":
            def annotated() -> int:
                return i
            return annotated
        if kind == "ctx-annotated":
            def takes(c: NodeContext) -> int:
                return i
            return takes
        if kind == "ctx-named":
            return lambda ctx: i
        return lambda x=i: x

    actions = [make(kind, i) for i, kind in enumerate(kinds)]
    first, group = group_by(actions, signatures=True)
    for i, action in enumerate(actions):
        assert signature_of(action) == signature_of(actions[first[group[i]]])
