"""Faults and control: retries, timeouts, cancellation, interrupts, nesting, load, lifecycle.

Threads meet through events and barriers, each waited on with a generous bound so that
a bug fails a test instead of hanging the suite.  Where a run may wrongly block, it is
started with ``Engine.submit`` and its result awaited with a timeout; whatever blocks it
is released in a ``finally``.  "Promptly" is checked with a generous bound (2 s).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import threading
import time

import numpy as np
import pytest

from flow_orchestrator.data import WorkflowData
from flow_orchestrator.engine import CancellationToken, Engine, RunHandle, RunResult
from flow_orchestrator.errors import (
    DefinitionError,
    EngineClosedError,
    NodeCancelledError,
    NodeTimeoutError,
    RunCancelledError,
    WorkflowFailedError,
)
from flow_orchestrator.status import TERMINAL, NodeStatus, RunStatus
from flow_orchestrator.workflow import Workflow, WorkflowBuilder

from engine_helpers import StartLog, assert_terminal

# A guard against a hung test, never a measure of speed: the tests observe events (a
# cancel seen by the action, a run ended), and timing checks live in bench/.
WAIT = 10.0


def cooperative(ctx, limit: float = WAIT):
    """Loop until the attempt is cancelled (bounded); True if it was."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if ctx.cancelled:
            return True
        ctx.wait(0.005)
    return False


ENGINES = {
    "threads-1": lambda: Engine(1),
    "threads-4": lambda: Engine(4),
    "serial": lambda: Engine(1, executor="serial"),
}


@pytest.fixture(params=list(ENGINES))
def engine(request):
    eng = ENGINES[request.param]()
    yield eng
    eng.close()


# -- retries ---------------------------------------------------------------------------------------


def test_retries_see_attempt_numbers_and_succeed(engine):
    seen = []

    def flaky(ctx):
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt}")
        return f"ok on {ctx.attempt}"

    wf = (WorkflowBuilder("retry").add("flaky", flaky, retries=3, retry_delay=0.01)
          .add("after", lambda ctx: ctx.input("flaky"), depends_on="flaky").build())
    result = engine.run(wf)
    assert seen == [1, 2, 3]
    assert result.output("flaky") == "ok on 3" and result.output("after") == "ok on 3"
    assert result.attempts.tolist() == [3, 1] and result.errors == {}
    assert_terminal(result)


def test_retries_exhausted_fail_with_the_last_error(engine):
    seen = []

    def always(ctx):
        seen.append(ctx.attempt)
        raise ConnectionError(f"attempt {ctx.attempt}")

    wf = (WorkflowBuilder("retry").add("always", always, retries=2, retry_delay=0.005, retry_backoff=1.5)
          .add("dep", lambda: 1, depends_on="always").build())
    with pytest.raises(WorkflowFailedError) as info:
        engine.run(wf)
    result = info.value.result
    assert seen == [1, 2, 3]
    assert result.status_of("always") is NodeStatus.FAILED and result.attempts[0] == 3
    assert result.status_of("dep") is NodeStatus.SKIPPED and result.attempts[1] == 0
    assert str(result.error("always")) == "attempt 3"
    (failure,) = info.value.exceptions
    assert failure.attempts == 3 and failure.__cause__ is result.error("always")
    assert_terminal(result)


@pytest.mark.parametrize("kind", ["threads", "threads-with-timeouts", "serial"])
def test_a_retry_delay_does_not_hold_the_only_worker(kind):
    """With one worker, an independent node runs while a failed node waits to retry."""
    first_failed = threading.Event()
    order = StartLog()

    def flaky(ctx):
        order(f"flaky{ctx.attempt}")
        if ctx.attempt == 1:
            first_failed.set()
            raise ValueError("first attempt")
        return "retried"

    def independent():
        # Starts only after flaky's first attempt failed, i.e. during its back-off.
        assert first_failed.wait(WAIT), "flaky never failed"
        order("independent")
        return "ran"

    b = WorkflowBuilder("backoff").add("flaky", flaky, retries=1, retry_delay=0.5)
    b.add("independent", independent)
    if kind == "threads-with-timeouts":  # the calling thread does not work then: one helper does
        b.add("timed", lambda: None, timeout=30.0, depends_on="independent")
    eng = Engine(1, executor="serial") if kind == "serial" else Engine(1)
    try:
        result = eng.run(b.build())
    finally:
        eng.close()
    assert order.order[:3] == ["flaky1", "independent", "flaky2"]
    assert result.output("flaky") == "retried" and result.attempts[0] == 2
    assert_terminal(result)


