"""Observers through the real engine: each hook is called exactly once per event, in
order for each node, on the thread the module documents; an observer that raises is
isolated; engine-level, run-level and scoped (``engine.observe``) registration."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from typing import Any, NamedTuple

import numpy as np
import pytest

from flow_orchestrator import CancellationToken, Engine, NodeStatus, RunStatus, WorkflowBuilder
from flow_orchestrator.errors import DefinitionError, NodeCancelledError, NodeTimeoutError
from flow_orchestrator.external import process_pool
from flow_orchestrator.observers import CallbackObserver, NodeEvent, Observer, RunEvent

TIMER_THREAD = "flow-orchestrator-timer"
NODE_HOOKS = ("start", "success", "failure", "retry", "skip", "cancel", "timeout")


# -- module-level actions (picklable for the process pool) ------------------------------------


def ok(ctx):
    return ctx.node


def fail(ctx):
    raise ValueError(f"{ctx.node} fails")


def flaky(ctx):
    if ctx.attempt == 1:
        raise ConnectionError(f"{ctx.node} attempt 1")
    return ctx.attempt


def give_up(ctx):
    raise NodeCancelledError("giving up")


def hang(ctx):
    """Waits (cooperatively) far past any timeout used here."""
    ctx.wait(30)


def hang_once(ctx):
    if ctx.attempt == 1:
        ctx.wait(30)
    return ctx.attempt


def leave(ctx):
    raise SystemExit(3)


# -- the recorder --------------------------------------------------------------------------------


class Seen(NamedTuple):
    hook: str  # "workflow_start", "workflow_finish" or one of NODE_HOOKS
    run_id: str
    node: str | None
    attempt: int | None
    thread: str
    event: Any


class Recorder(Observer):
    """Records every event it gets, with the thread that delivered it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []

    def _add(self, hook: str, event: RunEvent | NodeEvent) -> None:
        node = getattr(event, "node", None)
        attempt = getattr(event, "attempt", None)
        with self.lock:
            self.seen.append(Seen(hook, event.run_id, node, attempt, threading.current_thread().name, event))

    def on_workflow_start(self, event):
        self._add("workflow_start", event)

    def on_workflow_finish(self, event):
        self._add("workflow_finish", event)

    def on_node_start(self, event):
        self._add("start", event)

    def on_node_success(self, event):
        self._add("success", event)

    def on_node_failure(self, event):
        self._add("failure", event)

    def on_node_retry(self, event):
        self._add("retry", event)

    def on_node_skip(self, event):
        self._add("skip", event)

    def on_node_cancel(self, event):
        self._add("cancel", event)

    def on_node_timeout(self, event):
        self._add("timeout", event)

    def of_run(self, run_id: str) -> list[Seen]:
        return [s for s in self.seen if s.run_id == run_id]

    def trace(self, node: str, run_id: str | None = None) -> list[tuple[str, int]]:
        """``(hook, attempt)`` of every event of one node, in delivery order."""
        return [(s.hook, s.attempt) for s in self.seen
                if s.node == node and (run_id is None or s.run_id == run_id)]

    def one(self, hook: str, node: str | None = None) -> Seen:
        (found,) = [s for s in self.seen if s.hook == hook and s.node == node]
        return found


# -- executors -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processes():
    pool = process_pool(2)  # forkserver (Linux) or spawn: never fork this multi-threaded process
    list(pool.map(abs, [-1, -2]))  # start the workers now
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(params=["serial", "threads", "processes"])
def engine(request, processes):
    executor = {"serial": "serial", "threads": None, "processes": processes}[request.param]
    with Engine(2, executor=executor) as eng:
        yield eng


@pytest.fixture(params=["serial", "threads"])
def local_engine(request):
    """Executors where cooperative waits see a timeout (not the process pool)."""
    with Engine(2, executor="serial" if request.param == "serial" else None) as eng:
        yield eng


# -- one node, every outcome ------------------------------------------------------------------


def test_success_events_in_order(engine):
    wf = WorkflowBuilder("ok").add("a", ok).add("b", ok, depends_on="a").build()
    rec = Recorder()
    result = engine.run(wf, observers=[rec])
    assert [(s.hook, s.node, s.attempt) for s in rec.seen] == [
        ("workflow_start", None, None), ("start", "a", 1), ("success", "a", 1),
        ("start", "b", 1), ("success", "b", 1), ("workflow_finish", None, None)]
    assert {s.run_id for s in rec.seen} == {result.run_id}
    finish = rec.one("workflow_finish").event
    assert finish.result is result and finish.workflow == "ok"
    success = rec.one("success", "b").event
    assert success.node_id == 1 and success.workflow == "ok" and success.error is None
    assert isinstance(success.duration, float) and success.duration >= 0


