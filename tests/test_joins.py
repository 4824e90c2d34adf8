"""Join rules (``trigger=``) and branches: who runs, who is skipped and why."""

from __future__ import annotations

import threading

import pytest

import flow_orchestrator as fo
from flow_orchestrator import _ext
from flow_orchestrator.errors import BranchError, DefinitionError
from flow_orchestrator.state import RunState
from flow_orchestrator.status import JOIN_RULES, Join, SkipReason, Trigger, join_rule
from flow_orchestrator.stores import SqliteStore

from engine_helpers import assert_terminal


@pytest.fixture(params=["threads", "serial"])
def engine(request):
    with fo.Engine(3, executor=None if request.param == "threads" else "serial") as e:
        yield e


def statuses(result):
    return {n: str(result.status_of(n)) for n in result.workflow.names}


def boom():
    raise ValueError("boom")


# -- the table ------------------------------------------------------------------------------


def test_the_core_holds_the_same_join_rules():
    assert _ext.join_table() == tuple(tuple((int(a), int(b)) for a, b in JOIN_RULES[t]) for t in Trigger)


def test_join_rules_read_as_documented():
    assert join_rule("all_success", 1, True) is Join.RUN
    assert join_rule("all_success", 1, False) is Join.WAIT
    assert join_rule("all_success", 2, False) is Join.WAIT
    assert join_rule("all_success", 2, True) is Join.SKIP_BRANCH
    assert join_rule("all_success", 6, True) is Join.SKIP_FAILED
    assert join_rule("all_success", 6, False) is Join.SKIP_FAILED
    assert join_rule("none_failed", 3, True) is Join.RUN
    assert join_rule("none_failed", 2, True) is Join.SKIP_BRANCH
    assert join_rule("none_failed", 2, False) is Join.WAIT
    assert join_rule("none_failed", 5, False) is Join.SKIP_FAILED
    assert join_rule("all_done", 4, True) is Join.RUN
    assert join_rule("all_done", 7, False) is Join.WAIT
    assert str(SkipReason.BRANCH_NOT_TAKEN) == "branch not taken"


def test_a_bad_trigger_is_a_definition_error():
    with pytest.raises(DefinitionError, match="trigger must be one of"):
        fo.WorkflowBuilder("w").add("a", lambda: 1, trigger="sometimes")
    assert fo.NodeOptions(trigger="all_done").trigger is Trigger.ALL_DONE


# -- triggers -------------------------------------------------------------------------------


def test_all_done_runs_after_a_failure_under_fail_fast(engine):
    flow = fo.WorkflowBuilder("cleanup")
    flow.add("a", boom)
    flow.add("b", lambda: 1, depends_on="a")
    flow.add("c", lambda: 2)
    seen = []
    flow.add("clean", lambda ctx: seen.append(dict(ctx.inputs)) or "cleaned", depends_on=["b", "c"],
             trigger="all_done")
    flow.add("after", lambda: 3, depends_on="clean", trigger="all_done")
    result = engine.run(flow.build(), raise_on_failure=False)
    assert_terminal(result)
    assert result.status is fo.RunStatus.FAILED
    assert statuses(result)["a"] == "failed" and statuses(result)["b"] == "skipped"
    assert result.skip_reason("b") == "dependency failed"
    assert result.output("clean") == "cleaned" and result.output("after") == 3
    assert seen[0]["b"] is None


def test_all_done_does_not_run_after_a_cancel():
    gate = threading.Event()
    flow = fo.WorkflowBuilder("cancelled")
    flow.add("slow", lambda ctx: ctx.wait(5))
    flow.add("clean", lambda: "cleaned", depends_on="slow", trigger="all_done")
    token = fo.CancellationToken()
    with fo.Engine(2) as engine:
        handle = engine.submit(flow.build(), cancel=token, raise_on_failure=False)
        token.cancel("stop")
        result = handle.result(10)
    assert result.status is fo.RunStatus.CANCELLED
    assert result.status_of("clean") is fo.NodeStatus.CANCELLED
    del gate


def test_all_done_with_continue_on_error_sees_every_outcome(engine):
    flow = fo.WorkflowBuilder("coe")
    flow.add("a", boom)
    flow.add("b", lambda: 2)
    flow.add("report", lambda a, b: (a, b), depends_on=["a", "b"], trigger="all_done")
    result = engine.run(flow.build(), raise_on_failure=False, continue_on_error=True)
    assert result.output("report") == (None, 2)
    assert result.status is fo.RunStatus.FAILED


def test_none_failed_is_skipped_when_a_dependency_failed(engine):
    flow = fo.WorkflowBuilder("nf")
    flow.add("a", boom)
    flow.add("b", lambda: 2)
    flow.add("join", lambda: 3, depends_on=["a", "b"], trigger="none_failed")
    result = engine.run(flow.build(), raise_on_failure=False, continue_on_error=True)
    assert result.status_of("join") is fo.NodeStatus.SKIPPED
    assert result.skip_reason("join") == "dependency failed"
    assert result.skip_reason("b") is None


# -- branches -------------------------------------------------------------------------------


