"""The engine's semantics: data flow, action signatures, WorkflowData, RunResult, failures.

Every run here ends with the same invariant checked: each node is in a terminal status.
Tests never assert on wall time; where threads must meet they use events and barriers
(with generous timeouts, so that a bug fails a test instead of hanging the suite).
"""

from __future__ import annotations

import functools
import math
import threading
import types

import numpy as np
import pytest

from flow_orchestrator import errors
from flow_orchestrator.data import DataTypeError, MissingDataError, WorkflowData
from flow_orchestrator.engine import Engine, NodeContext, RunResult
from flow_orchestrator.errors import (
    DefinitionError,
    FlowError,
    NodeCancelledError,
    NodeFailedError,
    RunCancelledError,
    UnknownNodeError,
    WorkflowFailedError,
)
from flow_orchestrator.status import NodeStatus, RunStatus
from flow_orchestrator.workflow import Workflow, WorkflowBuilder

from engine_helpers import StartLog, assert_terminal

WAIT = 10.0  # seconds: upper bound for any event a test waits on (never reached when correct)



@pytest.fixture(params=["threads", "serial"])
def engine(request):
    eng = Engine(4) if request.param == "threads" else Engine(1, executor="serial")
    yield eng
    eng.close()


@pytest.fixture
def threaded():
    eng = Engine(4)
    yield eng
    eng.close()


# -- data flow -------------------------------------------------------------------------------


def test_outputs_flow_to_dependents(engine):
    seen = {}

    def b(ctx):
        seen["b"] = dict(ctx.inputs)
        return ctx.input("a") + 1

    def c(ctx):
        return ctx.input("a") * 10

    def d(ctx):
        seen["d"] = dict(ctx.inputs)
        return ctx.input("b") + ctx.input("c")

    def a(ctx):
        seen["a"] = dict(ctx.inputs)
        return 4

    wf = (WorkflowBuilder("diamond").add("a", a).add("b", b, depends_on="a")
          .add("c", c, depends_on="a").add("d", d, depends_on=["b", "c"]).build())
    result = engine.run(wf)
    assert result.ok and result.status is RunStatus.COMPLETED
    assert result.outputs == {"a": 4, "b": 5, "c": 40, "d": 45}
    assert seen == {"a": {}, "b": {"a": 4}, "d": {"b": 5, "c": 40}}
    assert_terminal(result)


def test_input_of_a_non_dependency_fails_the_node(engine):
    def b(ctx):
        return ctx.input("c")  # c is not a dependency of b

    wf = (WorkflowBuilder("w").add("a", lambda: 1).add("c", lambda: 2)
          .add("b", b, depends_on="a").build())
    result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("b") is NodeStatus.FAILED
    assert isinstance(result.error("b"), UnknownNodeError)
    assert "'c'" in str(result.error("b"))
    assert_terminal(result)


def test_outputs_flow_along_a_long_chain(engine):
    wf = Workflow.from_arrays("chain", [f"n{i}" for i in range(200)], np.arange(199), np.arange(1, 200),
                              lambda ctx: sum(ctx.inputs.values(), 0) + 1)
    result = engine.run(wf)
    assert result.output("n199") == 200
    assert [result.output(i) for i in range(200)] == list(range(1, 201))


# -- action signatures -------------------------------------------------------------------------


class Greeter:
    def __init__(self, word):
        self.word = word

    def with_ctx(self, ctx):
        return (self.word, ctx.node)

    def without_ctx(self):
        return self.word

    def __call__(self, ctx):
        return ("called", ctx.node)

    @staticmethod
    def static():
        return "static"

    @classmethod
    def klass(cls, ctx):
        return (cls.__name__, ctx.node)


def _two(prefix, ctx):
    return (prefix, ctx.node)


def _none_needed(x, y):
    return x + y