def test_retry_comes_before_the_next_start(engine):
    wf = WorkflowBuilder("retry").add("a", flaky, retries=2).build()
    rec = Recorder()
    engine.run(wf, observers=[rec])
    assert rec.trace("a") == [("start", 1), ("retry", 1), ("start", 2), ("success", 2)]
    retry = rec.one("retry", "a").event
    assert isinstance(retry.error, ConnectionError) and retry.delay == 0.0


def test_retry_after_a_delay_reports_it(local_engine):
    wf = WorkflowBuilder("retry").add("a", flaky, retries=1, retry_delay=0.01).build()
    rec = Recorder()
    local_engine.run(wf, observers=[rec])
    assert rec.trace("a") == [("start", 1), ("retry", 1), ("start", 2), ("success", 2)]
    assert rec.one("retry", "a").event.delay == pytest.approx(0.01)


def test_retry_by_middleware_reports_the_error_that_caused_it(local_engine):
    from flow_orchestrator.middleware import retry

    calls = []

    def shaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first attempt")
        return 1

    wf = WorkflowBuilder("mw-retry").add("a", shaky, middleware=[retry(max_attempts=2, base_delay=0.0)]).build()
    rec = Recorder()
    local_engine.run(wf, observers=[rec])
    assert rec.trace("a") == [("start", 1), ("retry", 1), ("start", 2), ("success", 2)]
    assert isinstance(rec.one("retry", "a").event.error, ConnectionError)


def test_failure_then_skips(engine):
    wf = (WorkflowBuilder("fail").add("bad", fail).add("dep", ok, depends_on="bad")
          .add("dep2", ok, depends_on="dep").build())
    rec = Recorder()
    result = engine.run(wf, observers=[rec], raise_on_failure=False)
    assert result.status is RunStatus.FAILED
    assert rec.trace("bad") == [("start", 1), ("failure", 1)]
    assert rec.trace("dep") == [("skip", 0)] and rec.trace("dep2") == [("skip", 0)]
    hooks = [s.hook for s in rec.seen]
    assert hooks.index("failure") < hooks.index("skip")
    assert isinstance(rec.one("failure", "bad").event.error, ValueError)


def test_fail_fast_cancels_the_nodes_that_never_started():
    # Serial runs the roots in id order: "later" is still pending when "bad" fails.
    wf = WorkflowBuilder("failfast").add("bad", fail).add("later", ok).build()
    rec = Recorder()
    with Engine(1, executor="serial") as engine:
        result = engine.run(wf, observers=[rec], raise_on_failure=False)
    assert result.status_of("later") is NodeStatus.CANCELLED
    assert rec.trace("later") == [("cancel", 0)]


def test_an_action_giving_up_is_cancelled(engine):
    wf = WorkflowBuilder("give_up").add("quit", give_up).add("dep", ok, depends_on="quit").build()
    rec = Recorder()
    engine.run(wf, observers=[rec], raise_on_failure=False)
    assert [hook for hook, _ in rec.trace("quit")] == ["start", "cancel"]
    assert rec.trace("dep") == [("skip", 0)]


def test_a_node_cancelled_while_running_reports_its_attempt():
    # NodeEvent: "attempt is 0 for nodes that never ran (skip, cancel before start)".
    wf = WorkflowBuilder("give_up").add("quit", give_up).build()
    rec = Recorder()
    with Engine(1, executor="serial") as engine:
        engine.run(wf, observers=[rec], raise_on_failure=False)
    assert rec.trace("quit") == [("start", 1), ("cancel", 1)]


def test_a_run_cancelled_beforehand_only_cancels(engine):
    wf = WorkflowBuilder("cancelled").add("a", ok).add("b", ok, depends_on="a").add("c", ok).build()
    token = CancellationToken()
    token.cancel("before")
    rec = Recorder()
    result = engine.run(wf, observers=[rec], cancel=token, raise_on_failure=False)
    assert result.status is RunStatus.CANCELLED
    assert Counter(s.hook for s in rec.seen) == {"workflow_start": 1, "cancel": 3, "workflow_finish": 1}
    assert {s.node for s in rec.seen if s.hook == "cancel"} == {"a", "b", "c"}


