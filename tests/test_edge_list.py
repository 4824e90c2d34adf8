"""Edges in as pairs: CSRGraph.from_edge_list and Workflow.from_edge_list agree with
from_edges / from_arrays (and with the standard library's graphlib as an oracle) on
lists, tuples and arrays, with the same errors; the C grouping helpers that make
building and compiling cost per distinct thing."""

from __future__ import annotations

import graphlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags, digraphs

from flow_orchestrator import Engine, Workflow, errors
from flow_orchestrator._ext import first_not_callable, group_by, take
from flow_orchestrator.dag import CSRGraph, Interner


def forms(src: np.ndarray, dst: np.ndarray) -> dict[str, object]:
    """The same edges as every input form from_edge_list takes (narrow dtypes only
    where they hold the values)."""
    pairs = list(zip(src.tolist(), dst.tolist()))
    out: dict[str, object] = {
        "list of tuples": pairs,
        "tuple of tuples": tuple(pairs),
        "list of lists": [list(p) for p in pairs],
        "int64 array": np.array(pairs, dtype=np.int64).reshape(-1, 2),
        "generator": (p for p in pairs),
        "numpy int64s": [(np.int64(a), np.int64(b)) for a, b in pairs],
    }
    if all(0 <= v < 2 ** 15 for p in pairs for v in p):
        out["int32 array"] = np.array(pairs, dtype=np.int32).reshape(-1, 2)
        out["uint16 array"] = np.array(pairs, dtype=np.uint16).reshape(-1, 2)
        out["numpy int16s"] = [(np.int16(a), np.int16(b)) for a, b in pairs]
    return out


def same_graph(a: CSRGraph, b: CSRGraph) -> None:
    assert a.num_nodes == b.num_nodes and a.num_edges == b.num_edges
    assert a.succ_indptr.tolist() == b.succ_indptr.tolist()
    assert a.succ_indices.tolist() == b.succ_indices.tolist()
    assert a.topological_order().tolist() == b.topological_order().tolist()


@settings(max_examples=60, deadline=None)
@given(dags())
def test_from_edge_list_agrees_with_from_edges_and_graphlib(graph):
    n, src, dst = graph
    expected = CSRGraph.from_edges(n, src, dst)
    oracle = graphlib.TopologicalSorter({v: [] for v in range(n)})
    for s, d in zip(src.tolist(), dst.tolist()):
        oracle.add(d, s)
    order = list(oracle.static_order())
    for form, edges in forms(src, dst).items():
        built = CSRGraph.from_edge_list(n, edges)
        same_graph(built, expected)
        position = {v: i for i, v in enumerate(built.topological_order().tolist())}
        assert sorted(position) == sorted(order), form
        assert all(position[s] < position[d] for s, d in zip(src.tolist(), dst.tolist())), form


def error_of(fn):
    try:
        fn()
    except errors.FlowError as exc:
        return type(exc), str(exc)
    return None


@settings(max_examples=60, deadline=None)
@given(digraphs(), st.sampled_from(["none", "loop", "low", "high", "huge"]), st.data())
def test_errors_are_those_of_from_edges(graph, damage, data):
    """Cycles, self-loops and out-of-range ids: the same class and message in every form."""
    n, src, dst = graph
    src, dst = src.astype(np.int64), dst.astype(np.int64)
    if damage != "none" and len(src):
        e = data.draw(st.integers(0, len(src) - 1))
        src[e] = {"loop": dst[e], "low": -1, "high": n, "huge": 2 ** 40}[damage]
    expected = error_of(lambda: CSRGraph.from_edges(n, src, dst))
    for form, edges in forms(src, dst).items():
        assert error_of(lambda: CSRGraph.from_edge_list(n, edges)) == expected, form


@pytest.mark.parametrize(
    ("edges", "match"),
    [
        ([(0, 1, 2)], "edge 0 has 3 items"),
        ([(0,)], "edge 0 has 1 items"),
        ([(0, 1), 5], "edge 1 is 5, not a"),
        ([(0, 1), "ab"], "edge 1 is 'ab', not a"),
        ([(0.0, 1)], "edge 0: node ids must be integers, got float"),
        ([(True, 1)], "edge 0: node ids must be integers, got bool"),
        ([("0", 1)], "edge 0: node ids must be integers, got str"),
        (np.zeros((2, 3), dtype=np.int64), r"an \(m, 2\) array, got shape \(2, 3\)"),
        (np.zeros((2, 2)), "integer dtype, got float64"),
        (np.array([[0, 2 ** 40]], dtype=np.uint64), "does not fit in int32"),
        (12, "expected \\(source, target\\) pairs, got int"),
    ],
)
def test_bad_pairs_get_a_clear_library_error(edges, match):
    with pytest.raises(errors.EdgeArrayError, match=match):
        CSRGraph.from_edge_list(3, edges)


def test_from_edge_list_checks_num_nodes_and_labels_as_from_edges():
    for bad in (0, -1, "3", 2 ** 31):
        assert error_of(lambda: CSRGraph.from_edge_list(bad, [])) == error_of(lambda: CSRGraph.from_edges(bad, [], []))
    with pytest.raises(errors.EdgeArrayError, match="labels"):
        CSRGraph.from_edge_list(2, [(0, 1)], labels=["a"])
    with pytest.raises(errors.CycleError, match="'a' -> 'b' -> 'a'"):
        CSRGraph.from_edge_list(2, [(0, 1), (1, 0)], labels=["a", "b"])