def test_action_signatures(engine):
    received = {}

    def zero():
        return "zero"

    def one(ctx):
        received["one"] = ctx
        return ctx.node

    def optional(ctx=None):
        received["optional"] = ctx  # a parameter with a default is never given anything
        return ctx is not None

    def star(*args):
        return len(args)

    def kwargs_only(**kwargs):
        return sorted(kwargs)

    def positional_only(ctx, /):
        return ctx.node

    def with_kw_default(ctx, *, scale=3):
        return scale

    g = Greeter("hi")
    b = WorkflowBuilder("sigs")
    b.add("zero", zero).add("one", one).add("optional", optional).add("star", star)
    b.add("kwargs_only", kwargs_only).add("positional_only", positional_only)
    b.add("kw_default", with_kw_default)
    b.add("lambda0", lambda: "l0").add("lambda1", lambda ctx: ctx.node)
    b.add("partial_ctx", functools.partial(_two, "p"))
    b.add("partial_full", functools.partial(_none_needed, 1, 2))
    b.add("bound_ctx", g.with_ctx).add("bound_plain", g.without_ctx)
    b.add("instance", g).add("static", Greeter.static).add("classmethod", Greeter.klass)
    b.add("builtin_type", dict)
    result = engine.run(b.build())
    assert result.outputs == {
        "zero": "zero", "one": "one", "optional": False, "star": 1, "kwargs_only": [],
        "positional_only": "positional_only", "kw_default": 3, "lambda0": "l0", "lambda1": "lambda1",
        "partial_ctx": ("p", "partial_ctx"), "partial_full": 3, "bound_ctx": ("hi", "bound_ctx"),
        "bound_plain": "hi", "instance": ("called", "instance"), "static": "static",
        "classmethod": ("Greeter", "classmethod"), "builtin_type": {},
    }
    assert isinstance(received["one"], NodeContext) and received["optional"] is None


def _kw_only_required(ctx, *, required):
    return None


@pytest.mark.parametrize("action", [
    lambda a, b: None,
    _none_needed,
    functools.partial(_none_needed),
    _kw_only_required,
    Greeter.__init__,  # (self, word)
], ids=["lambda", "function", "partial", "keyword-only", "unbound-method"])
def test_actions_with_two_required_parameters_are_rejected_naming_the_node(threaded, action):
    ran = StartLog()
    builder = WorkflowBuilder("w").add("fine", lambda: ran("fine")).add("bad_node", action, depends_on="fine")
    with pytest.raises(DefinitionError, match="bad_node"):
        builder.build()  # refused when the workflow is built, before any run
    assert ran.order == []


def test_context_attributes(engine):
    data = WorkflowData(x=1)
    seen = {}

    def probe(ctx):
        seen["plain"] = dict(node=ctx.node, node_id=ctx.node_id, attempt=ctx.attempt, run_id=ctx.run_id,
                             workflow=ctx.workflow, data=ctx.data, deadline=ctx.deadline,
                             remaining=ctx.remaining(), cancelled=ctx.cancelled,
                             waited=ctx.wait(0.001))
        ctx.raise_if_cancelled()  # not cancelled: no-op
        assert "probe" in repr(ctx)
        return "ok"

    def timed(ctx):
        import time
        now = time.monotonic()
        seen["timed"] = (ctx.deadline, now, ctx.remaining())
        return "ok"

    wf = WorkflowBuilder("ctx").add("probe", probe).add("timed", timed, depends_on="probe", timeout=30.0).build()
    result = engine.run(wf, data=data, run_id="my-run")
    assert result.run_id == "my-run"
    assert seen["plain"] == dict(node="probe", node_id=0, attempt=1, run_id="my-run", workflow=wf,
                                 data=data, deadline=None, remaining=None, cancelled=False, waited=False)
    assert seen["plain"]["data"] is data
    deadline, now, remaining = seen["timed"]
    assert 0 < deadline - now <= 30.0
    assert 0 < remaining <= 30.0
    assert_terminal(result)


