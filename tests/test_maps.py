"""Map nodes: one item per element of a dependency's output, scheduled by the core."""

from __future__ import annotations

import threading
import time

import pytest

import flow_orchestrator as fo
from flow_orchestrator.errors import DefinitionError, MapItemError, UnknownNodeError
from flow_orchestrator.status import NodeStatus

from engine_helpers import assert_terminal


@pytest.fixture(params=["threads", "serial"])
def engine(request):
    with fo.Engine(3, executor=None if request.param == "threads" else "serial") as e:
        yield e


def simple(action, elements=range(10), **options):
    flow = fo.WorkflowBuilder("maps")
    flow.add("source", lambda: elements)
    flow.map("each", action, over="source", **options)
    flow.add("total", lambda each: each, depends_on="each")
    return flow.build()


def test_a_map_runs_once_per_element_and_outputs_the_list_in_order(engine):
    result = engine.run(simple(lambda x: x * x, range(1000)))
    assert result.ok
    assert result.output("each") == [x * x for x in range(1000)]
    assert result.output("total") == result.output("each")
    items = result.items("each")
    assert len(items) == 1000 and items.counts()[NodeStatus.COMPLETED] == 1000
    assert items.attempts.tolist() == [1] * 1000
    assert (items.ended >= items.started).all()
    assert "1000 completed" in repr(items)


@pytest.mark.parametrize("make, expected", [(lambda: iter([1, 2, 3]), [1, 2, 3]), (lambda: (1, 2), [1, 2]),
                                            (lambda: {1: "a", 2: "b"}, [1, 2]), (lambda: "ab", ["a", "b"]),
                                            (lambda: (x for x in range(3)), [0, 1, 2]), (list, [])])
def test_any_iterable_expands(engine, make, expected):
    flow = fo.WorkflowBuilder("iterables")
    flow.add("source", make)
    flow.map("each", lambda x: x, over="source")
    assert engine.run(flow.build()).output("each") == expected


def test_an_output_that_is_not_iterable_fails_the_map(engine):
    result = engine.run(simple(lambda x: x, 42), raise_on_failure=False)
    assert result.status_of("each") is NodeStatus.FAILED
    assert "not iterable: int" in str(result.error("each"))
    assert len(result.items("each")) == 0
    assert result.skip_reason("total") == "dependency failed"


def test_items_take_the_context_and_dependencies_by_name(engine):
    flow = fo.WorkflowBuilder("named")
    flow.add("config", lambda: {"factor": 3})
    flow.add("files", lambda: ["a", "bb", "ccc"])
    seen = []

    def process(path, config, ctx):
        seen.append((ctx.node, ctx.item, ctx.element, ctx.attempt))
        return len(path) * config["factor"]

    flow.map("sizes", process, over="files", depends_on="config")
    result = engine.run(flow.build())
    assert result.output("sizes") == [3, 6, 9]
    assert sorted(seen) == [("sizes", 0, "a", 1), ("sizes", 1, "bb", 1), ("sizes", 2, "ccc", 1)]


def test_the_map_decorator_infers_the_other_dependencies(engine):
    flow = fo.WorkflowBuilder("deco")

    @flow.node
    def files():
        return ["x", "yy"]

    @flow.node
    def suffix():
        return "!"

    @flow.map(over="files")
    def shout(path, suffix):
        return path.upper() + suffix

    @flow.node
    def joined(shout):
        return "".join(shout)

    wf = flow.build()
    assert wf.kind("shout") == "map" and wf.map_over("shout") == "files"
    assert set(wf.dependencies("shout")) == {"files", "suffix"}
    assert engine.run(wf).output("joined") == "X!YY!"


def test_a_map_action_must_take_the_element():
    flow = fo.WorkflowBuilder("bad")
    flow.add("source", lambda: [1])
    flow.map("each", lambda: 1, over="source")
    with pytest.raises(DefinitionError, match="must take the element"):
        flow.build()
    flow = fo.WorkflowBuilder("bad")
    flow.map("each", lambda x: 1, over="nowhere")
    with pytest.raises(UnknownNodeError, match="nowhere"):
        flow.build()
    flow = fo.WorkflowBuilder("bad")
    flow.add("source", lambda: [1])
    with pytest.raises(DefinitionError, match="max_concurrency"):
        flow.map("each", lambda x: 1, over="source", max_concurrency=0)


def test_items_retry_on_their_own(engine):
    def flaky(x, ctx):
        if x % 3 == 0 and ctx.attempt == 1:
            raise ConnectionError("once")
        return x

    result = engine.run(simple(flaky, range(30), retries=1))
    assert result.ok and result.output("each") == list(range(30))
    attempts = result.items("each").attempts.tolist()
    assert attempts == [2 if x % 3 == 0 else 1 for x in range(30)]


def test_an_item_retry_with_a_delay_waits_on_the_timer():
    def flaky(x, ctx):
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return x

    with fo.Engine(2) as engine:
        started = time.perf_counter()
        result = engine.run(simple(flaky, range(5), retries=1, retry_delay=0.05))
    assert result.ok and result.output("each") == list(range(5))
    assert time.perf_counter() - started >= 0.05