def test_timeout_is_reported_by_the_timer_thread(local_engine):
    wf = WorkflowBuilder("timeout").add("slow", hang, timeout=0.05).add("dep", ok, depends_on="slow").build()
    rec = Recorder()
    result = local_engine.run(wf, observers=[rec], continue_on_error=True, raise_on_failure=False)
    assert result.status_of("slow") is NodeStatus.TIMED_OUT
    assert rec.trace("slow") == [("start", 1), ("timeout", 1)]
    assert rec.trace("dep") == [("skip", 0)]
    assert rec.one("timeout", "slow").thread == TIMER_THREAD
    # The skip is recorded by the thread that recorded the timeout upstream.
    assert rec.one("skip", "dep").thread == TIMER_THREAD


def test_a_timed_out_attempt_retried_by_the_timer_thread(local_engine):
    wf = WorkflowBuilder("timeout").add("slow", hang_once, timeout=0.05, retries=1).build()
    rec = Recorder()
    result = local_engine.run(wf, observers=[rec])
    assert result.output("slow") == 2
    assert rec.trace("slow") == [("start", 1), ("retry", 1), ("start", 2), ("success", 2)]
    retry = rec.one("retry", "slow")
    assert retry.thread == TIMER_THREAD and isinstance(retry.event.error, NodeTimeoutError)


def test_retries_that_all_time_out(local_engine):
    wf = WorkflowBuilder("timeout").add("slow", hang, timeout=0.03, retries=1).build()
    rec = Recorder()
    local_engine.run(wf, observers=[rec], raise_on_failure=False)
    assert rec.trace("slow") == [("start", 1), ("retry", 1), ("start", 2), ("timeout", 2)]


# -- threads of the run-level hooks ---------------------------------------------------------------


def test_run_hooks_are_called_by_the_thread_driving_the_run():
    wf = WorkflowBuilder("threads").add("a", ok).build()
    rec = Recorder()
    with Engine(2, observers=[rec]) as engine:
        engine.run(wf)
        handle = engine.submit(wf)
        handle.result(timeout=30)
    first, second = rec.of_run(rec.seen[0].run_id), rec.of_run(handle.run_id)
    assert {s.thread for s in (first[0], first[-1])} == {threading.main_thread().name}
    assert {s.thread for s in (second[0], second[-1])} == {f"flow-orchestrator-{handle.run_id}"}


def test_an_attempt_starts_and_ends_on_one_worker_thread():
    wf = WorkflowBuilder("workers").add("a", ok).add("b", flaky, retries=1).add("c", fail).build()
    rec = Recorder()
    with Engine(2) as engine:
        engine.run(wf, observers=[rec], continue_on_error=True, raise_on_failure=False)
    for node in ("a", "b", "c"):
        events = [s for s in rec.seen if s.node == node]
        assert len({s.thread for s in events}) == 1, events
        assert events[0].thread != TIMER_THREAD


# -- many threads ------------------------------------------------------------------------------------

VALID_TRACE = re.compile(r"(?:skip|(?:start retry )*(?:start (?:success|failure)|cancel))")
FINAL_HOOK = {"success": NodeStatus.COMPLETED, "failure": NodeStatus.FAILED,
              "skip": NodeStatus.SKIPPED, "cancel": NodeStatus.CANCELLED}


def big_workflow(n: int = 200, seed: int = 7):
    """A random layered DAG with failing nodes and flaky (retried once) nodes."""
    rng = np.random.default_rng(seed)
    flow = WorkflowBuilder("big")
    for i in range(n):
        deps = sorted({f"n{j}" for j in rng.integers(0, i, size=2)}) if i >= 10 else []
        if i % 41 == 17:
            flow.add(f"n{i}", fail, depends_on=deps)
        elif i % 7 == 3:
            flow.add(f"n{i}", flaky, depends_on=deps, retries=1)
        else:
            flow.add(f"n{i}", ok, depends_on=deps)
    return flow.build()


def check_run(seen: list[Seen], result) -> None:
    """The events of one run agree with its result: counts, per-node traces, attempts."""
    assert seen[0].hook == "workflow_start" and seen[-1].hook == "workflow_finish"
    hooks = Counter(s.hook for s in seen)
    counts = result.counts()
    attempts = int(result.attempts.sum())
    assert hooks["workflow_start"] == hooks["workflow_finish"] == 1
    assert hooks["start"] == attempts
    assert hooks["success"] == counts[NodeStatus.COMPLETED]
    assert hooks["failure"] == counts[NodeStatus.FAILED]
    assert hooks["skip"] == counts[NodeStatus.SKIPPED]
    assert hooks["cancel"] == counts[NodeStatus.CANCELLED]
    assert hooks["retry"] == attempts - hooks["success"] - hooks["failure"]
    assert hooks["timeout"] == 0
    by_node: dict[str, list[Seen]] = {}
    for s in seen[1:-1]:
        by_node.setdefault(s.node, []).append(s)
    assert len(by_node) == len(result.statuses)
    for node, events in by_node.items():
        check_node(events, result.status_of(node), int(result.attempts[result.workflow.interner.id(node)]))