def test_middleware_wraps_actions_in_order(engine):
    calls = []

    def outer(action):
        def run(ctx):
            calls.append(("outer", ctx.node))
            return ("outer", action(ctx))
        return run

    def inner(action):
        def run(ctx):
            calls.append(("inner", ctx.node))
            return ("inner", action(ctx))
        return run

    wf = (WorkflowBuilder("mw").add("plain", lambda: 1, middleware=(outer, inner))
          .add("ctx", lambda ctx: ctx.input("plain"), depends_on="plain", middleware=outer).build())
    result = engine.run(wf)
    assert result.output("plain") == ("outer", ("inner", 1))
    assert result.output("ctx") == ("outer", ("outer", ("inner", 1)))
    assert calls == [("outer", "plain"), ("inner", "plain"), ("outer", "ctx")]


# -- WorkflowData -------------------------------------------------------------------------------


def test_workflow_data_is_shared_by_the_nodes_and_the_caller(engine):
    data = WorkflowData(seed=2)

    def produce(ctx):
        ctx.data["produced"] = ctx.data.get_int("seed") * 21

    def consume(ctx):
        return ctx.data["produced"]

    wf = WorkflowBuilder("data").add("produce", produce).add("consume", consume, depends_on="produce").build()
    result = engine.run(wf, data=data)
    assert result.output("consume") == 42
    assert data["produced"] == 42


def test_a_mapping_given_as_data_is_copied(engine):
    initial = {"k": 1}

    def write(ctx):
        assert isinstance(ctx.data, WorkflowData)
        ctx.data["k"] = 2
        ctx.data["new"] = 3
        return ctx.data.snapshot()

    result = engine.run(WorkflowBuilder("w").add("write", write).build(), data=initial)
    assert result.output("write") == {"k": 2, "new": 3}
    assert initial == {"k": 1}


def test_workflow_data_increment_from_many_nodes(threaded):
    data = WorkflowData()
    nodes, per_node = 48, 200

    def bump(ctx):
        for _ in range(per_node):
            ctx.data.increment("count")
            ctx.data.update_with("items", lambda xs: xs + [ctx.node], default=[])
        ctx.data.increment("float", 0.5)

    wf = Workflow.from_arrays("bumps", [f"n{i}" for i in range(nodes)], [], [], bump)
    threaded.run(wf, data=data)
    assert data["count"] == nodes * per_node
    assert data.get_float("float") == nodes * 0.5
    items = data.get_list("items")
    assert len(items) == nodes * per_node
    assert all(items.count(f"n{i}") == per_node for i in range(nodes))


def test_workflow_data_atomic_operations_under_many_threads():
    data = WorkflowData()
    threads, rounds = 16, 500
    barrier = threading.Barrier(threads)
    firsts = []

    def worker(i):
        barrier.wait(WAIT)
        firsts.append(data.setdefault("first", i))
        for _ in range(rounds):
            data.increment("n")
            data.update_with("pair", lambda p: (p[0] + 1, p[1] + 1), default=(0, 0))
            data[f"own-{i}"] = data.get(f"own-{i}", 0) + 1  # a key only this thread writes
            snap = data.snapshot()
            assert snap["pair"][0] == snap["pair"][1]

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(WAIT)
    assert data["n"] == threads * rounds
    assert data["pair"] == (threads * rounds, threads * rounds)
    assert all(data[f"own-{i}"] == rounds for i in range(threads))
    assert len(set(firsts)) == 1 and len(firsts) == threads  # setdefault stored exactly once