def branchy(choice, trigger="none_failed"):
    flow = fo.WorkflowBuilder("branchy")
    flow.add("score", lambda: 7)
    flow.branch("route", lambda score: choice, depends_on="score")
    flow.add("big", lambda route: f"big after {route}", depends_on="route")
    flow.add("small", lambda: "small", depends_on="route")
    flow.add("after_small", lambda small: small + "!", depends_on="small")
    flow.add("join", lambda ctx: sorted(k for k, v in ctx.inputs.items() if v is not None),
             depends_on=["big", "after_small"], trigger=trigger)
    flow.add("tail", lambda join: join, depends_on="join")
    return flow.build()


def test_a_branch_skips_the_successors_not_taken_and_what_only_they_reach(engine):
    result = engine.run(branchy("big"))
    assert result.ok
    assert statuses(result) == {"score": "completed", "route": "completed", "big": "completed",
                                "small": "skipped", "after_small": "skipped", "join": "completed",
                                "tail": "completed"}
    assert result.skip_reason("small") == "branch not taken"
    assert result.skip_reason("after_small") == "branch not taken"
    assert result.output("big") == "big after big"
    assert result.output("join") == ["big"]


def test_an_all_success_join_after_a_branch_is_skipped(engine):
    result = engine.run(branchy("big", trigger="all_success"))
    assert result.ok  # skipped by a branch: not a failure
    assert result.skip_reason("join") == "branch not taken" and result.skip_reason("tail") == "branch not taken"


@pytest.mark.parametrize("choice, ran", [(["big", "small"], {"big", "small", "after_small"}),
                                         ([], set()), (None, set()), ("small", {"small", "after_small"})])
def test_a_branch_takes_a_list_or_nothing(engine, choice, ran):
    result = engine.run(branchy(choice))
    assert result.ok
    done = set(result.nodes(fo.NodeStatus.COMPLETED)) - {"score", "route"}
    if ran:
        assert done == ran | {"join", "tail"}
    else:  # every path skipped: the none_failed join is skipped too, by the branch
        assert done == set() and result.skip_reason("join") == "branch not taken"


@pytest.mark.parametrize("choice, message", [("nope", "chose 'nope', which is not one of its direct successors"),
                                             (3, "must return the name, or a list of names"),
                                             (["big", 4], "must return the name")])
def test_a_bad_choice_fails_the_branch(engine, choice, message):
    result = engine.run(branchy(choice), raise_on_failure=False)
    assert result.status_of("route") is fo.NodeStatus.FAILED
    assert isinstance(result.error("route"), BranchError)
    assert message in str(result.error("route"))
    assert result.skip_reason("big") == "dependency failed"
    assert_terminal(result)


def test_branch_decorators_infer_dependencies(engine):
    flow = fo.WorkflowBuilder("deco")

    @flow.node
    def size():
        return 3

    @flow.branch
    def route(size):
        return "small" if size < 5 else "large"

    @flow.node(depends_on="route")
    def small():
        return "s"

    @flow.node(depends_on="route")
    def large():
        return "l"

    @flow.node(depends_on=["small", "large"], trigger="none_failed")
    def done(ctx):
        return [v for v in ctx.inputs.values() if v is not None]

    wf = flow.build()
    assert wf.kind("route") == "branch" and wf.dependencies("route") == ("size",)
    result = engine.run(wf)
    assert result.output("done") == ["s"] and result.skip_reason("large") == "branch not taken"


def test_the_process_executor_runs_branches():
    from engine_helpers import ok
    flow = fo.WorkflowBuilder("procs")
    flow.add("a", ok)
    flow.branch("b", _choose_x, depends_on="a")
    flow.add("x", ok, depends_on="b")
    flow.add("y", ok, depends_on="b")
    with fo.Engine(2, executor="processes") as engine:
        result = engine.run(flow.build())
    assert result.status_of("x") is fo.NodeStatus.COMPLETED and result.skip_reason("y") == "branch not taken"


def _choose_x():
    return "x"


def test_a_resumed_run_keeps_the_branch_it_took(tmp_path):
    calls = []
    broken = [True]

    def route():
        calls.append("route")
        return "big"

    def big():
        calls.append("big")
        if broken[0]:
            raise ValueError("not yet")
        return "B"

    flow = fo.WorkflowBuilder("resume")
    flow.branch("route", route)
    flow.add("big", big, depends_on="route")
    flow.add("small", lambda: calls.append("small"), depends_on="route")
    flow.add("join", lambda: "J", depends_on=["big", "small"], trigger="none_failed")
    wf = flow.build()
    store = SqliteStore(tmp_path / "runs.db")
    try:
        with fo.Engine(2) as engine:
            first = engine.run(wf, store=store, run_id="r1", raise_on_failure=False)
            assert first.status is fo.RunStatus.FAILED and first.skip_reason("small") == "branch not taken"
            assert isinstance(store.load("r1"), RunState)
            broken[0] = False
            again = engine.resume(wf, "r1", store=store)
        assert again.ok and again.output("join") == "J"
        assert calls == ["route", "big", "big"]  # neither the branch nor the branch not taken ran again
        assert again.skip_reason("small") == "branch not taken"
    finally:
        store.close()