def check_node(events: list[Seen], status: NodeStatus, attempts: int) -> None:
    trace = " ".join(s.hook for s in events)
    assert VALID_TRACE.fullmatch(trace), trace
    assert FINAL_HOOK[events[-1].hook] is status, (trace, status)
    starts = [s.attempt for s in events if s.hook == "start"]
    assert starts == list(range(1, attempts + 1)), (trace, attempts)
    for start, end in zip(events[::2], events[1::2]):
        if start.hook == "start":
            assert end.attempt == start.attempt, trace


def test_fifty_concurrent_runs_of_two_hundred_nodes():
    wf = big_workflow()
    shared = Recorder()
    own = [Recorder() for _ in range(50)]
    with Engine(8, observers=[shared]) as engine:
        handles = [engine.submit(wf, observers=[rec], continue_on_error=i % 2 == 0, raise_on_failure=False)
                   for i, rec in enumerate(own)]
        results = [handle.result(timeout=120) for handle in handles]
    assert len({r.run_id for r in results}) == 50
    assert {s.run_id for s in shared.seen} == {r.run_id for r in results}
    for result, rec in zip(results, own):
        assert {s.run_id for s in rec.seen} == {result.run_id}
        check_run(shared.of_run(result.run_id), result)
        check_run(rec.seen, result)
    fail_fast = [r for i, r in enumerate(results) if i % 2]
    assert sum(r.counts()[NodeStatus.CANCELLED] for r in fail_fast) > 0
    assert all(r.status is RunStatus.FAILED for r in results)


# -- isolation ----------------------------------------------------------------------------------------


class Raising(Observer):
    """Raises in every hook."""

    def __init__(self) -> None:
        self.calls = 0

    def _boom(self, event):
        self.calls += 1
        raise RuntimeError("observer bug")

    on_workflow_start = on_workflow_finish = _boom
    on_node_start = on_node_success = on_node_failure = on_node_retry = _boom
    on_node_skip = on_node_cancel = on_node_timeout = _boom


def test_an_observer_that_raises_is_logged_and_isolated(caplog):
    wf = (WorkflowBuilder("isolated").add("a", flaky, retries=1).add("b", fail)
          .add("c", ok, depends_on="b").build())
    bad, before, after = Raising(), Recorder(), Recorder()
    caplog.set_level(logging.ERROR, logger="flow_orchestrator.observers")
    with Engine(1, executor="serial", observers=[before, bad]) as engine:
        result = engine.run(wf, observers=[after], continue_on_error=True, raise_on_failure=False)
    assert result.status_of("a") is NodeStatus.COMPLETED and result.status_of("c") is NodeStatus.SKIPPED
    assert [s.hook for s in before.seen] == [s.hook for s in after.seen]
    # workflow start; a: start, retry, start, success; b: start, failure; c: skip; finish
    assert len(after.seen) == bad.calls == 9
    records = [r for r in caplog.records if r.name == "flow_orchestrator.observers"]
    assert len(records) == bad.calls
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in records)


def test_a_raising_observer_does_not_break_threaded_runs(caplog):
    caplog.set_level(logging.CRITICAL, logger="flow_orchestrator.observers")
    rec = Recorder()
    wf = big_workflow(seed=3)
    with Engine(4, observers=[Raising(), rec]) as engine:
        result = engine.run(wf, continue_on_error=True, raise_on_failure=False)
    check_run(rec.seen, result)


# -- registration ------------------------------------------------------------------------------------


def test_engine_level_observers_see_every_run_run_level_only_theirs():
    wf = WorkflowBuilder("scopes").add("a", ok).build()
    engine_rec, run_rec = Recorder(), Recorder()
    with Engine(2, observers=[engine_rec]) as engine:
        first = engine.run(wf, observers=[run_rec])
        second = engine.run(wf)
    assert {s.run_id for s in engine_rec.seen} == {first.run_id, second.run_id}
    assert {s.run_id for s in run_rec.seen} == {first.run_id}
    assert [s.hook for s in run_rec.seen] == [s.hook for s in engine_rec.of_run(first.run_id)]