def test_workflow_data_typed_getters():
    data = WorkflowData({"i": 3, "f": 2.5, "s": "x", "b": True, "l": [1], "d": {"k": 1}}, extra=7)
    assert data.get_int("i") == 3 and data.get_int("extra") == 7
    assert data.get_float("f") == 2.5
    assert data.get_float("i") == 3.0 and type(data.get_float("i")) is float
    assert data.get_str("s") == "x" and data.get_bool("b") is True
    assert data.get_list("l") == [1] and data.get_dict("d") == {"k": 1}
    assert data.get_typed("i", (int, str)) == 3
    for getter, key in [("get_int", "s"), ("get_int", "b"), ("get_float", "b"), ("get_float", "s"),
                        ("get_str", "i"), ("get_bool", "i"), ("get_list", "d"), ("get_dict", "l")]:
        with pytest.raises(DataTypeError, match=repr(key)) as info:
            getattr(data, getter)(key)
        assert isinstance(info.value, TypeError) and isinstance(info.value, FlowError)
    with pytest.raises(MissingDataError) as info:
        data.get_int("missing")
    assert isinstance(info.value, KeyError) and "missing" in str(info.value)
    with pytest.raises(MissingDataError):
        data["missing"]
    with pytest.raises(MissingDataError):
        del data["missing"]
    with pytest.raises(MissingDataError):
        data.update_with("missing", lambda v: v)
    assert data.get_int("missing", 5) == 5 and data.get_str("missing", None) is None
    assert data.get("missing", "dflt") == "dflt" and "i" in data and "missing" not in data
    assert len(data) == 7 and sorted(data) == sorted(["i", "f", "s", "b", "l", "d", "extra"])
    assert "WorkflowData" in repr(data)


def test_get_float_returns_a_float_even_when_the_value_equals_the_default():
    # The value is present, so the default must not matter: "the number as a float".
    data = WorkflowData(n=3, z=0)
    assert type(data.get_float("n", 3)) is float
    assert type(data.get_float("z", 0)) is float


def test_workflow_data_snapshot_and_restore_are_deep():
    data = WorkflowData(nested={"xs": [1, 2]})
    snap = data.snapshot()
    snap["nested"]["xs"].append(3)
    assert data["nested"] == {"xs": [1, 2]}
    data["nested"]["xs"].append(9)
    assert snap["nested"]["xs"] == [1, 2, 3]
    source = {"nested": {"xs": [0]}, "other": 1}
    data.restore(source)
    source["nested"]["xs"].append(1)
    assert data.snapshot() == {"nested": {"xs": [0]}, "other": 1}
    assert "extra" not in data


# -- RunResult ------------------------------------------------------------------------------


def test_run_result_of_a_successful_run(engine):
    wf = (WorkflowBuilder("ok").add("a", lambda: "A").add("b", lambda ctx: ctx.input("a") * 2, depends_on="a")
          .add("c", lambda: None).build())
    result = engine.run(wf)
    assert isinstance(result, RunResult) and result.ok and result.status is RunStatus.COMPLETED
    assert repr(result).startswith("<RunResult 'ok'")
    assert result.status_of("b") is NodeStatus.COMPLETED and result.status_of(1) is NodeStatus.COMPLETED
    assert result.output("b") == "AA" and result.output("c") is None and result.output("c", 5) is None
    assert result.outputs == {"a": "A", "b": "AA", "c": None}
    assert result.errors == {} and result.error("a") is None and result.failures() == []
    assert result.nodes(NodeStatus.COMPLETED) == ["a", "b", "c"]
    assert result.nodes(NodeStatus.FAILED) == [] and result.nodes(int(NodeStatus.SKIPPED)) == []
    counts = result.counts()
    assert set(counts) == set(NodeStatus) and counts[NodeStatus.COMPLETED] == 3 and sum(counts.values()) == 3
    assert result.attempts.tolist() == [1, 1, 1]
    assert np.isfinite(result.started).all() and np.isfinite(result.ended).all()
    assert (result.ended >= result.started).all() and (result.started >= 0).all()
    assert (result.durations() >= 0).all()
    assert result.started[1] >= result.ended[0]  # b started after a ended
    assert result.wall_seconds >= 0
    result.raise_for_status()  # no-op
    text = result.summary()
    assert "'ok'" in text and "completed" in text and "✗" not in text
    for arr in (result.statuses, result.attempts, result.started, result.ended):
        with pytest.raises(ValueError):
            arr[0] = 0  # read-only
    for bad in ("zz", 3, -1, None, True):
        with pytest.raises(UnknownNodeError):
            result.status_of(bad)