def test_retry_backoff_is_used_and_capped():
    seen = []

    def flaky(ctx):
        seen.append((ctx.attempt, time.monotonic()))
        if ctx.attempt < 4:
            raise ValueError
        return "ok"

    wf = WorkflowBuilder("w").add("flaky", flaky, retries=3, retry_delay=0.05, retry_backoff=100.0,
                                  retry_max_delay=0.1).build()
    with Engine(2) as eng:
        result = eng.run(wf)
    assert result.output("flaky") == "ok" and [a for a, _ in seen] == [1, 2, 3, 4]
    gaps = np.diff([t for _, t in seen])
    # Each wait lasted at least its (capped) delay: 0.05, then 0.1 (not 5 s), then 0.1.
    assert (gaps >= np.array([0.05, 0.1, 0.1]) - 0.01).all()


# -- timeouts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["threads-1", "threads-4", "serial"])
def test_a_cooperative_action_times_out_and_the_run_continues_elsewhere(kind):
    observed = {}

    def slow(ctx):
        observed["deadline"] = ctx.deadline
        observed["saw_cancel"] = cooperative(ctx)
        observed["remaining"] = ctx.remaining()
        return "late value"

    b = WorkflowBuilder("timeouts").add("slow", slow, timeout=0.2)
    b.add("dep", lambda: "never", depends_on="slow").add("dep2", lambda: "never", depends_on="dep")
    b.add("a", lambda: 1).add("b", lambda ctx: ctx.input("a") + 1, depends_on="a")
    eng = ENGINES[kind]()
    try:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(b.build(), continue_on_error=True)
    finally:
        eng.close()
    result = info.value.result
    assert observed["saw_cancel"] is True and observed["remaining"] == 0.0
    assert result.status is RunStatus.FAILED
    assert result.status_of("slow") is NodeStatus.TIMED_OUT
    assert result.output("slow") is None and result.outputs == {"a": 1, "b": 2}
    assert result.nodes(NodeStatus.SKIPPED) == ["dep", "dep2"]
    assert isinstance(result.error("slow"), NodeTimeoutError) and isinstance(result.error("slow"), TimeoutError)
    (failure,) = info.value.exceptions
    assert failure.node == "slow" and failure.status == "timed_out"
    assert isinstance(failure.__cause__, NodeTimeoutError)
    assert "slow" in result.summary() and "timed" in result.summary()
    assert_terminal(result)


def test_a_timeout_fails_fast_by_default():
    log = StartLog()

    def slow(ctx):
        cooperative(ctx)

    def gate(ctx):
        log("gate")
        return cooperative(ctx)  # runs until the run aborts

    b = WorkflowBuilder("w").add("slow", slow, timeout=0.1)
    b.add("gate", gate)
    b.add("after_gate", functools.partial(log, "after_gate"), depends_on="gate")
    with Engine(1) as eng:
        with pytest.raises(WorkflowFailedError) as info:
            eng.run(b.build())
    result = info.value.result
    assert result.status_of("slow") is NodeStatus.TIMED_OUT
    # gate either ran until the abort, or never started
    if "gate" in log.started:
        assert result.status_of("gate") is NodeStatus.COMPLETED and result.output("gate") is True
    else:
        assert result.status_of("gate") is NodeStatus.CANCELLED
    assert result.status_of("after_gate") is NodeStatus.CANCELLED and "after_gate" not in log.started
    assert_terminal(result)


@pytest.mark.parametrize("workers", [2, 1])
def test_an_uncooperative_action_is_abandoned_at_its_deadline(workers):
    """The run returns without waiting for a blocked action; its late return is discarded."""
    release = threading.Event()
    returned = threading.Event()

    def stuck():
        release.wait(WAIT)
        returned.set()
        return "late"

    wf = (WorkflowBuilder("stuck").add("stuck", stuck, timeout=0.2)
          .add("dep", lambda: "never", depends_on="stuck")
          .add("x", lambda: "x").add("y", lambda ctx: ctx.input("x") + "y", depends_on="x").build())
    eng = Engine(workers)
    try:
        handle = eng.submit(wf, continue_on_error=True, raise_on_failure=False)
        try:
            result = handle.result(timeout=3.0)
        except cf.TimeoutError:
            pytest.fail(f"Engine({workers}): the run waited for an action abandoned at its deadline")
        assert not returned.is_set()  # the run really did not wait for it
        assert result.status_of("stuck") is NodeStatus.TIMED_OUT
        assert result.status_of("dep") is NodeStatus.SKIPPED
        assert result.outputs == {"x": "x", "y": "xy"}
    finally:
        release.set()
        eng.close()  # waits for the abandoned thread
    assert returned.is_set()
    assert result.status_of("stuck") is NodeStatus.TIMED_OUT and result.output("stuck") is None
    assert result.outputs == {"x": "x", "y": "xy"} and isinstance(result.error("stuck"), NodeTimeoutError)
    assert_terminal(result)