def test_add_and_remove_observer():
    wf = WorkflowBuilder("scopes").add("a", ok).build()
    rec = Recorder()
    with Engine(1, executor="serial") as engine:
        engine.run(wf)
        engine.add_observer(rec)
        seen = engine.run(wf)
        engine.remove_observer(rec)
        engine.run(wf)
    assert {s.run_id for s in rec.seen} == {seen.run_id}


def test_observe_context_manager_scope():
    wf = WorkflowBuilder("scopes").add("a", ok).build()
    rec = Recorder()
    with Engine(1, executor="serial") as engine:
        engine.run(wf)
        with engine.observe(rec) as observed:
            assert observed is rec
            inside = engine.run(wf)
        engine.run(wf)
        with pytest.raises(KeyError), engine.observe(rec):
            raise KeyError("leaves the block")
        engine.run(wf)
    assert {s.run_id for s in rec.seen} == {inside.run_id}


def test_a_run_going_on_keeps_an_observer_removed_meanwhile():
    gate, started = threading.Event(), threading.Event()

    def wait_for_gate():
        started.set()
        assert gate.wait(30)

    wf = WorkflowBuilder("keeps").add("a", wait_for_gate).add("b", ok, depends_on="a").build()
    rec = Recorder()
    with Engine(2) as engine:
        with engine.observe(rec):
            handle = engine.submit(wf)
            assert started.wait(30)
        gate.set()
        result = handle.result(timeout=30)
    assert [(s.hook, s.node) for s in rec.seen] == [
        ("workflow_start", None), ("start", "a"), ("success", "a"), ("start", "b"), ("success", "b"),
        ("workflow_finish", None)]
    assert {s.run_id for s in rec.seen} == {result.run_id}


def test_only_observers_are_accepted():
    wf = WorkflowBuilder("w").add("a", ok).build()
    with pytest.raises(DefinitionError, match="Observer"):
        Engine(1, observers=[lambda event: None])
    with Engine(1, executor="serial") as engine:
        with pytest.raises(DefinitionError, match="Observer"):
            engine.add_observer(print)
        with pytest.raises(DefinitionError, match="Observer"):
            engine.run(wf, observers=[object()])
        assert engine.run(wf).ok


def test_the_base_observer_is_a_no_op():
    wf = WorkflowBuilder("w").add("a", ok).add("b", fail).build()
    with Engine(2, observers=[Observer()]) as engine:
        result = engine.run(wf, observers=[Observer()], raise_on_failure=False)
    assert result.status is RunStatus.FAILED


def test_every_run_that_starts_also_finishes_even_when_interrupted():
    # A run interrupted by SystemExit (or Ctrl-C) from an action ends CANCELLED with a
    # result; observers that saw it start must see it finish, or they leak its state.
    wf = WorkflowBuilder("interrupted").add("a", leave).build()
    rec = Recorder()
    with Engine(1, executor="serial") as engine, pytest.raises(SystemExit) as info:
        engine.run(wf, observers=[rec])
    assert info.value.result.status is RunStatus.CANCELLED
    assert [s.hook for s in rec.seen] == ["workflow_start", "start", "cancel", "workflow_finish"]
    assert rec.seen[-1].event.result.status is RunStatus.CANCELLED


# -- CallbackObserver ---------------------------------------------------------------------------------


def test_callback_observer_calls_only_the_given_hooks():
    failures: list[NodeEvent] = []
    finished: list[RunEvent] = []
    observer = CallbackObserver(on_node_failure=failures.append, on_workflow_finish=finished.append)
    wf = WorkflowBuilder("cb").add("a", ok).add("b", fail).add("c", fail).build()
    with Engine(1, executor="serial") as engine:
        result = engine.run(wf, observers=[observer], continue_on_error=True, raise_on_failure=False)
    assert sorted(event.node for event in failures) == ["b", "c"]
    assert all(isinstance(event.error, ValueError) for event in failures)
    assert [event.result for event in finished] == [result]


@pytest.mark.parametrize("hooks, message", [
    ({"on_node_explode": print}, "unknown observer hook"),
    ({"node_start": print}, "unknown observer hook"),
    ({"on_node_start": "not callable"}, "must be callable"),
])
def test_callback_observer_validates_its_hooks(hooks, message):
    with pytest.raises(TypeError, match=message):
        CallbackObserver(**hooks)