def test_run_result_of_a_failed_run(engine):
    boom = ValueError("boom")

    def fail():
        raise boom

    wf = (WorkflowBuilder("bad").add("a", lambda: 1).add("fail", fail, depends_on="a")
          .add("after", lambda: 2, depends_on="fail").add("after2", lambda: 3, depends_on="after").build())
    result = engine.run(wf, raise_on_failure=False)
    assert not result.ok and result.status is RunStatus.FAILED
    assert [result.status_of(n) for n in ("a", "fail", "after", "after2")] == [
        NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.SKIPPED]
    assert result.output("fail", "dflt") == "dflt" and result.output("after") is None
    assert result.outputs == {"a": 1}
    assert result.errors == {"fail": boom} and result.error("fail") is boom and result.error("after") is None
    assert result.nodes(NodeStatus.SKIPPED) == ["after", "after2"]
    assert result.counts()[NodeStatus.SKIPPED] == 2 and result.counts()[NodeStatus.FAILED] == 1
    assert result.attempts.tolist() == [1, 1, 0, 0]
    assert np.isnan(result.started[2:]).all() and np.isnan(result.ended[2:]).all()
    assert np.isnan(result.durations()[2:]).all() and np.isfinite(result.durations()[:2]).all()
    (failure,) = result.failures()
    assert isinstance(failure, NodeFailedError) and failure.node == "fail" and failure.error is boom
    assert failure.__cause__ is boom and failure.attempts == 1 and failure.status == "failed"
    text = result.summary()
    assert "fail" in text and "ValueError" in text and "boom" in text
    with pytest.raises(WorkflowFailedError) as info:
        result.raise_for_status()
    assert info.value.result is result
    assert_terminal(result)


# -- fail-fast -------------------------------------------------------------------------------------


def _fail_fast_workflow(log: StartLog, boom: BaseException, chain: int = 10) -> Workflow:
    """``bad`` fails once ``x0`` is running; ``x0`` keeps running until the run is aborted;
    the rest of the x-chain must then never start."""
    x0_running = threading.Event()

    def bad():
        log("bad")
        assert x0_running.wait(WAIT), "x0 never started"
        raise boom

    def x0(ctx):
        log("x0")
        x0_running.set()
        for _ in range(int(WAIT / 0.005)):
            if ctx.cancelled:  # the run was aborted by bad's failure
                return "x0 done"
            ctx.wait(0.005)
        return "x0 gave up waiting"

    b = WorkflowBuilder("failfast").add("bad", bad).add("x0", x0)
    b.add("dep", lambda: log("dep"), depends_on="bad")
    b.add("dep2", lambda: log("dep2"), depends_on=["dep", "x0"])
    for i in range(1, chain):
        b.add(f"x{i}", functools.partial(log, f"x{i}"), depends_on=f"x{i - 1}")
    return b.build()


def test_fail_fast_stops_starting_nodes(threaded):
    log = StartLog()
    boom = RuntimeError("bad node")
    wf = _fail_fast_workflow(log, boom)
    with pytest.raises(WorkflowFailedError) as info:
        threaded.run(wf)
    assert log.started == {"bad", "x0"}
    result = info.value.result
    assert isinstance(result, RunResult) and result.status is RunStatus.FAILED
    assert result.status_of("bad") is NodeStatus.FAILED
    assert result.status_of("x0") is NodeStatus.COMPLETED and result.output("x0") == "x0 done"
    assert result.nodes(NodeStatus.SKIPPED) == ["dep", "dep2"]
    assert result.nodes(NodeStatus.CANCELLED) == [f"x{i}" for i in range(1, 10)]
    assert np.isnan(result.started[[wf.node_id(f"x{i}") for i in range(1, 10)]]).all()
    assert_terminal(result)


