"""Fixed costs of a run, by behaviour (never by wall time): helpers leave runs that have
nothing to start and serve other runs; tiny runs back to back pile up no helper tasks
and keep no finished run alive; a deadline costs no timer entry per attempt and leaves
nothing behind when the attempt ends; results decode their arrays lazily."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import numpy as np
import pytest

from flow_orchestrator import Engine, NodeStatus, Workflow, WorkflowBuilder
from flow_orchestrator import _ext
from flow_orchestrator.workflow import NodeOptions

# Safety nets only: a broken engine fails the test after this long instead of hanging.
PATIENCE = 20.0


def _diamond() -> Workflow:
    return Workflow.from_arrays("diamond", [f"n{i}" for i in range(6)], np.array([0, 0, 0, 0, 1, 2, 3, 4]),
                                np.array([1, 2, 3, 4, 5, 5, 5, 5]), lambda: None)


def _chain(n: int, options: NodeOptions | None = None) -> Workflow:
    return Workflow.from_arrays("chain", [f"n{i}" for i in range(n)], np.arange(n - 1), np.arange(1, n),
                                lambda: None, options)


def _wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    done = threading.Event()
    for _ in range(int(PATIENCE / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"never happened: {what}")


def _live_cores() -> int:
    gc.collect()
    return sum(isinstance(o, _ext.RunCore) for o in gc.get_objects())


def test_a_helper_leaves_a_run_with_nothing_to_start_for_another_run():
    # Engine(2): two pool threads, one helper a run.  Runs A1 and A2 each hold their
    # driver in a long node while a helper ran their short node; then nothing can start
    # in them.  Run B needs two nodes at once (a barrier): it only completes if a helper
    # left A1 or A2 and came to B.  Helpers parked in A1 and A2 until they end would
    # leave B's second node queued and break the barrier.
    release = threading.Event()
    barrier = threading.Barrier(2, timeout=PATIENCE)
    shorts = [threading.Event(), threading.Event()]

    def run_a(i: int) -> Workflow:
        return (WorkflowBuilder(f"a{i}").add("root", lambda: None)
                .add("long", lambda: release.wait(2 * PATIENCE), depends_on="root")
                .add("short", shorts[i].set, depends_on="root").build())

    b = (WorkflowBuilder("b").add("root", lambda: None)
         .add("x", barrier.wait, depends_on="root").add("y", barrier.wait, depends_on="root").build())
    with Engine(2) as engine:
        handles = [engine.submit(run_a(i)) for i in range(2)]
        for event in shorts:
            assert event.wait(PATIENCE)
        try:
            result = engine.submit(b).result(PATIENCE)
        finally:
            release.set()
        assert result.ok
        assert all(h.result(PATIENCE).ok for h in handles)


def test_helpers_come_back_when_work_appears():
    # Layers of two nodes that must run at once: after every layer the helper has
    # nothing to start and leaves; the next layer must bring one back.
    barriers = [threading.Barrier(2, timeout=PATIENCE) for _ in range(5)]
    flow = WorkflowBuilder("layers")
    previous: tuple[str, ...] = ()
    for i, barrier in enumerate(barriers):
        flow.add(f"x{i}", barrier.wait, depends_on=previous).add(f"y{i}", barrier.wait, depends_on=previous)
        flow.add(f"join{i}", lambda: None, depends_on=(f"x{i}", f"y{i}"))
        previous = (f"join{i}",)
    with Engine(2) as engine:
        assert engine.run(flow.build()).ok


def test_tiny_runs_back_to_back_pile_up_no_helper_tasks():
    wf = _diamond()
    with Engine(2) as engine:
        engine.run(wf)
        pool = engine._pool()
        queued = []
        for i in range(10_000):
            engine.run(wf)
            if i % 500 == 0:
                queued.append(pool._work_queue.qsize())  # type: ignore[attr-defined]
        # At most one helper task per pool thread exists at any time, and none holds a run.
        assert max(queued) <= engine.max_workers
        assert engine._crew.posted == 0
        assert _live_cores() <= 4 + 1  # the arena pool, and the one a helper may hold right now
        _wait_until(lambda: engine._crew.helpers == 0, "helper tasks return their threads")
        assert pool._work_queue.qsize() == 0  # type: ignore[attr-defined]
        assert _live_cores() <= 4


def test_a_finished_run_is_not_held_by_the_board():
    wf = _diamond()
    with Engine(2) as engine:
        handle = engine.submit(wf)
        assert handle.result(PATIENCE).ok
        assert engine._crew.posted == 0


@pytest.mark.parametrize("n", [1_000])
def test_deadlines_leave_no_timer_entry_behind(n):
    wf = _chain(n, NodeOptions(timeout=3600))
    with Engine(2) as engine:
        for _ in range(5):
            result = engine.run(wf)
            assert result.ok, result.summary()
            # No live entry once the run ended, and inert ones are reclaimed (not one per
            # attempt, nor one per run forever).
            assert engine._timer.pending() == 0, engine._timer._heap
        assert engine._timer.entries() <= 70, engine._timer.entries()


def test_deadline_memory_does_not_grow_across_runs():
    wf = _chain(20_000, NodeOptions(timeout=3600))
    with Engine(2) as engine:
        for _ in range(3):
            engine.run(wf)
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5):
                engine.run(wf)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    # One timer entry a node kept until its deadline would be 3 to 4 MB a run (20 MB
    # here).  What may legitimately appear: a second pooled arena (about 1 MB), when a
    # run starts while a helper is still leaving the previous one.
    assert grown < 3_000_000


def test_an_earlier_deadline_rearms_the_runs_timer():
    # The first node arms the run's timer an hour ahead; the second, with a short
    # timeout, must move it earlier, or it would never time out.
    def slow(ctx):  # type: ignore[no-untyped-def]
        ctx.wait(PATIENCE)

    wf = (WorkflowBuilder("rearm").add("first", lambda: None, timeout=3600)
          .add("second", slow, timeout=0.05, depends_on="first").build())
    with Engine(2) as engine:
        result = engine.run(wf, raise_on_failure=False)
    assert result.status_of("first") is NodeStatus.COMPLETED
    assert result.status_of("second") is NodeStatus.TIMED_OUT


def test_concurrent_deadlines_each_time_out():
    def slow(ctx):  # type: ignore[no-untyped-def]
        ctx.wait(PATIENCE)

    flow = WorkflowBuilder("many")
    for i in range(4):
        flow.add(f"slow{i}", slow, timeout=0.05 * (4 - i))
    with Engine(4) as engine:
        result = engine.run(flow.build(), raise_on_failure=False, continue_on_error=True)
        assert engine._timer.pending() == 0
    assert result.counts()[NodeStatus.TIMED_OUT] == 4


def test_result_arrays_are_decoded_lazily_and_agree_with_outputs():
    def boom():  # type: ignore[no-untyped-def]
        raise ValueError("boom")

    wf = (WorkflowBuilder("lazy").add("a", lambda: 1).add("b", boom, depends_on="a")
          .add("c", lambda: 3, depends_on="a").add("d", lambda: 4, depends_on="b").build())
    with Engine(2, continue_on_error=True) as engine:
        result = engine.run(wf, raise_on_failure=False)
        again = engine.run(wf, raise_on_failure=False)
    # Before any array is read, from the snapshot...
    assert [result.output(name, "-") for name in "abcd"] == [1, "-", 3, "-"]
    # ...and after.
    assert result.statuses.tolist() == [NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.COMPLETED,
                                        NodeStatus.SKIPPED]
    assert [again.output(name, "-") for name in "abcd"] == [1, "-", 3, "-"]
    assert result.attempts.tolist() == [1, 1, 1, 0]
    assert np.isnan(result.started[3]) and result.started[0] >= 0 and result.ended[0] >= result.started[0]
    assert not result.statuses.flags.writeable and not result.ended.flags.writeable
