"""Workflow definitions: the fluent builder, decorators, bulk arrays and node options."""

from __future__ import annotations

import graphlib
import math

import numpy as np
import pytest
from hypothesis import given

import flow_orchestrator as fo
from flow_orchestrator import errors
from flow_orchestrator.workflow import NodeOptions, Workflow, WorkflowBuilder

from strategies import dags


def noop():
    return None


def test_fluent_builder_by_name_and_by_reference():
    def extract():
        return 1

    def transform(ctx):
        return 2

    wf = (WorkflowBuilder("etl")
          .add("extract", extract)
          .add("transform", transform, depends_on=extract, retries=2, timeout=5.0)
          .add("load", noop, depends_on=["transform", "extract"], tags={"io"})
          .build())
    assert isinstance(wf, Workflow) and wf.name == "etl" and len(wf) == 3
    assert wf.topological_order() == ["extract", "transform", "load"]
    assert wf.dependencies("load") == ("transform", "extract")
    assert wf.dependents("extract") == ("transform", "load")
    assert wf.node("transform").retries == 2 and wf.node("transform").timeout == 5.0
    assert wf.node("load").tags == frozenset({"io"})
    assert wf.node("extract").options == NodeOptions()
    assert wf.roots() == ["extract"] and wf.leaves() == ["load"]
    assert wf.generations() == [["extract"], ["transform"], ["load"]]
    assert wf.ancestors("load") == ["extract", "transform"]
    assert wf.descendants(["transform"], include_self=True) == ["transform", "load"]
    assert list(wf) == ["extract", "transform", "load"] and "load" in wf and "nope" not in wf


def test_decorators_keep_functions_callable():
    flow = WorkflowBuilder("deco")

    @flow.node
    def first():
        return "first"

    @flow.node(depends_on=[first], retries=1, continue_on_error=True)
    def second(ctx):
        return ctx * 2

    @flow.node(name="third", depends_on=[second, "first"])
    def something_else():
        return 3

    assert first() == "first" and second(21) == 42 and something_else() == 3
    wf = flow.build()
    assert wf.names == ["first", "second", "third"]
    assert wf.action("second") is second
    assert wf.options("second").continue_on_error
    assert wf.dependencies("third") == ("second", "first")


def test_forward_references_by_name_are_resolved_at_build():
    wf = WorkflowBuilder("fwd").add("b", noop, depends_on="a").add("a", noop).build()
    assert wf.topological_order() == ["a", "b"]


def test_duplicate_dependencies_are_merged_in_order():
    wf = WorkflowBuilder("dups").add("a", noop).add("b", noop, depends_on=["a", "a"]).build()
    assert wf.dependencies("b") == ("a",) and wf.graph.num_edges == 1


def test_builder_errors():
    b = WorkflowBuilder("w").add("a", noop)
    with pytest.raises(errors.DuplicateNodeError, match="'a'"):
        b.add("a", noop)
    with pytest.raises(errors.SelfDependencyError, match="'x' depends on itself"):
        b.add("x", noop, depends_on="x")
    with pytest.raises(errors.DefinitionError, match="not callable"):
        b.add("y", 42)
    with pytest.raises(errors.NodeNameError):
        b.add("", noop)
    with pytest.raises(errors.NodeNameError):
        b.add(7, noop)
    with pytest.raises(errors.DefinitionError, match="unknown option"):
        b.add("z", noop, retrys=3)
    with pytest.raises(errors.DefinitionError, match="a dependency must be"):
        b.add("z", noop, depends_on=[3])
    assert len(b) == 1  # failed adds leave nothing behind


def test_self_dependency_by_reference():
    def me():
        pass

    with pytest.raises(errors.SelfDependencyError):
        WorkflowBuilder("w").add("me", me, depends_on=[me])


def test_unknown_dependencies_at_build():
    with pytest.raises(errors.UnknownNodeError, match="'b' depends on 'ghost'"):
        WorkflowBuilder("w").add("b", noop, depends_on="ghost").build()

    def never_added():
        pass

    with pytest.raises(errors.UnknownNodeError, match="never added"):
        WorkflowBuilder("w").add("b", noop, depends_on=never_added).build()


def test_ambiguous_reference_is_reported():
    b = WorkflowBuilder("w").add("a1", noop).add("a2", noop).add("c", print, depends_on=noop)
    with pytest.raises(errors.DefinitionError, match="several nodes"):
        b.build()


def test_cycle_is_reported_with_workflow_and_node_names():
    b = WorkflowBuilder("loop").add("a", noop, depends_on="c").add("b", noop, depends_on="a")
    b.add("c", noop, depends_on="b")
    with pytest.raises(errors.CycleError) as info:
        b.build()
    assert "workflow 'loop'" in str(info.value)
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert isinstance(info.value, graphlib.CycleError)