def test_workflow_failed_error_is_an_exception_group_of_node_failures(threaded):
    log = StartLog()
    boom = RuntimeError("bad node")
    with pytest.raises(WorkflowFailedError) as info:
        threaded.run(_fail_fast_workflow(log, boom))
    exc = info.value
    assert isinstance(exc, ExceptionGroup) and isinstance(exc, FlowError)
    assert len(exc.exceptions) == 1
    (failure,) = exc.exceptions
    assert isinstance(failure, NodeFailedError) and failure.node == "bad"
    assert failure.__cause__ is boom and "bad" in str(failure) and "RuntimeError" in str(failure)
    assert "failfast" in str(exc)
    matched, rest = exc.split(NodeFailedError)
    assert rest is None and isinstance(matched, WorkflowFailedError) and matched.result is exc.result
    caught = []
    try:
        raise exc
    except* NodeFailedError as group:
        caught.extend(group.exceptions)
    assert [f.node for f in caught] == ["bad"]


def test_fail_fast_in_serial_mode_cancels_everything_not_yet_run():
    log = StartLog()

    def bad():
        log("bad")
        raise KeyError("k")

    b = WorkflowBuilder("serial-ff").add("first", lambda: log("first")).add("bad", bad, depends_on="first")
    b.add("dep", lambda: log("dep"), depends_on="bad")
    for i in range(5):
        b.add(f"late{i}", functools.partial(log, f"late{i}"), depends_on="bad" if i == 0 else "first")
    with Engine(1, executor="serial") as eng:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(b.build())
    result = info.value.result
    for name in result.workflow.names:
        status = result.status_of(name)
        if name in log.started:
            assert status in (NodeStatus.COMPLETED, NodeStatus.FAILED), name
        else:
            assert status in (NodeStatus.SKIPPED, NodeStatus.CANCELLED), name
            assert math.isnan(result.started[result.workflow.node_id(name)])
    assert set(result.nodes(NodeStatus.SKIPPED)) == {"dep", "late0"}
    assert result.status_of("bad") is NodeStatus.FAILED
    assert_terminal(result)


def test_concurrent_failures_are_all_reported():
    barrier = threading.Barrier(2)
    errs = {"f1": ValueError("one"), "f2": TypeError("two")}

    def fail(name):
        barrier.wait(WAIT)  # both are running before either fails
        raise errs[name]

    wf = (WorkflowBuilder("two").add("f1", functools.partial(fail, "f1")).add("f2", functools.partial(fail, "f2"))
          .add("after", lambda: None, depends_on=["f1"]).build())
    with Engine(2) as eng:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(wf)
    exc = info.value
    assert sorted(f.node for f in exc.exceptions) == ["f1", "f2"]
    assert {f.node: f.__cause__ for f in exc.exceptions} == errs
    assert exc.result.nodes(NodeStatus.FAILED) == ["f1", "f2"]
    assert exc.result.status_of("after") is NodeStatus.SKIPPED
    assert "f1" in exc.result.summary() and "f2" in exc.result.summary()


# -- continue on error --------------------------------------------------------------------------