def test_fail_fast_stops_the_map_and_the_run(engine):
    ran = []

    def step(x):
        ran.append(x)
        if x == 5:
            raise ValueError("five")
        return x

    flow = fo.WorkflowBuilder("ff")
    flow.add("source", lambda: range(10_000))
    flow.map("each", step, over="source")
    flow.add("after", lambda each: 1, depends_on="each")
    flow.add("report", lambda: "reported", depends_on="each", trigger="all_done")
    result = engine.run(flow.build(), raise_on_failure=False)
    assert_terminal(result)
    assert result.status is fo.RunStatus.FAILED
    error = result.error("each")
    assert isinstance(error, MapItemError) and isinstance(error.__cause__, ValueError)
    assert "item 5: ValueError: five" in str(error)
    items = result.items("each")
    assert items.status(5) is NodeStatus.FAILED and items.failed() == [5]
    assert items.counts()[NodeStatus.CANCELLED] > 0 and len(ran) < 10_000
    assert result.skip_reason("after") == "dependency failed"
    assert result.output("report") == "reported"
    with pytest.raises(fo.WorkflowFailedError):
        result.raise_for_status()


def test_continue_on_error_runs_every_other_item(engine):
    def step(x):
        if x % 100 == 7:
            raise ValueError(x)
        return x

    result = engine.run(simple(step, range(1000), continue_on_error=True), raise_on_failure=False)
    items = result.items("each")
    assert items.failed() == [x for x in range(1000) if x % 100 == 7]
    assert items.counts()[NodeStatus.COMPLETED] == 990
    assert items.outputs[8] == 8 and items.outputs[7] is None
    assert isinstance(items.errors[107], ValueError)
    assert result.status_of("each") is NodeStatus.FAILED and "10 of 1000 item(s)" in str(result.error("each"))


def test_max_concurrency_bounds_the_items_running_at_once():
    lock = threading.Lock()
    now = [0]
    most = [0]

    def step(x):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.002)
        with lock:
            now[0] -= 1
        return x

    with fo.Engine(6) as engine:
        result = engine.run(simple(step, range(60), max_concurrency=2))
        assert result.ok and most[0] <= 2
        most[0] = 0
        result = engine.run(simple(step, range(60)))
        assert result.ok and most[0] > 2


def test_item_timeouts_time_out_items_not_the_run():
    def step(x, ctx):
        if x == 3 and ctx.attempt == 1:
            ctx.wait(2)
        return x

    with fo.Engine(3) as engine:
        started = time.perf_counter()
        result = engine.run(simple(step, range(8), timeout=0.1, retries=1))
        assert result.ok and result.output("each") == list(range(8))
        assert result.items("each").attempts[3] == 2
        result = engine.run(simple(step, range(8), timeout=0.1), raise_on_failure=False)
        items = result.items("each")
        assert items.status(3) is NodeStatus.TIMED_OUT
        assert_terminal(result)
        assert time.perf_counter() - started < 2


def test_middleware_wraps_every_item(engine):
    calls = []

    def middleware(action):
        def wrapped(ctx):
            calls.append(ctx.element)
            return action(ctx) + 1
        return wrapped

    result = engine.run(simple(lambda x: x * 10, range(5), middleware=(middleware,)))
    assert result.output("each") == [1, 11, 21, 31, 41] and sorted(calls) == list(range(5))


def test_a_cancelled_run_cancels_the_items_left():
    token = fo.CancellationToken()
    started = threading.Event()

    def step(x, ctx):
        started.set()
        ctx.wait(0.01)
        return x

    with fo.Engine(2) as engine:
        handle = engine.submit(simple(step, range(100_000)), cancel=token, raise_on_failure=False)
        assert started.wait(5)
        token.cancel("enough")
        result = handle.result(10)
    assert result.status is fo.RunStatus.CANCELLED
    assert_terminal(result)
    items = result.items("each")
    assert items.counts()[NodeStatus.CANCELLED] > 0 and result.status_of("each") is NodeStatus.CANCELLED


def test_other_executors_refuse_maps():
    with fo.Engine(2, executor="processes") as engine:
        with pytest.raises(DefinitionError, match="map nodes"):
            engine.run(simple(abs, [1]))


def test_a_map_after_a_branch_and_a_join(engine):
    flow = fo.WorkflowBuilder("mixed")
    flow.add("n", lambda: 4)
    flow.branch("route", lambda n: "many" if n > 2 else "few", depends_on="n")
    flow.add("many", lambda n: list(range(n)), depends_on=["route", "n"])
    flow.add("few", lambda: [0], depends_on="route")
    flow.map("double", lambda x: 2 * x, over="many")
    flow.add("join", lambda ctx: ctx.inputs, depends_on=["double", "few"], trigger="none_failed")
    result = engine.run(flow.build())
    assert result.ok and result.output("join") == {"double": [0, 2, 4, 6], "few": None}


def test_a_big_map_runs_in_the_core():
    with fo.Engine(2) as engine:
        result = engine.run(simple(lambda x: x, range(200_000)))
    assert result.ok and len(result.output("each")) == 200_000
    assert result.output("each")[-1] == 199_999
