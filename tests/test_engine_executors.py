"""One behavioural contract, run by every executor.

The same workflows run on: the engine's own threads (``Engine(2)``), a thread pool of the
user's (``Engine(executor=ThreadPoolExecutor(3))``), the serial executor, and a process
pool (``Engine(2, executor=ProcessPoolExecutor(2))``).  Outputs, statuses, attempts and
errors must be the same whatever runs the nodes.  Actions are module-level functions (or
partials of them) so that they can be pickled; in a process the context is an
:class:`~flow_orchestrator.engine.ExternalContext` snapshot.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import pathlib
import threading
import time

import numpy as np
import pytest

from flow_orchestrator.data import WorkflowData
from flow_orchestrator.engine import CancellationToken, Engine, ExternalContext, RunResult
from flow_orchestrator.errors import (
    NodeCancelledError,
    RunCancelledError,
    NodeFailedError,
    NodeTimeoutError,
    UnknownNodeError,
    WorkflowFailedError,
)
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

KINDS = ["threads", "user-pool", "serial", "processes"]


@pytest.fixture(scope="module")
def pools():
    threads = cf.ThreadPoolExecutor(3, thread_name_prefix="user-pool")
    processes = cf.ProcessPoolExecutor(2)
    list(processes.map(abs, [-1, -2]))  # start the workers now, while few threads exist
    yield {"user-pool": threads, "processes": processes}
    threads.shutdown(wait=True)
    processes.shutdown(wait=True)


def make_engine(kind: str, pools) -> Engine:
    if kind == "threads":
        return Engine(2)
    if kind == "user-pool":
        return Engine(executor=pools["user-pool"])
    if kind == "serial":
        return Engine(1, executor="serial")
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
    expected_cls = "ExternalContext" if engine.kind == "processes" else "NodeContext"
    expected_data = "WorkflowData"  # a snapshot copy in processes, the live one in threads
    assert facts == dict(cls=expected_cls, node="facts", node_id=0, run_id="rid", attempt=1, cancelled=False,
                         has_deadline=True, remaining_ok=True, data_type=expected_data)


def test_every_executor_agrees(pools):
    """The same workflows, run by each executor: identical statuses, attempts, outputs, errors."""
    seen = {}
    for kind in KINDS:
        with make_engine(kind, pools) as eng:
            runs = [
                eng.run(data_flow_workflow(), data={"factor": 5}),
                eng.run(failing_workflow(), continue_on_error=True, raise_on_failure=False),
                eng.run(failing_workflow(node_coe=True), raise_on_failure=False),
            ]
            seen[kind] = [(r.status, r.statuses.tolist(), r.attempts.tolist(), r.outputs,
                           {k: (type(v), str(v)) for k, v in r.errors.items()}) for r in runs]
    reference = seen["serial"]
    for kind in KINDS:
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


def test_an_unpicklable_action_fails_its_node_in_a_process_pool(pools):
    wf = WorkflowBuilder("w").add("lam", lambda: 1).add("dep", add_inputs, depends_on="lam").add("ok", seed).build()
    with Engine(2, executor=pools["processes"]) as eng:
        result = eng.run(wf, continue_on_error=True, raise_on_failure=False)
    assert statuses(result) == {"lam": NodeStatus.FAILED, "dep": NodeStatus.SKIPPED, "ok": NodeStatus.COMPLETED}
    assert result.error("lam") is not None
