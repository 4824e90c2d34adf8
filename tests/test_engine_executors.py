"""One behavioural contract, run by every executor.

The same workflows run on: the engine's own threads (``Engine(2)``), a thread pool of the
user's (``Engine(executor=ThreadPoolExecutor(3))``), the serial executor, a process pool of
the user's (``Engine(2, executor=ProcessPoolExecutor(2, mp_context=forkserver))``), the
engine's own process pool (``Engine(2, executor="processes")``), and a dask.distributed
cluster of 2 worker processes (``Engine(2, executor=DaskExecutor(client))``; skipped when
distributed is not installed).  Outputs, statuses, attempts and errors must be the same
whatever runs the nodes.  Actions are module-level functions (or partials of them) so
that they can be pickled; in another process the context is an
:class:`~flow_orchestrator.engine.ExternalContext` snapshot.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import importlib.util
import itertools
import os
import pathlib
import pickle
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from engine_helpers import (
    raises_locked,
    raises_unloadable,
    returns_lock,
    returns_reborn,
    with_lock,
)

from flow_orchestrator.data import WorkflowData
from flow_orchestrator.engine import (
    CancellationToken,
    Engine,
    ExternalContext,
    RunResult,
)
from flow_orchestrator.errors import (
    DefinitionError,
    EngineClosedError,
    NodeCancelledError,
    NodeFailedError,
    NodeTimeoutError,
    PicklingError,
    RunCancelledError,
    SerializationError,
    UnknownNodeError,
    WorkflowFailedError,
)
from flow_orchestrator.external import check_actions, process_pool, queue_ahead
from flow_orchestrator.middleware import timeout
from flow_orchestrator.state import RunState
from flow_orchestrator.status import TERMINAL, NodeStatus, RunStatus
from flow_orchestrator.workflow import Workflow, WorkflowBuilder

WAIT = 10.0


# -- module-level actions (picklable) ------------------------------------------------------------


def seed():
    return 3


def add_inputs(ctx, k=1):
    return sum(ctx.inputs.values()) + k


def describe(ctx):
    return (ctx.node, ctx.attempt, sorted(ctx.inputs), ctx.data["factor"] * ctx.input("left"))


def read_data(ctx):
    return ctx.data["factor"]


def missing_input(ctx):
    return ctx.input("nope")


def by_name(seed, right, ctx):
    return (seed, right, ctx.node)


def keyword_inputs(*, left, scale=100):
    return left * scale


def fail(ctx):
    raise ValueError(f"boom in {ctx.node}")


def fail_plain():
    raise KeyError("plain")


def flaky(ctx, succeed_on=3):
    if ctx.attempt < succeed_on:
        raise ConnectionError(f"attempt {ctx.attempt}")
    return ctx.attempt


def sleepy(ctx, seconds=0.6):
    time.sleep(seconds)  # uncooperative on purpose: ends past its deadline
    return "late"


def give_up(ctx):
    raise NodeCancelledError("giving up")


def node_name(ctx):
    return ctx.node


def where(ctx):
    return (os.getpid(), threading.get_ident(), type(ctx).__name__)


def write_data(ctx):
    ctx.data["written"] = ctx.node
    return sorted(ctx.data)


def context_facts(ctx):
    return dict(cls=type(ctx).__name__, node=ctx.node, node_id=ctx.node_id, run_id=ctx.run_id,
                attempt=ctx.attempt, cancelled=ctx.cancelled, has_deadline=ctx.deadline is not None,
                remaining_ok=ctx.remaining() is not None and 0 < ctx.remaining() <= 30.0,
                data_type=type(ctx.data).__name__)


def gated(ctx):
    """Mark that the attempt started, then wait until a gate file exists; return ctx.data['value']."""
    pathlib.Path(ctx.data["mark"]).touch()
    gate = pathlib.Path(ctx.data["gate"])
    end = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < end:
        time.sleep(0.005)
    return ctx.data["value"]


# -- executors ----------------------------------------------------------------------------------------

KINDS = ["threads", "user-pool", "serial", "processes", "own-processes", "dask"]
#: Executors whose actions run in other processes, on an ExternalContext.
ELSEWHERE = {"processes", "own-processes", "dask"}

# Not imported at module level: the worker processes import this module (for its actions).
HAVE_DASK = importlib.util.find_spec("distributed") is not None


@pytest.fixture(scope="module")
def pools():
    threads = cf.ThreadPoolExecutor(3, thread_name_prefix="user-pool")
    processes = process_pool(2)  # forkserver: no fork of this multi-threaded process
    list(processes.map(abs, [-1, -2]))  # start the workers now
    found = {"user-pool": threads, "processes": processes}
    cluster = client = None
    if HAVE_DASK:
        import distributed

        from flow_orchestrator.dask_executor import DaskExecutor

        from engine_helpers import local_dask_cluster

        cluster = local_dask_cluster()
        client = distributed.Client(cluster)
        found["dask"] = DaskExecutor(client)
    yield found
    threads.shutdown(wait=True)
    processes.shutdown(wait=True)
    if client is not None:
        client.close()
        cluster.close()


def make_engine(kind: str, pools) -> Engine:
    if kind == "threads":
        return Engine(2)
    if kind == "user-pool":
        return Engine(executor=pools["user-pool"])
    if kind == "serial":
        return Engine(1, executor="serial")
    if kind == "own-processes":
        return Engine(2, executor="processes")
    if kind == "dask":
        if "dask" not in pools:
            pytest.skip("dask.distributed is not installed: the 'dask' extra (pip install 'flow-orchestrator[dask]')")
        return Engine(2, executor=pools["dask"])
    return Engine(2, executor=pools["processes"])


@pytest.fixture(params=KINDS)
def engine(request, pools):
    eng = make_engine(request.param, pools)
    eng.kind = request.param
    yield eng
    eng.close()


def assert_terminal(result: RunResult) -> None:
    assert all(NodeStatus(int(s)) in TERMINAL for s in result.statuses), result.statuses


def statuses(result: RunResult) -> dict[str, NodeStatus]:
    return {name: result.status_of(name) for name in result.workflow.names}


# -- workflows --------------------------------------------------------------------------------------


def data_flow_workflow() -> Workflow:
    return (WorkflowBuilder("flow")
            .add("seed", seed)
            .add("left", functools.partial(add_inputs, k=10), depends_on="seed")
            .add("right", add_inputs, depends_on="seed")
            .add("join", describe, depends_on=["left", "right"])
            .add("data", read_data)
            .add("name", node_name, depends_on="data")
            .build())


def failing_workflow(*, node_coe: bool = False) -> Workflow:
    b = WorkflowBuilder("failing")
    b.add("root", seed)
    b.add("bad", fail, depends_on="root", continue_on_error=node_coe)
    b.add("bad_plain", fail_plain, continue_on_error=node_coe)
    b.add("dep", add_inputs, depends_on="bad")
    b.add("dep2", add_inputs, depends_on=["dep", "ok1"])
    b.add("dep3", add_inputs, depends_on="bad_plain")
    b.add("ok1", add_inputs, depends_on="root")
    b.add("ok2", add_inputs, depends_on="ok1")
    b.add("bad_input", missing_input, depends_on="ok2", continue_on_error=node_coe)
    return b.build()


EXPECTED_CONTINUE = {
    "root": NodeStatus.COMPLETED, "bad": NodeStatus.FAILED, "bad_plain": NodeStatus.FAILED,
    "dep": NodeStatus.SKIPPED, "dep2": NodeStatus.SKIPPED, "dep3": NodeStatus.SKIPPED,
    "ok1": NodeStatus.COMPLETED, "ok2": NodeStatus.COMPLETED, "bad_input": NodeStatus.FAILED,
}


# -- the contract ------------------------------------------------------------------------------------


def test_outputs_are_correct(engine):
    result = engine.run(data_flow_workflow(), data={"factor": 2})
    assert result.ok and result.status is RunStatus.COMPLETED
    assert result.outputs == {"seed": 3, "left": 13, "right": 4, "join": ("join", 1, ["left", "right"], 26),
                              "data": 2, "name": "name"}
    assert result.attempts.tolist() == [1] * 6 and result.errors == {}
    assert np.isfinite(result.started).all() and (result.ended >= result.started).all()
    assert_terminal(result)


def test_inputs_by_parameter_name(engine):
    """Parameters named after dependencies receive their outputs on every executor, inside
    middleware too; a parameter with a default keeps its value."""
    wf = (WorkflowBuilder("by-name", middleware=[timeout(30.0)])
          .add("seed", seed)
          .add("right", add_inputs, depends_on="seed")
          .add("left", functools.partial(add_inputs, k=10), depends_on="seed")
          .add("named", by_name, depends_on=["seed", "right"])
          .add("kw", keyword_inputs, depends_on="left")
          .build())
    result = engine.run(wf, data={"factor": 2})
    assert result.output("named") == (3, 4, "named")
    assert result.output("kw") == 1300


def test_a_failure_fails_fast_and_skips_dependents(engine):
    wf = (WorkflowBuilder("chain").add("bad", fail).add("dep", add_inputs, depends_on="bad")
          .add("dep2", add_inputs, depends_on="dep").build())
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(wf)
    exc = info.value
    assert [f.node for f in exc.exceptions] == ["bad"]
    (failure,) = exc.exceptions
    assert isinstance(failure, NodeFailedError) and failure.attempts == 1
    assert type(failure.__cause__) is ValueError and str(failure.__cause__) == "boom in bad"
    result = exc.result
    assert result.status is RunStatus.FAILED
    assert statuses(result) == {"bad": NodeStatus.FAILED, "dep": NodeStatus.SKIPPED, "dep2": NodeStatus.SKIPPED}
    assert np.isnan(result.started[1:]).all()
    assert_terminal(result)


def test_fail_fast_leaves_independent_nodes_completed_or_never_started(engine):
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(failing_workflow())
    result = info.value.result
    failed = result.nodes(NodeStatus.FAILED)
    assert failed and set(failed) <= {"bad", "bad_plain", "bad_input"}
    wf = result.workflow
    assert set(result.nodes(NodeStatus.SKIPPED)) == set(wf.descendants(failed))
    for name, status in statuses(result).items():
        assert status in (NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED)
        ran = not np.isnan(result.started[wf.node_id(name)])
        assert ran == (status in (NodeStatus.COMPLETED, NodeStatus.FAILED)), name
    assert_terminal(result)


@pytest.mark.parametrize("how", ["run", "node"])
def test_continue_on_error_statuses(engine, how):
    wf = failing_workflow(node_coe=how == "node")
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(wf, continue_on_error=True if how == "run" else None)
    result = info.value.result
    assert statuses(result) == EXPECTED_CONTINUE
    assert {f.node: type(f.__cause__) for f in info.value.exceptions} == {
        "bad": ValueError, "bad_plain": KeyError, "bad_input": UnknownNodeError}
    assert str(result.error("bad")) == "boom in bad"
    assert result.outputs == {"root": 3, "ok1": 4, "ok2": 5}
    assert_terminal(result)


def test_retries(engine):
    wf = (WorkflowBuilder("retries").add("flaky", flaky, retries=3, retry_delay=0.01)
          .add("exhausted", functools.partial(flaky, succeed_on=9), retries=2)
          .add("dep", add_inputs, depends_on="flaky").build())
    result = engine.run(wf, continue_on_error=True, raise_on_failure=False)
    assert statuses(result) == {"flaky": NodeStatus.COMPLETED, "exhausted": NodeStatus.FAILED,
                                "dep": NodeStatus.COMPLETED}
    assert result.attempts.tolist() == [3, 3, 1]
    assert result.output("flaky") == 3 and result.output("dep") == 4
    assert type(result.error("exhausted")) is ConnectionError and str(result.error("exhausted")) == "attempt 3"


def test_timeouts(engine):
    wf = (WorkflowBuilder("timeouts").add("sleepy", sleepy, timeout=0.1)
          .add("dep", add_inputs, depends_on="sleepy")
          .add("other", seed).add("other2", add_inputs, depends_on="other").build())
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(wf, continue_on_error=True)
    result = info.value.result
    assert statuses(result) == {"sleepy": NodeStatus.TIMED_OUT, "dep": NodeStatus.SKIPPED,
                                "other": NodeStatus.COMPLETED, "other2": NodeStatus.COMPLETED}
    assert isinstance(result.error("sleepy"), NodeTimeoutError)
    assert result.output("sleepy") is None and result.outputs == {"other": 3, "other2": 4}
    (failure,) = info.value.exceptions
    assert failure.node == "sleepy" and failure.status == "timed_out"


def test_an_action_giving_up_ends_cancelled(engine):
    wf = WorkflowBuilder("w").add("give_up", give_up).add("dep", add_inputs, depends_on="give_up").build()
    result = engine.run(wf, raise_on_failure=False)
    assert statuses(result) == {"give_up": NodeStatus.CANCELLED, "dep": NodeStatus.SKIPPED}
    assert isinstance(result.error("give_up"), NodeCancelledError) and result.status is not RunStatus.COMPLETED


def test_a_token_cancelled_beforehand_runs_nothing(engine):
    token = CancellationToken()
    token.cancel("before")
    with pytest.raises(RunCancelledError) as info:
        engine.run(data_flow_workflow(), data={"factor": 1}, cancel=token)
    result = info.value.result
    assert result.status is RunStatus.CANCELLED and result.cancel_reason == "before"
    assert set(statuses(result).values()) == {NodeStatus.CANCELLED}
    assert np.isnan(result.started).all()


def test_cancelling_while_a_node_runs(engine, tmp_path):
    """The running node finishes (it cannot see the cancel in a process); nothing else starts."""
    mark, gate = tmp_path / "mark", tmp_path / "gate"
    wf = (WorkflowBuilder("w").add("running", gated).add("after", add_inputs, depends_on="running")
          .add("after2", add_inputs, depends_on="after").build())
    try:
        handle = engine.submit(wf, data={"mark": str(mark), "gate": str(gate), "value": 7})
        end = time.monotonic() + WAIT
        while not mark.exists() and time.monotonic() < end:
            time.sleep(0.005)
        assert mark.exists(), "the node never started"
        handle.cancel("mid-run")
        gate.touch()
        exc = handle.exception(timeout=WAIT)
    finally:
        gate.touch()
    assert isinstance(exc, RunCancelledError)
    result = exc.result
    assert statuses(result) == {"running": NodeStatus.COMPLETED, "after": NodeStatus.CANCELLED,
                                "after2": NodeStatus.CANCELLED}
    assert result.output("running") == 7 and result.cancel_reason == "mid-run"


def test_context_contents(engine):
    wf = WorkflowBuilder("w").add("facts", context_facts, timeout=30.0).build()
    result = engine.run(wf, data={"k": 1}, run_id="rid")
    facts = result.output("facts")
    expected_cls = "ExternalContext" if engine.kind in ELSEWHERE else "NodeContext"
    expected_data = "WorkflowData"  # a snapshot copy in processes, the live one in threads
    assert facts == dict(cls=expected_cls, node="facts", node_id=0, run_id="rid", attempt=1, cancelled=False,
                         has_deadline=True, remaining_ok=True, data_type=expected_data)


def test_every_executor_agrees(pools):
    """The same workflows, run by each executor: identical statuses, attempts, outputs, errors."""
    seen = {}
    kinds = [kind for kind in KINDS if kind != "dask" or "dask" in pools]
    for kind in kinds:
        with make_engine(kind, pools) as eng:
            runs = [
                eng.run(data_flow_workflow(), data={"factor": 5}),
                eng.run(failing_workflow(), continue_on_error=True, raise_on_failure=False),
                eng.run(failing_workflow(node_coe=True), raise_on_failure=False),
            ]
            seen[kind] = [(r.status, r.statuses.tolist(), r.attempts.tolist(), r.outputs,
                           {k: (type(v), str(v)) for k, v in r.errors.items()}) for r in runs]
    reference = seen["serial"]
    for kind in kinds:
        assert seen[kind] == reference, kind


# -- what differs by executor --------------------------------------------------------------------------


def test_serial_runs_every_node_in_the_calling_thread():
    wf = Workflow.from_arrays("w", [f"n{i}" for i in range(20)], np.arange(10), np.arange(10, 20), where)
    with Engine(4, executor="serial") as eng:
        assert eng.mode == "serial"
        result = eng.run(wf)
    assert {out for out in result.outputs.values()} == {(os.getpid(), threading.get_ident(), "NodeContext")}


def test_processes_run_nodes_elsewhere_with_a_data_snapshot(pools):
    data = WorkflowData(factor=1)
    wf = WorkflowBuilder("w").add("where", where).add("write", write_data, depends_on="where").build()
    with Engine(2, executor=pools["processes"]) as eng:
        assert eng.mode == "external"
        result = eng.run(wf, data=data)
    pid, _, ctx_type = result.output("where")
    assert pid != os.getpid() and ctx_type == "ExternalContext"
    assert result.output("write") == ["factor", "written"]  # written in the child's copy
    assert "written" not in data  # ... which the run's data never sees


def test_external_context_api():
    ctx = ExternalContext("n", 0, 1, None, {"a": 1}, {"k": 2}, "rid")
    assert ctx.input("a") == 1 and ctx.cancelled is False and ctx.remaining() is None
    ctx.raise_if_cancelled()
    with pytest.raises(UnknownNodeError, match="'n' has no dependency 'b'"):
        ctx.input("b")
    assert ExternalContext("n", 0, 1, time.monotonic() - 1, {}, {}, "r").remaining() == 0.0


def test_user_thread_pool_runs_the_helpers(pools):
    names = set()

    def record(ctx):
        names.add(threading.current_thread().name)
        ctx.wait(0.01)

    wf = Workflow.from_arrays("w", [f"n{i}" for i in range(12)], [], [], record)
    with Engine(3, executor=pools["user-pool"]) as eng:
        assert eng.mode == "threads"
        assert eng.run(wf).ok
    assert all(n == threading.current_thread().name or n.startswith("user-pool") for n in names)


def test_a_late_result_from_a_previous_process_run_is_not_taken_for_the_next_one(pools, tmp_path):
    """Run 1's attempt times out but keeps running in its process; run 2 of the same workflow
    starts; run 1's attempt then returns.  That late value must not complete run 2's node."""
    wf = WorkflowBuilder("w").add("n", gated, timeout=2.0).build()
    g1, g2, m1, m2 = (tmp_path / name for name in ("gate1", "gate2", "mark1", "mark2"))
    try:
        with Engine(2, executor=pools["processes"]) as eng:
            first = eng.run(wf, data={"gate": str(g1), "mark": str(m1), "value": "old"}, raise_on_failure=False)
            assert first.status_of("n") is NodeStatus.TIMED_OUT
            second = eng.submit(wf, data={"gate": str(g2), "mark": str(m2), "value": "new"})
            end = time.monotonic() + WAIT
            while not m2.exists() and time.monotonic() < end:
                time.sleep(0.005)
            assert m2.exists(), "run 2's attempt never started"
            g1.touch()  # run 1's abandoned attempt returns "old" now
            end = time.monotonic() + 0.5
            while time.monotonic() < end and NodeStatus(int(second.statuses()[0])) is NodeStatus.RUNNING:
                time.sleep(0.01)
            g2.touch()
            result = second.result(timeout=WAIT)
        assert result.output("n") == "new", "run 2 took run 1's late result"
        assert first.output("n") is None
    finally:
        g1.touch()
        g2.touch()


# -- what cannot cross to another process -------------------------------------------------------------


@pytest.fixture(params=sorted(ELSEWHERE))
def elsewhere(request, pools):
    """An engine of each executor that runs actions in other processes."""
    with make_engine(request.param, pools) as eng:
        eng.kind = request.param
        yield eng


def test_an_unpicklable_action_stops_the_run_before_any_node_starts(elsewhere):
    locked = functools.partial(with_lock, lock=threading.Lock())
    wf = (WorkflowBuilder("w").add("ok", seed).add("locked", locked).add("dep", add_inputs, depends_on="locked")
          .add("locked2", locked).build())
    with pytest.raises(DefinitionError) as info:
        elsewhere.run(wf)
    message = str(info.value)
    assert "2 node(s)" in message and "node 'locked'" in message and "node 'locked2'" in message
    assert "cannot be pickled" in message and "_thread.lock" in message
    assert not hasattr(info.value, "result")  # refused before the run started: there is none
    with pytest.raises(DefinitionError):  # checked once per compiled workflow, reported every run
        elsewhere.run(wf)


def test_a_lambda_cannot_run_in_a_process_pool(pools):
    wf = WorkflowBuilder("w").add("lam", lambda: 1).add("dep", add_inputs, depends_on="lam").add("ok", seed).build()
    with Engine(2, executor=pools["processes"]) as eng, \
            pytest.raises(DefinitionError, match=r"node 'lam': its action <function .*<lambda>"):
        eng.run(wf)


def test_check_actions_before_a_run(pools):
    wf = WorkflowBuilder("w").add("lam", lambda: 1).add("ok", seed).build()
    compiled = Engine(1).compile(wf)
    with pytest.raises(DefinitionError, match="workflow 'w': 1 node.*node 'lam'"):
        check_actions(pools["processes"], compiled, "w")
    check_actions(pools["processes"], compiled, "w", np.array([True, False]))  # 'lam' completed
    check_actions(pools["user-pool"], compiled, "w")  # threads: nothing to pickle


def test_a_resumed_run_never_ships_an_unpicklable_action_that_completed(pools):
    locked = functools.partial(with_lock, lock=threading.Lock())
    wf = WorkflowBuilder("w").add("locked", locked).add("dep", add_inputs, depends_on="locked").build()
    with Engine(2) as threads:
        state = RunState.from_result(threads.run(wf))
    with Engine(2, executor=pools["processes"]) as eng:
        result = eng.run(wf, resume=state, rerun=["dep"])
    assert result.outputs == {"locked": 1, "dep": 2}


def test_what_cannot_be_pickled_fails_its_node_naming_it(elsewhere):
    wf = (WorkflowBuilder("w")
          .add("lock_out", returns_lock)
          .add("reborn", returns_reborn)
          .add("uses_reborn", add_inputs, depends_on="reborn")
          .add("raises_locked", raises_locked)
          .add("raises_unloadable", raises_unloadable)
          .add("ok", seed)
          .add("after", add_inputs, depends_on=["ok", "raises_unloadable"], continue_on_error=True)
          .add("later", add_inputs, depends_on="ok")
          .build())
    result = elsewhere.run(wf, continue_on_error=True, raise_on_failure=False)
    assert statuses(result) == {
        "lock_out": NodeStatus.FAILED, "reborn": NodeStatus.COMPLETED, "uses_reborn": NodeStatus.FAILED,
        "raises_locked": NodeStatus.FAILED, "raises_unloadable": NodeStatus.FAILED, "ok": NodeStatus.COMPLETED,
        "after": NodeStatus.SKIPPED, "later": NodeStatus.COMPLETED}
    errors = result.errors
    assert all(isinstance(errors[n], PicklingError) for n in ("lock_out", "uses_reborn", "raises_locked",
                                                              "raises_unloadable"))
    assert {n: (errors[n].node, errors[n].what) for n in errors} == {
        "lock_out": ("lock_out", "output"), "uses_reborn": ("uses_reborn", "input 'reborn'"),
        "raises_locked": ("raises_locked", "exception"), "raises_unloadable": ("raises_unloadable", "exception")}
    assert str(errors["lock_out"]).startswith("node 'lock_out': its output (_thread.lock) cannot be pickled")
    assert str(errors["uses_reborn"]).startswith(
        "node 'uses_reborn': input 'reborn' (engine_helpers.Holder) cannot be pickled")
    assert str(errors["raises_locked"]).startswith("node 'raises_locked' raised LockedError: locked, which cannot")
    assert str(errors["raises_unloadable"]).startswith("node 'raises_unloadable' raised UnloadableError: x and y")
    assert isinstance(errors["lock_out"], SerializationError) and isinstance(errors["lock_out"], pickle.PicklingError)
    # the pool survived an exception it could not have unpickled
    assert elsewhere.run(data_flow_workflow(), data={"factor": 1}).ok


def test_unpicklable_run_data_fails_the_nodes_naming_the_key(elsewhere):
    wf = WorkflowBuilder("w").add("a", read_data).add("b", add_inputs, depends_on="a").build()
    result = elsewhere.run(wf, data={"factor": 2, "conn": threading.Lock()}, raise_on_failure=False)
    assert statuses(result) == {"a": NodeStatus.FAILED, "b": NodeStatus.SKIPPED}
    error = result.error("a")
    assert isinstance(error, PicklingError) and error.what == "data['conn']"
    assert str(error).startswith("node 'a': the run's data['conn'] (_thread.lock) cannot be pickled")


def test_unpicklable_failures_are_retried_like_any_failure(elsewhere):
    wf = WorkflowBuilder("w").add("lock_out", returns_lock, retries=1).build()
    result = elsewhere.run(wf, raise_on_failure=False)
    assert result.attempts.tolist() == [2] and isinstance(result.error("lock_out"), PicklingError)


def span(ctx, seconds=0.05):
    start = time.time()
    time.sleep(seconds)
    return (start, time.time())


def test_one_attempt_queued_ahead_in_a_process_pool_only_when_it_is_safe(pools):
    compiled = Engine(1).compile(WorkflowBuilder("w").add("a", seed).build())
    timed = Engine(1).compile(WorkflowBuilder("w").add("a", seed, timeout=5.0).build())
    processes = pools["processes"]  # 2 processes
    assert queue_ahead(processes, 2, compiled) == 1
    assert queue_ahead(processes, 3, compiled) == 1
    assert queue_ahead(processes, 1, compiled) == 0  # max_concurrency=1: never 2 at once
    assert queue_ahead(processes, 2, timed) == 0  # a queued attempt's deadline would run
    assert queue_ahead(pools["user-pool"], 3, compiled) == 0


def test_max_concurrency_holds_in_a_process_pool(pools):
    wf = Workflow.from_arrays("w", [f"n{i}" for i in range(6)], [], [], span)
    with Engine(2, executor=pools["processes"]) as eng:
        spans = sorted(eng.run(wf, max_concurrency=1).outputs.values())
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two nodes ran at once"
        spans = sorted(eng.run(wf).outputs.values())
        assert any(a[1] > b[0] for a, b in itertools.pairwise(spans)), "never two at once with 2 processes"


# -- the engine's own process pool -------------------------------------------------------------------------


def test_the_engines_own_process_pool_uses_forkserver_and_close_shuts_it_down():
    eng = Engine(2, executor="processes")
    assert eng.mode == "external" and eng._own_pool is None  # made on first use
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning about fork in a threaded process
        result = eng.run(WorkflowBuilder("w").add("where", where).add("again", where).build())
    pool = eng._own_pool
    assert isinstance(pool, cf.ProcessPoolExecutor)
    assert pool._mp_context.get_start_method() == ("forkserver" if sys.platform.startswith("linux") else "spawn")
    assert pool._max_workers == 2
    processes = list(pool._processes.values())
    assert {out[0] for out in result.outputs.values()} <= {p.pid for p in processes}
    eng.close()
    assert eng._own_pool is None and all(not p.is_alive() for p in processes)
    with pytest.raises(EngineClosedError):
        eng.run(WorkflowBuilder("w").add("seed", seed).build())
    assert eng._own_pool is None  # a run refused by a closed engine starts no new pool


def test_executor_names_are_checked():
    with pytest.raises(DefinitionError, match="'serial', 'processes'"):
        Engine(executor="process")
    assert Engine(executor="processes").max_workers == (os.cpu_count() or 1)