def test_several_stuck_actions_do_not_shrink_the_pool():
    release = threading.Event()

    def stuck():
        release.wait(WAIT)

    b = WorkflowBuilder("stuck")
    for i in range(3):
        b.add(f"stuck{i}", stuck, timeout=0.1)
    b.add("after", lambda: "done")
    for i in range(5):
        b.add(f"chain{i}", lambda: i, depends_on="after" if i == 0 else f"chain{i - 1}")
    eng = Engine(2)
    try:
        handle = eng.submit(b.build(), continue_on_error=True, raise_on_failure=False)
        try:
            result = handle.result(timeout=3.0)
        except cf.TimeoutError:
            pytest.fail("stuck actions blocked the rest of the run")
        assert result.nodes(NodeStatus.TIMED_OUT) == ["stuck0", "stuck1", "stuck2"]
        assert result.counts()[NodeStatus.COMPLETED] == 6
    finally:
        release.set()
        eng.close()


def test_timeout_then_retry_succeeds_cooperatively():
    seen = []

    def slow_once(ctx):
        seen.append(ctx.attempt)
        if ctx.attempt == 1:
            assert cooperative(ctx), "attempt 1 was never cancelled"
            return "first (discarded)"
        return "second"

    wf = (WorkflowBuilder("w").add("n", slow_once, timeout=0.2, retries=2)
          .add("dep", lambda ctx: ctx.input("n"), depends_on="n").build())
    with Engine(2) as eng:
        result = eng.run(wf)
    assert seen == [1, 2]
    assert result.output("n") == "second" and result.output("dep") == "second"
    assert result.attempts.tolist() == [2, 1] and result.errors == {}


def test_a_late_return_of_a_timed_out_attempt_does_not_replace_the_retry_output():
    release = threading.Event()
    returned = threading.Event()

    def n(ctx):
        if ctx.attempt == 1:
            release.wait(WAIT)  # uncooperative: blocks past its deadline
            returned.set()
            return "first (late)"
        return "second"

    wf = (WorkflowBuilder("w").add("n", n, timeout=0.2, retries=1)
          .add("dep", lambda ctx: ctx.input("n"), depends_on="n").build())
    eng = Engine(2)
    try:
        result = eng.run(wf)
        assert result.output("n") == "second" and result.output("dep") == "second"
    finally:
        release.set()
        eng.close()  # waits for attempt 1's thread, which returns late
    assert returned.is_set()
    assert result.status_of("n") is NodeStatus.COMPLETED and result.attempts[0] == 2
    assert result.output("n") == "second", "attempt 1's late return overwrote the output of attempt 2"
    assert result.outputs == {"n": "second", "dep": "second"}


def test_a_late_return_does_not_change_the_recorded_end_of_the_node():
    """``ended``/``durations()`` describe the last attempt; a dependent starts after its
    dependency ended, so ended[n] <= started[dep] must hold even when n's abandoned first
    attempt returns (late) while dep runs."""
    release, returned = threading.Event(), threading.Event()

    def n(ctx):
        if ctx.attempt == 1:
            release.wait(WAIT)
            returned.set()
            return "first (late)"
        return "second"

    def dep(ctx):
        release.set()  # let n's abandoned attempt return now, while this node runs
        assert returned.wait(WAIT)
        ctx.wait(0.05)
        return ctx.input("n")

    wf = WorkflowBuilder("w").add("n", n, timeout=0.2, retries=1).add("dep", dep, depends_on="n").build()
    eng = Engine(2)
    try:
        result = eng.run(wf)
    finally:
        release.set()
        eng.close()
    assert result.attempts.tolist() == [2, 1]
    assert result.ended[0] <= result.started[1], (result.started, result.ended)


