"""The calling convention (flow_orchestrator._calling): what each parameter receives,
decided once when the workflow is built, and the signatures refused at build time."""

from __future__ import annotations

import functools

import pytest

import flow_orchestrator as fo
from flow_orchestrator._calling import CONTEXT_ONLY, NOTHING
from flow_orchestrator.context import CallPlan, plan_call, takes_context
from flow_orchestrator.errors import DefinitionError
from flow_orchestrator.stores import MemoryStore


@pytest.fixture(params=["threads", "serial"])
def engine(request):
    with fo.Engine(2, executor=None if request.param == "threads" else "serial") as eng:
        yield eng


def test_the_usual_loop_binding_keeps_its_value(engine):
    """Issue 13, item 1: ``lambda i=i`` used to be called with the context."""
    flow = fo.WorkflowBuilder("loop")
    for i in range(3):
        flow.add(f"part-{i}", lambda i=i: i * 10)
    result = engine.run(flow.build())
    assert result.outputs == {"part-0": 0, "part-1": 10, "part-2": 20}


def test_a_parameter_with_a_default_is_never_given_the_context(engine):
    def optional(ctx=None, *, limit=5):
        return (ctx, limit)

    result = engine.run(fo.WorkflowBuilder("w").add("a", optional).build())
    assert result.output("a") == (None, 5)


def test_a_one_parameter_action_named_after_its_dependency_gets_the_output(engine):
    """Issue 13, item 1's second trap: it used to get the context."""
    wf = (fo.WorkflowBuilder("w").add("extract", lambda: [1, 2, 3])
          .add("transform", lambda extract: [x * 10 for x in extract], depends_on="extract").build())
    assert engine.run(wf).output("transform") == [10, 20, 30]


def test_inputs_context_and_keywords_together(engine):
    def join(a, ctx, b, *, c, scale=2):
        return (a, b, c, ctx.node, scale)

    wf = (fo.WorkflowBuilder("w").add("a", lambda: 1).add("b", lambda: 2).add("c", lambda: 3)
          .add("join", join, depends_on=["a", "b", "c"]).build())
    assert engine.run(wf).output("join") == (1, 2, 3, "join", 2)


def test_a_context_annotation_names_the_context(engine):
    def step(extract, run: fo.NodeContext):
        return (extract, run.node)

    wf = fo.WorkflowBuilder("w").add("extract", lambda: 7).add("step", step, depends_on="extract").build()
    assert engine.run(wf).output("step") == (7, "step")


def test_the_older_convention_still_works(engine):
    def step(c):
        return c.input("extract") + 1

    wf = fo.WorkflowBuilder("w").add("extract", lambda: 7).add("step", step, depends_on="extract").build()
    assert engine.run(wf).output("step") == 8


def test_decorators_infer_dependencies_from_parameter_names(engine):
    flow = fo.WorkflowBuilder("etl")

    @flow.node
    def load(transform, ctx):  # defined before the node it names: resolved by build()
        return (sum(transform), ctx.node)

    @flow.node
    def extract():
        return [1, 2, 3]

    @flow.node
    def transform(extract):
        return [x * 10 for x in extract]

    @flow.node(depends_on=())
    def alone(c):  # explicit: no dependency, the one parameter is the context
        return c.node

    wf = flow.build()
    assert wf.dependencies("load") == ("transform",) and wf.dependencies("transform") == ("extract",)
    result = engine.run(wf)
    assert result.output("load") == (60, "load") and result.output("alone") == "alone"


@pytest.mark.parametrize("action, message", [
    (lambda a, b: None, "parameter 'a' names no dependency"),
    (lambda extract, other: None, "parameter 'other' names no dependency"),
    (lambda *, key: None, "keyword-only parameter 'key'"),
    (lambda unrelated: None, "parameter 'unrelated' names node 'unrelated', which is not a dependency"),
], ids=["two-unknown", "one-unknown", "keyword-only", "forgotten-depends-on"])
def test_unsatisfiable_signatures_are_refused_at_build_naming_node_and_parameter(action, message):
    flow = (fo.WorkflowBuilder("w").add("extract", lambda: 1).add("unrelated", lambda: 2)
            .add("bad", action, depends_on="extract"))
    with pytest.raises(DefinitionError, match="node 'bad': " + message):
        flow.build()


def test_bulk_workflows_refuse_too():
    with pytest.raises(DefinitionError, match="node 'x': parameter 'a'"):
        fo.Workflow.from_arrays("bulk", ["x", "y"], [0], [1], lambda a, b: None)


def test_plans_are_decided_once_per_action():
    assert plan_call(lambda: 1) is NOTHING and plan_call(lambda ctx: 1) is CONTEXT_ONLY
    assert plan_call(lambda i=1: i) is NOTHING
    assert plan_call(lambda x, ctx: 1, ["x"]) == CallPlan(("x", None))
    assert plan_call(functools.partial(lambda a, b: a + b, 1)) is CONTEXT_ONLY
    assert plan_call(len) is CONTEXT_ONLY  # a builtin with a signature of one parameter
    assert takes_context(lambda c: c) and not takes_context(lambda c=1: c)
    wf = fo.Workflow.from_arrays("bulk", ["a", "b", "c"], [0, 0], [1, 2], lambda ctx: 1)
    assert all(plan is CONTEXT_ONLY for plan in wf.call_plans)


def test_inputs_by_name_survive_resume(tmp_path):
    ran = []
    store = MemoryStore()

    def extract():
        ran.append("extract")
        return [1, 2]

    def transform(extract, ctx):
        ran.append("transform")
        if ctx.data.get("fail"):
            raise RuntimeError("boom")
        return sum(extract)

    wf = (fo.WorkflowBuilder("w").add("extract", extract)
          .add("transform", transform, depends_on="extract").build())
    with fo.Engine(2) as engine:
        first = engine.run(wf, store=store, run_id="r", data={"fail": True}, raise_on_failure=False)
        assert first.status_of("transform") is fo.NodeStatus.FAILED
        resumed = engine.resume(wf, "r", store=store, data={"fail": False})
    assert resumed.output("transform") == 3 and ran == ["extract", "transform", "transform"]