def _branching_workflow(log: StartLog, *, node_coe: bool) -> Workflow:
    """Two failing nodes with descendants, and independent branches."""
    def fail(name):
        log(name)
        raise ValueError(name)

    b = WorkflowBuilder("branches")
    b.add("root", functools.partial(log, "root"))
    b.add("bad1", functools.partial(fail, "bad1"), depends_on="root", continue_on_error=node_coe)
    b.add("bad2", functools.partial(fail, "bad2"), continue_on_error=node_coe)
    b.add("d1", functools.partial(log, "d1"), depends_on="bad1")
    b.add("d2", functools.partial(log, "d2"), depends_on=["d1", "ok1"])
    b.add("d3", functools.partial(log, "d3"), depends_on="bad2")
    for i in range(6):
        b.add(f"ok{i}", functools.partial(log, f"ok{i}"), depends_on="root" if i == 0 else f"ok{i - 1}")
    b.add("join", functools.partial(log, "join"), depends_on=["ok5", "root"])
    return b.build()


@pytest.mark.parametrize("how", ["node", "run", "engine"])
def test_continue_on_error_keeps_independent_branches_running(how):
    log = StartLog()
    wf = _branching_workflow(log, node_coe=how == "node")
    with Engine(3, continue_on_error=how == "engine") as eng:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(wf, continue_on_error=True if how == "run" else None)
    result = info.value.result
    assert result.status is RunStatus.FAILED
    assert result.nodes(NodeStatus.FAILED) == ["bad1", "bad2"]
    assert set(result.nodes(NodeStatus.SKIPPED)) == set(wf.descendants(["bad1", "bad2"])) == {"d1", "d2", "d3"}
    assert set(result.nodes(NodeStatus.COMPLETED)) == {"root", "join"} | {f"ok{i}" for i in range(6)}
    assert result.nodes(NodeStatus.CANCELLED) == []
    assert sorted(f.node for f in info.value.exceptions) == ["bad1", "bad2"]
    assert log.started.isdisjoint({"d1", "d2", "d3"})
    assert_terminal(result)


def test_run_option_overrides_the_engine_default():
    log = StartLog()

    def bad():
        log("bad")
        raise ValueError

    b = WorkflowBuilder("w").add("bad", bad)
    for i in range(5):
        b.add(f"n{i}", functools.partial(log, f"n{i}"), depends_on="bad" if i == 0 else f"n{i - 1}")
    b.add("other", functools.partial(log, "other"), depends_on="bad")
    wf = b.build()
    with Engine(1, continue_on_error=True) as eng:
        result = eng.run(wf, continue_on_error=False, raise_on_failure=False)
    assert result.status is RunStatus.FAILED
    assert set(result.nodes(NodeStatus.SKIPPED)) == {f"n{i}" for i in range(5)} | {"other"}


def test_a_failure_without_continue_on_error_aborts_even_if_others_continue():
    log = StartLog()

    def tolerated():
        log("tolerated")
        raise ValueError("tolerated")

    def fatal(ctx):
        log("fatal")
        raise ValueError("fatal")

    b = WorkflowBuilder("mixed").add("tolerated", tolerated, continue_on_error=True)
    b.add("fatal", fatal, depends_on="tolerated_sibling")
    b.add("tolerated_sibling", functools.partial(log, "tolerated_sibling"))
    b.add("later", functools.partial(log, "later"), depends_on="fatal")
    for i in range(5):
        b.add(f"tail{i}", functools.partial(log, f"tail{i}"), depends_on="fatal" if i == 0 else f"tail{i - 1}")
    with Engine(1) as eng:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(b.build())
    result = info.value.result
    assert {f.node for f in info.value.exceptions} <= {"tolerated", "fatal"}
    assert result.status_of("fatal") is NodeStatus.FAILED
    assert set(result.nodes(NodeStatus.SKIPPED)) == {"later"} | {f"tail{i}" for i in range(5)}
    assert_terminal(result)


# -- odd actions --------------------------------------------------------------------------------