def test_every_attempt_timing_out_ends_timed_out():
    seen = []

    def slow(ctx):
        seen.append(ctx.attempt)
        cooperative(ctx)

    wf = WorkflowBuilder("w").add("slow", slow, timeout=0.05, retries=2).build()
    with Engine(2) as eng:
        result = eng.run(wf, raise_on_failure=False)
    assert seen == [1, 2, 3]
    assert result.status_of("slow") is NodeStatus.TIMED_OUT and result.attempts[0] == 3
    assert "attempt 3" in str(result.error("slow"))


# -- cancellation ------------------------------------------------------------------------------------


def _cancellable_workflow(log: StartLog, started: threading.Event, *, raise_when_cancelled: bool) -> Workflow:
    def runner(ctx):
        log("runner")
        started.set()
        assert cooperative(ctx), "runner was never cancelled"
        if raise_when_cancelled:
            ctx.raise_if_cancelled()
        return "stopped"

    b = WorkflowBuilder("cancellable").add("runner", runner)
    b.add("after", functools.partial(log, "after"), depends_on="runner")
    b.add("after2", functools.partial(log, "after2"), depends_on="after")
    for i in range(4):
        b.add(f"other{i}", functools.partial(log, f"other{i}"), depends_on="runner" if i == 0 else f"other{i - 1}")
    return b.build()


@pytest.mark.parametrize("raise_when_cancelled", [True, False], ids=["raise_if_cancelled", "returns"])
def test_cancel_from_another_thread_with_a_token(engine, raise_when_cancelled):
    log = StartLog()
    started = threading.Event()
    token = CancellationToken()

    def canceller():
        if started.wait(WAIT):
            token.cancel("stop please")

    threading.Thread(target=canceller, daemon=True).start()
    wf = _cancellable_workflow(log, started, raise_when_cancelled=raise_when_cancelled)
    with pytest.raises(RunCancelledError) as info:
        engine.run(wf, cancel=token)
    assert token.cancelled
    result = info.value.result
    assert isinstance(result, RunResult) and result.status is RunStatus.CANCELLED
    assert result.cancel_reason == "stop please" and "stop please" in str(info.value)
    assert log.order == ["runner"]
    if raise_when_cancelled:
        assert result.status_of("runner") is NodeStatus.CANCELLED
        assert isinstance(result.error("runner"), NodeCancelledError)
    else:
        assert result.status_of("runner") is NodeStatus.COMPLETED and result.output("runner") == "stopped"
    for name in ("after", "after2", "other0", "other1", "other2", "other3"):
        assert result.status_of(name) in (NodeStatus.CANCELLED, NodeStatus.SKIPPED), name
        assert np.isnan(result.started[result.workflow.node_id(name)])
    assert result.failures() == []
    assert "stop please" in result.summary()
    assert_terminal(result)


def test_a_token_cancelled_before_the_run_starts_nothing(engine):
    log = StartLog()
    token = CancellationToken()
    token.cancel()
    token.cancel("again")  # idempotent: the first reason stays
    wf = Workflow.from_arrays("w", ["a", "b", "c"], [0], [1], lambda ctx: log(ctx.node))
    with pytest.raises(RunCancelledError) as info:
        engine.run(wf, cancel=token)
    assert log.order == []
    assert info.value.result.nodes(NodeStatus.CANCELLED) == ["a", "b", "c"]
    assert info.value.result.cancel_reason == "cancelled"


def test_one_token_cancels_every_run_it_was_given_to():
    token = CancellationToken()
    runs, started = 4, threading.Semaphore(0)

    def runner(ctx):
        started.release()
        assert cooperative(ctx)
        ctx.raise_if_cancelled()

    wf = WorkflowBuilder("w").add("runner", runner).add("after", lambda: None, depends_on="runner").build()
    with Engine(2) as eng:
        handles = [eng.submit(wf, cancel=token) for _ in range(runs)]
        for _ in range(runs):
            assert started.acquire(timeout=WAIT)
        token.cancel("all")
        for handle in handles:
            exc = handle.exception(timeout=WAIT)
            assert isinstance(exc, RunCancelledError) and exc.result.cancel_reason == "all"
            # runner raised NodeCancelledError: CANCELLED, and its dependent SKIPPED
            assert exc.result.statuses.tolist() == [NodeStatus.CANCELLED, NodeStatus.SKIPPED]
        # The token stays cancelled: a new run given it is cancelled at once; others are not.
        with pytest.raises(RunCancelledError):
            eng.run(wf, cancel=token)
        assert eng.run(WorkflowBuilder("other").add("x", lambda: 1).build()).ok