def test_a_strided_array_and_parallel_edges():
    wide = np.array([[0, 9, 1], [1, 9, 2], [0, 9, 2], [0, 9, 2]], dtype=np.int32)[:, ::2]
    g = CSRGraph.from_edge_list(3, wide)
    assert g.succ_indices.tolist() == [1, 2, 2, 2] and g.in_degree().tolist() == [0, 1, 3]


@settings(max_examples=40, deadline=None)
@given(dags(max_nodes=15, max_edges=30))
def test_workflow_from_edge_list_is_from_arrays(graph):
    n, src, dst = graph
    names = [f"n{i}" for i in range(n)]
    actions = [(lambda i=i: i) for i in range(n)]
    bulk = Workflow.from_arrays("w", names, src, dst, actions)
    for edges in forms(src, dst).values():
        wf = Workflow.from_edge_list("w", names, edges, actions)
        assert wf.topological_order() == bulk.topological_order()
        assert [wf.dependencies(v) for v in names] == [bulk.dependencies(v) for v in names]
        assert wf.call_plans == bulk.call_plans
    with Engine(1) as engine:
        result = engine.run(Workflow.from_edge_list("w", names, list(zip(src.tolist(), dst.tolist())), actions))
    assert [result.outputs[v] for v in names] == list(range(n))


def test_workflow_from_edge_list_errors_name_the_workflow():
    noop = lambda: None  # noqa: E731
    with pytest.raises(errors.CycleError, match="workflow 'w'.*'a' -> 'b' -> 'a'"):
        Workflow.from_edge_list("w", ["a", "b"], [(0, 1), (1, 0)], noop)
    with pytest.raises(errors.DuplicateNodeError):
        Workflow.from_edge_list("w", ["a", "a"], [], noop)
    with pytest.raises(errors.DefinitionError, match="node 'b': action 3 is not callable"):
        Workflow.from_edge_list("w", ["a", "b"], [(0, 1)], [noop, 3])
    with pytest.raises(errors.EdgeArrayError, match="1 actions for 2 nodes"):
        Workflow.from_edge_list("w", ["a", "b"], [(0, 1)], [noop])


def test_call_plans_are_shared_by_functions_of_one_code_object():
    """Many lambdas of one loop: one signature, the same plan objects on every node;
    a parameter naming a dependency still gets a plan per node."""
    per_node = [(lambda i=i: i) for i in range(50)]
    wf = Workflow.from_edge_list("w", [f"n{i}" for i in range(50)], [(i, i + 1) for i in range(49)], per_node)
    assert len({id(p) for p in wf.call_plans}) == 1 and wf.call_plans[0].nothing
    mixed = [(lambda n0: n0), *[(lambda ctx: 1)] * 2]
    wf = Workflow.from_edge_list("w", ["n0", "n1", "n2"], [(0, 1)], [lambda: 0, mixed[0], mixed[1]])
    assert wf.call_plans[1].positional == ("n0",) and wf.call_plans[2].context_only
    with pytest.raises(errors.DefinitionError, match="node 'n2'.*parameter 'n0' names node 'n0'"):
        Workflow.from_edge_list("w", ["n0", "n1", "n2"], [(0, 1)], [lambda: 0, mixed[0], mixed[0]])


def test_group_take_and_first_not_callable():
    f, g = (lambda: 1), (lambda: 2)
    first, group = group_by([f, g, f, f, g])
    assert first.tolist() == [0, 1] and group.tolist() == [0, 1, 0, 0, 1]
    first, group = group_by([f, f, f], [0, 1, 0])
    assert first.tolist() == [0, 1] and group.tolist() == [0, 1, 0]
    first, group = group_by([f, g, f], select=[True, False, True])
    assert group.tolist() == [0, 0xFFFFFFFF, 0]
    assert group_by([f, g], signatures=True)[0].tolist() == [0, 1]  # two lambdas: two code objects
    same_code = [(lambda i=i: i) for i in range(3)]
    assert group_by([*same_code, print], signatures=True)[1].tolist() == [0, 0, 0, 1]
    assert take(["a", "b"], [1, 0xFFFFFFFF], ["x", "y"]) == ("b", "y")
    with pytest.raises(IndexError):
        take(["a"], [3])
    assert first_not_callable([f, f, None, 3]) == 2 and first_not_callable((f,)) == -1


def test_interner_table_survives_growth_and_collisions():
    names = Interner()
    for i in range(5000):
        assert names.intern(f"n{i}") == i
    assert names.ids([f"n{i}" for i in range(0, 5000, 7)]).tolist() == list(range(0, 5000, 7))
    assert names.intern_many(["n3", "new", "new"]).tolist() == [3, 5000, 5000]
    assert "new" in names and "absent" not in names and 3 not in names
    assert names.nbytes >= 8 * 2 * len(names)


class Name(str):
    """A str subclass: interned as the plain str of its characters."""

    def __hash__(self) -> int:  # a different hash: the table uses the characters' own
        return 1


def test_interner_str_subclasses_are_their_characters():
    names = Interner([Name("a"), "b"])
    assert type(names.name(0)) is str and names.id("a") == 0 and names.id(Name("b")) == 1