def test_odd_return_values_are_just_outputs(engine):
    big = bytes(32 * 1024 * 1024)

    def gen():
        yield 1
        raise AssertionError("the engine must not iterate a generator output")

    exc_value = ValueError("returned, not raised")

    wf = (WorkflowBuilder("odd")
          .add("none", lambda: None)
          .add("gen", gen)
          .add("big", lambda: big)
          .add("exc", lambda: exc_value)
          .add("cancel_exc", lambda: NodeCancelledError("returned"))
          .add("klass", lambda: KeyboardInterrupt)
          .add("consumer", lambda ctx: {k: type(v).__name__ for k, v in ctx.inputs.items()},
               depends_on=["none", "gen", "big", "exc", "cancel_exc", "klass"])
          .build())
    result = engine.run(wf)
    assert result.ok and result.errors == {}
    assert result.output("none") is None
    assert isinstance(result.output("gen"), types.GeneratorType)
    assert result.output("big") is big
    assert result.output("exc") is exc_value
    assert isinstance(result.output("cancel_exc"), NodeCancelledError)
    assert result.output("klass") is KeyboardInterrupt
    assert result.output("consumer") == {"none": "NoneType", "gen": "generator", "big": "bytes",
                                         "exc": "ValueError", "cancel_exc": "NodeCancelledError",
                                         "klass": "type"}


def test_an_action_raising_node_cancelled_error_ends_cancelled(engine):
    def cancel_me(ctx):
        raise NodeCancelledError("I give up")

    wf = (WorkflowBuilder("w").add("cancel_me", cancel_me).add("dep", lambda: 1, depends_on="cancel_me")
          .build())
    result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("cancel_me") is NodeStatus.CANCELLED
    assert isinstance(result.error("cancel_me"), NodeCancelledError)
    assert result.status_of("dep") in (NodeStatus.SKIPPED, NodeStatus.CANCELLED)
    assert result.status is not RunStatus.COMPLETED
    with pytest.raises((RunCancelledError, WorkflowFailedError)):
        result.raise_for_status()
    assert_terminal(result)


@pytest.mark.parametrize("exc_type", [ValueError, Exception, ArithmeticError, errors.FlowError, AssertionError,
                                      StopIteration, GeneratorExit])
def test_any_exception_fails_the_node(engine, exc_type):
    def bad():
        raise exc_type("x")

    wf = WorkflowBuilder("w").add("bad", bad).add("dep", lambda: 1, depends_on="bad").build()
    result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("bad") is NodeStatus.FAILED and type(result.error("bad")) is exc_type
    assert result.status_of("dep") is NodeStatus.SKIPPED
    assert_terminal(result)


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("this exception cannot be printed")


def test_an_exception_that_cannot_be_printed_still_fails_the_run_normally(engine):
    def bad():
        raise UnprintableError()

    wf = WorkflowBuilder("w").add("bad", bad).add("dep", lambda: 1, depends_on="bad").build()
    result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("bad") is NodeStatus.FAILED and isinstance(result.error("bad"), UnprintableError)
    assert "bad" in result.summary()
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(wf)
    assert isinstance(info.value.exceptions[0].__cause__, UnprintableError)


def test_a_wide_workflow_completes_with_every_node_run_once(threaded):
    counts = WorkflowData()
    n = 2000
    wf = Workflow.from_arrays("wide", [f"n{i}" for i in range(n)], np.zeros(n - 1, dtype=np.int32),
                              np.arange(1, n, dtype=np.int32), lambda ctx: ctx.data.increment(ctx.node))
    result = threaded.run(wf, data=counts)
    assert result.ok and result.counts()[NodeStatus.COMPLETED] == n
    assert all(counts[f"n{i}"] == 1 for i in range(n))


def test_runs_of_a_workflow_reuse_one_pooled_arena():
    wf = WorkflowBuilder("pooled").add("a", lambda: 1).add("b", lambda ctx: ctx.input("a") + 1, depends_on="a").build()
    with Engine(1, executor="serial") as engine:
        compiled = engine.compile(wf)
        assert compiled.pool_size() == 0
        for _ in range(5):
            assert engine.run(wf).output("b") == 2
            assert compiled.pool_size() == 1  # the finished arena went back, and was taken again