def test_cancel_a_run_through_its_handle(engine):
    log = StartLog()
    started = threading.Event()
    wf = _cancellable_workflow(log, started, raise_when_cancelled=True)
    handle = engine.submit(wf)
    assert isinstance(handle, RunHandle) and handle.run_id
    assert started.wait(WAIT)
    progress = handle.progress()
    assert sum(progress.values()) == len(wf) and progress[NodeStatus.RUNNING] == 1
    assert not handle.done()
    handle.cancel("by handle")
    exc = handle.exception(timeout=WAIT)
    assert isinstance(exc, RunCancelledError) and handle.done()
    with pytest.raises(RunCancelledError):
        handle.result()
    result = exc.result
    assert result.run_id == handle.run_id and result.cancel_reason == "by handle"
    assert result.status_of("runner") is NodeStatus.CANCELLED
    assert NodeStatus(int(handle.statuses()[0])) is NodeStatus.CANCELLED
    assert handle.statuses().tolist() == result.statuses.tolist()
    progress = handle.progress()
    assert progress[NodeStatus.PENDING] == progress[NodeStatus.RUNNING] == 0
    assert progress[NodeStatus.CANCELLED] + progress[NodeStatus.SKIPPED] == len(wf)
    assert log.order == ["runner"]
    assert_terminal(result)
    handle.cancel()  # cancelling a finished run is harmless


def test_cancelling_a_finished_run_does_not_cancel_a_later_run():
    gate = threading.Event()

    def maybe_block(ctx):
        if ctx.data.get("block"):
            assert gate.wait(WAIT)
        return ctx.data.get("value")

    wf = WorkflowBuilder("w").add("a", maybe_block).add("b", lambda ctx: ctx.input("a"), depends_on="a").build()
    with Engine(1) as eng:
        first = eng.submit(wf, data={"value": 1})
        assert first.result(timeout=WAIT).output("b") == 1
        second = eng.submit(wf, data={"block": True, "value": 2})
        first.cancel("too late")  # the first run is over: this must change nothing
        gate.set()
        try:
            result = second.result(timeout=WAIT)
        except RunCancelledError as exc:
            pytest.fail(f"cancelling a finished run cancelled another run: {exc}")
        assert result.output("b") == 2
        assert first.result().ok


def test_handle_of_a_successful_run():
    wf = WorkflowBuilder("w").add("a", lambda: 1).add("b", lambda ctx: ctx.input("a") + 1, depends_on="a").build()
    with Engine(2) as eng:
        handle = eng.submit(wf, run_id="abc")
        result = handle.result(timeout=WAIT)
        assert handle.run_id == "abc" == result.run_id and handle.done() and handle.exception() is None
        assert result.outputs == {"a": 1, "b": 2}
        assert handle.statuses().tolist() == [NodeStatus.COMPLETED] * 2
        assert handle.progress()[NodeStatus.COMPLETED] == 2


def test_submit_failures_are_delivered_through_the_handle():
    def bad():
        raise ValueError("x")

    wf = WorkflowBuilder("w").add("bad", bad).build()
    with Engine(2) as eng:
        handle = eng.submit(wf)
        assert isinstance(handle.exception(timeout=WAIT), WorkflowFailedError)
        with pytest.raises(WorkflowFailedError):
            handle.result()
        assert handle.statuses().tolist() == [NodeStatus.FAILED]
        quiet = eng.submit(wf, raise_on_failure=False)
        assert quiet.result(timeout=WAIT).status is RunStatus.FAILED


# -- interrupts ---------------------------------------------------------------------------------------