def test_empty_workflow_and_bad_names():
    with pytest.raises(errors.EmptyGraphError):
        WorkflowBuilder("empty").build()
    with pytest.raises(errors.DefinitionError):
        WorkflowBuilder("")
    with pytest.raises(errors.DefinitionError):
        WorkflowBuilder("w", defaults={"retries": 2})


@pytest.mark.parametrize(
    "fields",
    [
        {"retries": -1}, {"retries": 1.5}, {"retries": True},
        {"timeout": 0}, {"timeout": -1.0}, {"timeout": math.nan}, {"timeout": "5"},
        {"retry_delay": -0.1}, {"retry_backoff": 0.5}, {"retry_backoff": math.inf},
        {"retry_max_delay": -1}, {"middleware": [42]}, {"tags": [1]},
        {"continue_on_error": "yes"},
    ],
)
def test_invalid_options_are_rejected(fields):
    with pytest.raises(errors.DefinitionError):
        NodeOptions(**fields)
    with pytest.raises(errors.DefinitionError, match="node 'n'"):
        WorkflowBuilder("w").add("n", noop, **fields)


def test_options_defaults_override_and_interning():
    def mw(action):
        return action

    b = WorkflowBuilder("w", defaults=NodeOptions(retries=3, tags="batch"))
    b.add("a", noop).add("b", noop).add("c", noop, timeout=2.0, middleware=mw)
    wf = b.build()
    assert wf.options("a").retries == 3 and wf.options("a").tags == frozenset({"batch"})
    assert wf.options("c").timeout == 2.0 and wf.options("c").retries == 3
    assert wf.options("c").middleware == (mw,)
    assert len(wf.option_table) == 2 and wf.options("a") is wf.options("b")
    assert wf.option_index.tolist() == [0, 0, 1]


def test_retry_delays_back_off_up_to_the_cap():
    opts = NodeOptions(retries=5, retry_delay=0.5, retry_backoff=2.0, retry_max_delay=3.0)
    assert [opts.retry_delay_for(i) for i in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_workflow_is_immutable():
    wf = WorkflowBuilder("w").add("a", noop).build()
    with pytest.raises(AttributeError):
        wf.name = "x"
    with pytest.raises(ValueError):
        wf.option_index[0] = 3
    with pytest.raises(errors.FrozenInternerError):
        wf.interner.intern("b")


def test_lookups_of_unknown_nodes():
    wf = WorkflowBuilder("w").add("a", noop).build()
    for bad in ("zz", 5, -1, 1.0, None):
        with pytest.raises(errors.UnknownNodeError):
            wf.node(bad)
    with pytest.raises(errors.UnknownNodeError):
        wf.descendants(["zz"])


@given(dags())
def test_from_arrays_matches_builder(graph):
    n, src, dst = graph
    names = [f"n{i}" for i in range(n)]
    bulk = Workflow.from_arrays("bulk", names, src, dst, noop)
    builder = WorkflowBuilder("bulk")
    preds: dict[int, list[str]] = {i: [] for i in range(n)}
    for s, d in zip(src.tolist(), dst.tolist()):
        if names[s] not in preds[d]:
            preds[d].append(names[s])
    for i in range(n):
        builder.add(names[i], noop, depends_on=preds[i])
    built = builder.build()
    position = {name: i for i, name in enumerate(bulk.topological_order())}
    assert all(position[names[s]] < position[names[d]] for s, d in zip(src.tolist(), dst.tolist()))
    assert bulk.generations() == built.generations()
    assert set(bulk.topological_order()) == set(built.topological_order())


def test_from_arrays_errors():
    with pytest.raises(errors.DuplicateNodeError):
        Workflow.from_arrays("w", ["a", "a"], [0], [1], noop)
    with pytest.raises(errors.EmptyGraphError):
        Workflow.from_arrays("w", [], [], [], noop)
    with pytest.raises(errors.EdgeArrayError):
        Workflow.from_arrays("w", ["a", "b"], [0], [1], [noop])
    with pytest.raises(errors.DefinitionError):
        Workflow.from_arrays("w", ["a", "b"], [0], [1], [noop, 3])
    with pytest.raises(errors.CycleError, match="workflow 'w'.*'a' -> 'b' -> 'a'|workflow 'w'.*'b' -> 'a' -> 'b'"):
        Workflow.from_arrays("w", ["a", "b"], [0, 1], [1, 0], noop)
    with pytest.raises(errors.EdgeArrayError):
        Workflow.from_arrays("w", ["a", "b"], np.array([0.0]), [1], noop)


def test_from_arrays_per_node_actions_and_dependencies():
    actions = [lambda: 0, lambda: 1, lambda: 2]
    wf = Workflow.from_arrays("w", ["a", "b", "c"], [0, 0], [1, 2], actions)
    assert wf.action("c") is actions[2]
    assert wf.dependencies("b") == ("a",)
    assert fo.Workflow is Workflow