INTERRUPT_ENGINES = {
    "threads-1": (lambda: Engine(1), None),
    "threads-2": (lambda: Engine(2), None),
    "threads-2-timeouts": (lambda: Engine(2), 30.0),  # the caller waits; helpers run the nodes
    "serial": (lambda: Engine(1, executor="serial"), None),
}


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("kind", list(INTERRUPT_ENGINES))
def test_an_interrupt_from_an_action_cancels_the_run_and_propagates(kind, exc_type):
    make, timeout = INTERRUPT_ENGINES[kind]
    log = StartLog()

    def interrupt(ctx):
        log("interrupt")
        if ctx.data.get("interrupt"):
            raise exc_type()
        return "no interrupt"

    b = WorkflowBuilder("interrupted").add("first", functools.partial(log, "first"))
    b.add("interrupt", interrupt, depends_on="first", timeout=timeout)
    b.add("after", functools.partial(log, "after"), depends_on="interrupt")
    for i in range(4):
        b.add(f"chain{i}", functools.partial(log, f"chain{i}"), depends_on="after" if i == 0 else f"chain{i - 1}")
    wf = b.build()
    eng = make()
    try:
        with pytest.raises(exc_type):
            eng.run(wf, data={"interrupt": True})
        assert log.order == ["first", "interrupt"]
        # The engine is still usable, for the same workflow too.
        log.order.clear()
        result = eng.run(wf, data={"interrupt": False})
        assert result.ok and result.output("interrupt") == "no interrupt"
        assert log.order[:2] == ["first", "interrupt"] and len(log.order) == len(wf)
    finally:
        eng.close()


def test_after_an_interrupt_every_node_is_terminal():
    # There is no public way to read a run's statuses when an interrupt propagated out of
    # it (no RunResult is attached to the KeyboardInterrupt), so this reads the run's
    # state through the handle's private run object.
    def interrupt():
        raise KeyboardInterrupt

    def slow():
        threading.Event().wait(0.3)  # still running when the interrupt happens
        return "slow"

    b = WorkflowBuilder("w").add("slow", slow).add("interrupt", interrupt)
    b.add("after_slow", lambda: None, depends_on="slow").add("after_interrupt", lambda: None, depends_on="interrupt")
    with Engine(2) as eng:
        handle = eng.submit(b.build())
        assert isinstance(handle.exception(timeout=WAIT), KeyboardInterrupt)
        core = handle._run.core
        assert core.wait(WAIT)
        statuses = [NodeStatus(int(s)) for s in core.statuses()]
        assert all(s in TERMINAL for s in statuses), statuses
        assert statuses[1] is NodeStatus.CANCELLED
        assert statuses[3] in (NodeStatus.SKIPPED, NodeStatus.CANCELLED)
        assert statuses[2] is NodeStatus.CANCELLED
        assert eng.run(WorkflowBuilder("again").add("x", lambda: 7).build()).output("x") == 7


# -- nested runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("outer_timeout", [None, 30.0], ids=["outer-plain", "outer-timeout"])
@pytest.mark.parametrize("inner_timeout", [None, 30.0], ids=["inner-plain", "inner-timeout"])
@pytest.mark.parametrize("workers", [1, 2])
def test_an_action_can_run_a_nested_workflow_on_the_same_engine(workers, inner_timeout, outer_timeout):
    eng = Engine(workers)
    token = CancellationToken()  # to unblock a deadlocked nested run, should there be one
    inner = (WorkflowBuilder("inner").add("x", lambda ctx: ctx.data["base"] + 1, timeout=inner_timeout)
             .add("y", lambda ctx: ctx.input("x") * 2, depends_on="x").build())

    def nest(ctx):
        return eng.run(inner, data={"base": ctx.input("seed")}, cancel=token).output("y")

    b = WorkflowBuilder("outer").add("seed", lambda: 10)
    for i in range(3):
        b.add(f"nest{i}", nest, depends_on="seed", timeout=outer_timeout)
    b.add("total", lambda ctx: sum(ctx.inputs.values()), depends_on=[f"nest{i}" for i in range(3)])
    try:
        handle = eng.submit(b.build())
        try:
            result = handle.result(timeout=3.0)
        except cf.TimeoutError:
            pytest.fail("a nested run on the same engine deadlocked")
        assert result.output("total") == 3 * 22
    finally:
        token.cancel("test cleanup")
        eng.close()


def test_nested_runs_in_serial_mode():
    with Engine(1, executor="serial") as eng:
        inner = WorkflowBuilder("inner").add("x", lambda: 5).build()
        outer = WorkflowBuilder("outer").add("o", lambda: eng.run(inner).output("x") + 1).build()
        assert eng.run(outer).output("o") == 6


# -- concurrency and load -------------------------------------------------------------------------------


def _diamond() -> Workflow:
    return (WorkflowBuilder("diamond")
            .add("a", lambda ctx: ctx.data["x"])
            .add("b", lambda ctx: ctx.input("a") * 2, depends_on="a")
            .add("c", lambda ctx: ctx.input("a") + 3, depends_on="a")
            .add("d", lambda ctx: (ctx.input("b"), ctx.input("c"), ctx.data["x"]), depends_on=["b", "c"])
            .build())


def test_the_same_workflow_runs_concurrently_from_many_threads():
    wf = _diamond()
    threads, runs = 16, 15
    barrier = threading.Barrier(threads)
    failures = []

    def client(t):
        barrier.wait(WAIT)
        for r in range(runs):
            x = t * 1000 + r
            result = eng.run(wf, data={"x": x})
            if result.output("d") != (2 * x, x + 3, x):
                failures.append((x, result.outputs))

    with Engine(4) as eng:
        pool = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(60)
        assert not any(t.is_alive() for t in pool)
    assert failures == []


def test_a_thousand_concurrent_runs_on_one_engine():
    wf = _diamond()
    with Engine(4) as eng:
        handles = [eng.submit(wf, data={"x": i}) for i in range(1000)]
        results = [h.result(timeout=60) for h in handles]
    assert all(r.ok for r in results)
    assert [r.output("d") for r in results] == [(2 * i, i + 3, i) for i in range(1000)]
    assert len({r.run_id for r in results}) == 1000


def test_fifty_threads_by_twenty_runs_with_failures_and_retries():
    attempts = WorkflowData()

    def flaky(ctx):
        key = f"{ctx.run_id}"
        if attempts.increment(key) == 1:
            raise ValueError("first attempt fails")
        return ctx.data["x"]

    def bad(ctx):
        if ctx.data["x"] % 3 == 0:
            raise KeyError(ctx.data["x"])
        return 1

    wf = (WorkflowBuilder("mixed").add("flaky", flaky, retries=1)
          .add("bad", bad).add("sum", lambda ctx: ctx.input("flaky") + ctx.input("bad"), depends_on=["flaky", "bad"])
          .build())
    outcomes = {}
    lock = threading.Lock()

    def client(t):
        for r in range(20):
            x = t * 20 + r
            result = eng.run(wf, data={"x": x}, continue_on_error=True, raise_on_failure=False)
            with lock:
                outcomes[x] = result

    with Engine(4) as eng:
        pool = [threading.Thread(target=client, args=(t,)) for t in range(50)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(60)
    assert len(outcomes) == 1000
    for x, result in outcomes.items():
        assert_terminal(result)
        assert result.output("flaky") == x and result.attempts[0] == 2
        if x % 3 == 0:
            assert result.status is RunStatus.FAILED and result.status_of("sum") is NodeStatus.SKIPPED
        else:
            assert result.ok and result.output("sum") == x + 1


@pytest.mark.parametrize("shape", ["roots", "fan-out"])
@pytest.mark.parametrize("timeout", [None, 30.0], ids=["plain", "with-timeouts"])
def test_max_workers_ready_nodes_run_at_once(shape, timeout):
    """Engine(4): four ready nodes that must meet (a barrier of 4) all run at the same time."""
    workers = 4
    barrier = threading.Barrier(workers)

    def meet():
        barrier.wait(2.0)
        return "met"

    b = WorkflowBuilder("meet")
    if shape == "fan-out":
        b.add("root", lambda: None)
    for i in range(workers):
        b.add(f"m{i}", meet, timeout=timeout, depends_on="root" if shape == "fan-out" else ())
    with Engine(workers) as eng:
        result = eng.run(b.build(), continue_on_error=True, raise_on_failure=False)
    assert result.ok, f"ready nodes did not run in parallel: {result.errors}"


def test_max_concurrency_limits_the_nodes_running_at_once():
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work(ctx):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        ctx.wait(0.01)
        with lock:
            running[0] -= 1

    wf = Workflow.from_arrays("wide", [f"n{i}" for i in range(24)], [], [], work)
    with Engine(8) as eng:
        result = eng.run(wf, max_concurrency=2)
    assert result.ok and 1 <= peak[0] <= 2


# -- lifecycle and bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: Engine(2), lambda: Engine(1, executor="serial"),
                                  lambda: Engine(2, executor=cf.ThreadPoolExecutor(2))],
                         ids=["threads", "serial", "user-pool"])
def test_a_closed_engine_refuses_runs(make):
    eng = make()
    wf = WorkflowBuilder("w").add("a", lambda: 1).build()
    assert eng.run(wf).ok
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineClosedError):
        eng.run(wf)
    with pytest.raises(EngineClosedError):
        eng.submit(wf)


def test_the_context_manager_closes_the_engine():
    wf = WorkflowBuilder("w").add("a", lambda: 1).build()
    with Engine(2) as eng:
        assert eng.run(wf).output("a") == 1
    with pytest.raises(EngineClosedError):
        eng.run(wf)


def test_a_user_pool_is_not_shut_down_by_the_engine():
    pool = cf.ThreadPoolExecutor(2)
    try:
        with Engine(2, executor=pool) as eng:
            assert eng.run(WorkflowBuilder("w").add("a", lambda: 1).build()).ok
        assert pool.submit(lambda: 5).result(timeout=WAIT) == 5
    finally:
        pool.shutdown()


@pytest.mark.parametrize("kind", ["threads-1", "serial"])
def test_closing_the_engine_lets_a_run_waiting_to_retry_finish(kind):
    """close(): "runs already going on finish first" -- including one in a retry back-off."""
    failed = threading.Event()

    def flaky(ctx):
        if ctx.attempt == 1:
            failed.set()
            raise ValueError("first attempt")
        return "second"

    wf = WorkflowBuilder("w").add("flaky", flaky, retries=1, retry_delay=0.3).build()
    eng = ENGINES[kind]()
    handle = eng.submit(wf)
    try:
        assert failed.wait(WAIT)
        closer = threading.Thread(target=eng.close, daemon=True)
        closer.start()
        try:
            result = handle.result(timeout=3.0)
        except cf.TimeoutError:
            pytest.fail("closing the engine stranded a run waiting for its retry")
        assert result.output("flaky") == "second"
        closer.join(WAIT)
        assert not closer.is_alive()
    finally:
        handle.cancel("test cleanup")


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["plain", "with-timeouts"])
def test_closing_the_engine_lets_a_running_run_fan_out_and_finish(timeout):
    """close() while a node runs; when it completes, its dependents must still run."""
    started, go = threading.Event(), threading.Event()

    def first():
        started.set()
        assert go.wait(WAIT)
        return 1

    b = WorkflowBuilder("w").add("first", first, timeout=timeout)
    for i in range(4):
        b.add(f"next{i}", lambda ctx: ctx.input("first") + 1, depends_on="first")
    eng = Engine(2)
    handle = eng.submit(b.build())
    try:
        assert started.wait(WAIT)
        closer = threading.Thread(target=eng.close, daemon=True)
        closer.start()
        closer.join(0.1)  # close() is now waiting for the run's threads
        go.set()
        try:
            result = handle.result(timeout=3.0)
        except cf.TimeoutError:
            pytest.fail("closing the engine stranded a running run")
        assert result.ok and result.outputs == {"first": 1, **{f"next{i}": 2 for i in range(4)}}
        closer.join(WAIT)
        assert not closer.is_alive()
    finally:
        go.set()
        handle.cancel("test cleanup")


@pytest.mark.parametrize("kwargs", [
    {"max_workers": 0}, {"max_workers": -1}, {"max_workers": True}, {"max_workers": 1.5}, {"max_workers": "2"},
    {"executor": "bogus"}, {"executor": 42}, {"executor": object()}, {"executor": cf.ThreadPoolExecutor},
])
def test_bad_engine_arguments(kwargs):
    with pytest.raises(DefinitionError):
        Engine(**kwargs)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_bad_max_concurrency(value):
    wf = WorkflowBuilder("w").add("a", lambda: 1).build()
    with Engine(2) as eng:
        with pytest.raises(DefinitionError):
            eng.run(wf, max_concurrency=value)
        with pytest.raises(DefinitionError):
            eng.submit(wf, max_concurrency=value)
        assert eng.run(wf, max_concurrency=1).ok


def test_running_something_that_is_not_a_workflow():
    with Engine(1) as eng:
        for bad in (None, "w", WorkflowBuilder("w").add("a", lambda: 1)):
            with pytest.raises(DefinitionError):
                eng.run(bad)


def test_two_required_parameters_is_a_definition_error_naming_the_node():
    def needs_two(ctx, other):
        return None

    builder = WorkflowBuilder("w").add("ok", lambda: 1).add("needs_two", needs_two, depends_on="ok")
    with pytest.raises(DefinitionError, match="node 'needs_two': parameter 'other'"):
        builder.build()  # refused at build time, naming the node and the parameter
    with Engine(2) as eng:
        assert eng.run(WorkflowBuilder("w2").add("ok", lambda: 1).build()).ok
