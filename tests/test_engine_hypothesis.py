"""Property tests: random DAGs with random failing nodes, on every executor.

For a random DAG (``strategies.dags``) and a random set of failing nodes:

* every node ends in a terminal status;
* no node starts before every one of its dependencies has finished (a thread-safe log of
  starts and ends is checked against the edges);
* without retries each node runs at most once: exactly once if it COMPLETED or FAILED,
  never if it was SKIPPED or CANCELLED;
* SKIPPED is exactly the set of descendants of the FAILED nodes;
* with the run continuing on error the outcome is fully determined by the graph, so the
  serial, threaded and process executors agree on it (and on the outputs).
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow_orchestrator.engine import Engine
from flow_orchestrator.errors import NodeCancelledError, RunCancelledError, WorkflowFailedError
from flow_orchestrator.external import process_pool
from flow_orchestrator.status import TERMINAL, NodeStatus, RunStatus
from flow_orchestrator.workflow import NodeOptions, Workflow, WorkflowBuilder

from strategies import dags

MOD = 1_000_003


# -- module-level actions (picklable for the process pool) ------------------------------------------


def value_of(ctx, fail=False):
    """Output: own id + the sum of the dependencies' outputs (mod MOD); or raise."""
    if fail:
        raise ValueError(f"{ctx.node} fails")
    return (int(ctx.node[1:]) + sum(ctx.inputs.values())) % MOD


def flaky_value_of(ctx, flaky=False):
    if flaky and ctx.attempt == 1:
        raise ConnectionError(f"{ctx.node} first attempt")
    return (int(ctx.node[1:]) + sum(ctx.inputs.values())) % MOD


class Log:
    """Thread-safe log of ("start"|"end", node) events and call counts."""

    def __init__(self, n: int) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, int]] = []
        self.calls = [0] * n

    def action(self, node: int, fail: bool):
        def run(ctx):
            with self.lock:
                self.events.append(("start", node))
                self.calls[node] += 1
            try:
                return value_of(ctx, fail)
            finally:
                with self.lock:
                    self.events.append(("end", node))
        return run

    def positions(self) -> tuple[dict[int, int], dict[int, int]]:
        start, end = {}, {}
        for i, (kind, node) in enumerate(self.events):
            (start if kind == "start" else end)[node] = i
        return start, end


# -- graph helpers -----------------------------------------------------------------------------------------


def names_of(n: int) -> list[str]:
    return [f"n{i}" for i in range(n)]


def predecessors(n: int, src: np.ndarray, dst: np.ndarray) -> list[set[int]]:
    preds: list[set[int]] = [set() for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        preds[d].add(s)
    return preds


def descendants(n: int, src: np.ndarray, dst: np.ndarray, roots: set[int]) -> set[int]:
    succ: list[list[int]] = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        succ[s].append(d)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        for w in succ[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def expected_outcome(n, src, dst, failing: set[int]):
    """Statuses and outputs when the run continues on error (fully determined)."""
    skipped = descendants(n, src, dst, failing)
    preds = predecessors(n, src, dst)
    statuses, outputs = [], {}
    order = Workflow.from_arrays("order", names_of(n), src, dst, value_of).graph.topological_order().tolist()
    values: dict[int, int] = {}
    for v in order:
        if v in skipped:
            continue
        if v in failing:
            continue
        values[v] = (v + sum(values[p] for p in preds[v])) % MOD
    for v in range(n):
        if v in skipped:
            statuses.append(NodeStatus.SKIPPED)
        elif v in failing:
            statuses.append(NodeStatus.FAILED)
        else:
            statuses.append(NodeStatus.COMPLETED)
            outputs[f"n{v}"] = values[v]
    return statuses, outputs


@st.composite
def dags_with_failures(draw, max_nodes=25, max_edges=60):
    n, src, dst = draw(dags(max_nodes=max_nodes, max_edges=max_edges))
    failing = draw(st.sets(st.integers(0, n - 1), max_size=max(1, n // 4)))
    tolerant = draw(st.sets(st.integers(0, n - 1)))
    return n, src, dst, failing, tolerant


def check_log_against_edges(log: Log, src: np.ndarray, dst: np.ndarray) -> None:
    start, end = log.positions()
    for s, d in zip(src.tolist(), dst.tolist()):
        if d in start:
            assert s in end and end[s] < start[d], f"n{d} started before its dependency n{s} finished"


def check_common(result, log: Log, n, src, dst) -> None:
    statuses = [NodeStatus(int(s)) for s in result.statuses]
    assert all(s in TERMINAL for s in statuses), statuses
    check_log_against_edges(log, src, dst)
    for v, status in enumerate(statuses):
        ran = log.calls[v]
        if status in (NodeStatus.COMPLETED, NodeStatus.FAILED):
            assert ran == 1, (v, status, ran)
        else:
            assert ran == 0, (v, status, ran)
    failed = {v for v, s in enumerate(statuses) if s is NodeStatus.FAILED}
    skipped = {v for v, s in enumerate(statuses) if s is NodeStatus.SKIPPED}
    assert skipped == descendants(n, src, dst, failed)
    preds = predecessors(n, src, dst)
    for v, status in enumerate(statuses):
        if status is NodeStatus.COMPLETED or status is NodeStatus.FAILED:
            assert all(statuses[p] is NodeStatus.COMPLETED for p in preds[v])
    assert (result.attempts == np.array([log.calls[v] for v in range(n)])).all()
    assert np.isnan(result.started[[v for v in range(n) if log.calls[v] == 0]]).all()


# -- engines -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threads():
    eng = Engine(4)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def one_thread():
    eng = Engine(1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def serial():
    eng = Engine(1, executor="serial")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def processes():
    pool = process_pool(2)  # forkserver (Linux) or spawn: never fork this multi-threaded process
    list(pool.map(abs, [-1, -2]))  # start the workers now
    eng = Engine(2, executor=pool)
    yield eng
    eng.close()
    pool.shutdown(wait=True)


# -- properties -------------------------------------------------------------------------------------------


@given(graph=dags_with_failures())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_continue_on_error_outcome_is_determined_by_the_graph(threads, graph):
    n, src, dst, failing, _ = graph
    log = Log(n)
    wf = Workflow.from_arrays("random", names_of(n), src, dst, [log.action(v, v in failing) for v in range(n)])
    result = threads.run(wf, continue_on_error=True, raise_on_failure=False)
    check_common(result, log, n, src, dst)
    statuses, outputs = expected_outcome(n, src, dst, failing)
    assert [NodeStatus(int(s)) for s in result.statuses] == statuses
    assert result.outputs == outputs
    assert result.status is (RunStatus.FAILED if failing else RunStatus.COMPLETED)


@given(graph=dags_with_failures())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_fail_fast_with_some_tolerant_nodes(threads, graph):
    """Per-node continue_on_error (built with WorkflowBuilder: from_arrays has one options
    for all nodes), the run itself failing fast."""
    n, src, dst, failing, tolerant = graph
    log = Log(n)
    preds = predecessors(n, src, dst)
    b = WorkflowBuilder("random")
    for v in range(n):
        b.add(f"n{v}", log.action(v, v in failing), depends_on=[f"n{p}" for p in sorted(preds[v])],
              continue_on_error=v in tolerant)
    result = threads.run(b.build(), raise_on_failure=False)
    check_common(result, log, n, src, dst)
    statuses = [NodeStatus(int(s)) for s in result.statuses]
    failed = {v for v, s in enumerate(statuses) if s is NodeStatus.FAILED}
    assert failed <= failing
    if failing and not (failing - tolerant):
        # every failing node tolerates its failure: as if the run continued on error
        assert statuses == expected_outcome(n, src, dst, failing)[0]
    if not failing:
        assert result.ok and all(s is NodeStatus.COMPLETED for s in statuses)
    if not failed:
        assert NodeStatus.CANCELLED not in statuses and NodeStatus.SKIPPED not in statuses
    if any(s is NodeStatus.CANCELLED for s in statuses):
        assert failed - tolerant, "nodes were cancelled although no intolerant node failed"


@given(graph=dags(max_nodes=30, max_edges=80), data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None,
          max_examples=30)
def test_flaky_nodes_are_retried_once(threads, graph, data):
    n, src, dst = graph
    flaky_nodes = data.draw(st.sets(st.integers(0, n - 1)))
    actions = [functools.partial(flaky_value_of, flaky=v in flaky_nodes) for v in range(n)]
    wf = Workflow.from_arrays("flaky", names_of(n), src, dst, actions, NodeOptions(retries=1))
    result = threads.run(wf)
    assert result.ok
    assert result.attempts.tolist() == [2 if v in flaky_nodes else 1 for v in range(n)]
    assert result.outputs == expected_outcome(n, src, dst, set())[1]


@given(graph=dags_with_failures())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None,
          max_examples=30)
def test_serial_runs_in_a_topological_order(serial, graph):
    n, src, dst, failing, _ = graph
    log = Log(n)
    wf = Workflow.from_arrays("random", names_of(n), src, dst, [log.action(v, v in failing) for v in range(n)])
    result = serial.run(wf, continue_on_error=True, raise_on_failure=False)
    check_common(result, log, n, src, dst)
    # one node at a time: every start is followed by its own end
    assert all(log.events[i][0] == "start" and log.events[i + 1] == ("end", log.events[i][1])
               for i in range(0, len(log.events), 2))
    assert [NodeStatus(int(s)) for s in result.statuses] == expected_outcome(n, src, dst, failing)[0]


@given(graph=dags_with_failures(max_nodes=12, max_edges=24))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
# The profile's examples (dev 60, ci 200): a few tens of ms each, pools started once.
def test_serial_threads_and_processes_agree(serial, threads, processes, graph):
    n, src, dst, failing, _ = graph
    actions = [functools.partial(value_of, fail=v in failing) for v in range(n)]
    wf = Workflow.from_arrays("random", names_of(n), src, dst, actions)
    expected_statuses, expected_outputs = expected_outcome(n, src, dst, failing)
    for eng in (serial, threads, processes):
        result = eng.run(wf, continue_on_error=True, raise_on_failure=False)
        assert [NodeStatus(int(s)) for s in result.statuses] == expected_statuses, eng.mode
        assert result.outputs == expected_outputs, eng.mode
        assert {k: str(v) for k, v in result.errors.items()} == {f"n{v}": f"n{v} fails" for v in failing
                                                                  if expected_statuses[v] is NodeStatus.FAILED}


# -- chaos: failures, timeouts, give-ups and a cancel at a random moment ---------------------------------------

BEHAVIOURS = ["ok", "ok", "ok", "fail", "slow", "give_up", "check"]


def chaos_action(log: Log, node: int, behaviour: str):
    def run(ctx):
        with log.lock:
            log.events.append(("start", node))
            log.calls[node] += 1
        try:
            if behaviour == "fail":
                raise ValueError(ctx.node)
            if behaviour == "slow":  # cooperative, times out unless the run is cancelled first
                end = time.monotonic() + 2.0
                while not ctx.cancelled and time.monotonic() < end:
                    ctx.wait(0.002)
            if behaviour == "give_up":
                raise NodeCancelledError(ctx.node)
            if behaviour == "check":
                ctx.wait(0.002)
                ctx.raise_if_cancelled()
            return node
        finally:
            with log.lock:
                log.events.append(("end", node))
    return run


@given(graph=dags(max_nodes=20, max_edges=40), data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None,
          max_examples=60)
def test_chaos_every_node_ends_terminal(threads, one_thread, serial, graph, data):
    n, src, dst = graph
    engine = data.draw(st.sampled_from([threads, one_thread, serial]))
    behaviours = data.draw(st.lists(st.sampled_from(BEHAVIOURS), min_size=n, max_size=n))
    coe = data.draw(st.booleans())
    cancel_after = data.draw(st.none() | st.floats(0.0, 0.03))
    log = Log(n)
    preds = predecessors(n, src, dst)
    b = WorkflowBuilder("chaos")
    for v in range(n):
        b.add(f"n{v}", chaos_action(log, v, behaviours[v]), depends_on=[f"n{p}" for p in sorted(preds[v])],
              timeout=0.02 if behaviours[v] == "slow" else None)
    handle = engine.submit(b.build(), continue_on_error=coe)
    if cancel_after is not None:
        time.sleep(cancel_after)
        handle.cancel("chaos")
    exc = handle.exception(timeout=10.0)
    assert exc is None or isinstance(exc, (WorkflowFailedError, RunCancelledError)), repr(exc)
    result = handle.result() if exc is None else exc.result
    statuses = [NodeStatus(int(s)) for s in result.statuses]
    assert all(s in TERMINAL for s in statuses), statuses
    check_log_against_edges(log, src, dst)
    ended_badly = {v for v, s in enumerate(statuses)
                   if s in (NodeStatus.FAILED, NodeStatus.TIMED_OUT, NodeStatus.CANCELLED)
                   and result.error(v) is not None}
    assert {v for v, s in enumerate(statuses) if s is NodeStatus.SKIPPED} == descendants(n, src, dst, ended_badly)
    for v, s in enumerate(statuses):
        assert log.calls[v] <= 1
        if s in (NodeStatus.SKIPPED,) or (s is NodeStatus.CANCELLED and result.error(v) is None):
            assert log.calls[v] == 0, (v, s)
        if s in (NodeStatus.COMPLETED, NodeStatus.FAILED):
            assert log.calls[v] == 1 and all(statuses[p] is NodeStatus.COMPLETED for p in preds[v])
        if s is NodeStatus.COMPLETED:
            assert result.output(v) == v
        if s is NodeStatus.FAILED:
            assert behaviours[v] == "fail"
        if s is NodeStatus.TIMED_OUT:
            assert behaviours[v] == "slow"
    if cancel_after is None and coe:
        assert NodeStatus.CANCELLED not in statuses or any(b in ("give_up", "check") for b in behaviours)


# -- dynamic workflows: random maps, branches and triggers --------------------------------------------
#
# A random DAG where each node is a plain task, a branch (taking a random subset of its
# direct successors) or a map over its first dependency (whose output, like every
# node's, is a list), with a random trigger, some failing nodes and maps with a failing
# item.  With the run continuing on error the outcome is determined by the join rules
# (status.join_rule, read here by a model that walks the graph in topological order),
# so the test checks it exactly: every status and skip reason, the map items, that
# nothing started before its dependencies ended, and that nothing ran twice (also under
# strict checkpoints).  Fail-fast and cancelled runs are checked for what timing does
# not change: everything terminal, nothing early, nothing twice.

from flow_orchestrator.status import (  # noqa: E402
    SEEN_BRANCH_SKIPPED,
    SEEN_COMPLETED,
    SEEN_FAILED,
    Join,
    SkipReason,
    Trigger,
    join_rule,
)
from flow_orchestrator.stores import MemoryStore  # noqa: E402


@st.composite
def dynamic_graphs(draw, max_nodes=14, max_edges=30):
    n, src, dst = draw(dags(max_nodes=max_nodes, max_edges=max_edges))
    preds = predecessors(n, src, dst)
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        succs[s].append(d)
    kinds, chosen = [], {}
    for v in range(n):
        kind = draw(st.sampled_from(["task", "task", "branch", "map"]))
        if kind == "map" and not preds[v]:
            kind = "task"
        kinds.append(kind)
        if kind == "branch":
            chosen[v] = sorted(draw(st.sets(st.sampled_from(succs[v]))) if succs[v] else set())
    triggers = [draw(st.sampled_from(list(Trigger))) for _ in range(n)]
    failing = draw(st.sets(st.integers(0, n - 1), max_size=max(1, n // 4)))
    return n, src, dst, preds, kinds, chosen, triggers, failing


def dynamic_workflow(graph, log: Log, item_calls: dict, timeouts: bool = False):
    """The workflow of a dynamic graph; with ``timeouts``, the failing item of a map times
    out (a cooperative wait past the map's per-attempt timeout) instead of raising."""
    n, src, dst, preds, kinds, chosen, triggers, failing = graph
    names = names_of(n)
    flow = WorkflowBuilder("dynamic")
    lock = threading.Lock()

    def task(v):
        def run():
            log.action(v, v in failing)(_Ctx(names[v]))
            if kinds[v] == "branch":
                return [names[w] for w in chosen[v]]
            return list(range(v % 3))
        return run

    def item(v):
        def run(element, ctx):
            with lock:
                item_calls[(v, ctx.item)] = item_calls.get((v, ctx.item), 0) + 1
            if v in failing and ctx.item == 0:
                if timeouts:
                    ctx.wait(5.0)  # woken when the attempt times out
                    return element
                raise ValueError(f"item 0 of n{v}")
            return element
        return run

    for v in range(n):
        deps = [names[p] for p in sorted(preds[v])]
        options = {"trigger": str(triggers[v])}
        if kinds[v] == "map":
            over = names[min(preds[v])]
            if timeouts:
                options["timeout"] = 0.05
            flow.map(names[v], item(v), over=over, depends_on=deps, **options)
        elif kinds[v] == "branch":
            flow.branch(names[v], task(v), depends_on=deps, **options)
        else:
            flow.add(names[v], task(v), depends_on=deps, **options)
    return flow.build()


class _Ctx:
    """What Log.action reads of a context (these actions take none)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.inputs: dict = {}


def dynamic_model(graph):
    """Expected (status, skip reason, output length) per node of a run continuing on error."""
    n, src, dst, preds, kinds, chosen, triggers, failing = graph
    order = Workflow.from_arrays("m", names_of(n), src, dst, lambda: None).graph.topological_order().tolist()
    status, reason, length = [None] * n, [SkipReason.NONE] * n, [0] * n
    for v in order:
        seen = 0
        for p in preds[v]:
            if status[p] is NodeStatus.COMPLETED:
                taken = kinds[p] != "branch" or v in chosen[p]
                seen |= SEEN_COMPLETED if taken else SEEN_BRANCH_SKIPPED
            elif status[p] is NodeStatus.SKIPPED and reason[p] is SkipReason.BRANCH_NOT_TAKEN:
                seen |= SEEN_BRANCH_SKIPPED
            else:
                seen |= SEEN_FAILED
        decision = join_rule(triggers[v], seen, True) if preds[v] else Join.RUN
        if decision is Join.SKIP_FAILED:
            status[v], reason[v] = NodeStatus.SKIPPED, SkipReason.DEPENDENCY_FAILED
        elif decision is Join.SKIP_BRANCH:
            status[v], reason[v] = NodeStatus.SKIPPED, SkipReason.BRANCH_NOT_TAKEN
        elif kinds[v] == "map":
            over = min(preds[v])
            length[v] = length[over] if status[over] is NodeStatus.COMPLETED else 0
            broken = v in failing and length[v] > 0
            status[v] = NodeStatus.FAILED if broken else NodeStatus.COMPLETED
        else:
            status[v] = NodeStatus.FAILED if v in failing else NodeStatus.COMPLETED
            length[v] = len(chosen[v]) if kinds[v] == "branch" else v % 3
    return status, reason, length


def check_dynamic(result, log: Log, item_calls: dict, graph, exact: bool, timeouts: bool = False) -> None:
    n, src, dst, preds, kinds, chosen, triggers, failing = graph
    statuses = [NodeStatus(int(s)) for s in result.statuses]
    assert all(s in TERMINAL for s in statuses)
    start, end = log.positions()
    for s, d in zip(src.tolist(), dst.tolist()):  # a dependency that started ended first
        if d in start and s in start:
            assert s in end and end[s] < start[d], f"n{d} started before its dependency n{s} finished"
    assert max(log.calls, default=0) <= 1 and max(item_calls.values(), default=0) <= 1
    for v in range(n):
        if kinds[v] == "map":
            items = result.items(v)
            assert all(NodeStatus(int(s)) in TERMINAL for s in items.statuses)
            ran = {i for (m, i) in item_calls if m == v}
            assert ran <= set(range(len(items)))
            if statuses[v] is NodeStatus.COMPLETED:
                assert items.counts()[NodeStatus.COMPLETED] == len(items) and ran == set(range(len(items)))
        elif statuses[v] in (NodeStatus.SKIPPED, NodeStatus.PENDING):
            assert log.calls[v] == 0
        if statuses[v] is NodeStatus.SKIPPED:
            assert result.skip_reasons[v] != SkipReason.NONE
    if not exact:
        return
    status, reason, length = dynamic_model(graph)
    assert statuses == status
    assert [SkipReason(int(r)) for r in result.skip_reasons] == reason
    for v in range(n):
        if kinds[v] == "map" and status[v] is not NodeStatus.SKIPPED:
            assert len(result.items(v)) == length[v]
            if status[v] is NodeStatus.FAILED:
                assert result.items(v).status(0) is (NodeStatus.TIMED_OUT if timeouts else NodeStatus.FAILED)
        if kinds[v] != "map" and status[v] in (NodeStatus.COMPLETED, NodeStatus.FAILED):
            assert log.calls[v] == 1


_DYNAMIC = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                    deadline=None, max_examples=60)


@given(graph=dynamic_graphs())
@_DYNAMIC
def test_dynamic_outcome_follows_the_join_rules(threads, serial, graph):
    for engine in (threads, serial):
        log, item_calls = Log(graph[0]), {}
        result = engine.run(dynamic_workflow(graph, log, item_calls), continue_on_error=True,
                            raise_on_failure=False)
        check_dynamic(result, log, item_calls, graph, exact=True)


@given(graph=dynamic_graphs(max_nodes=10, max_edges=20))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None, max_examples=15)
def test_dynamic_items_that_time_out_fail_their_map(threads, graph):
    log, item_calls = Log(graph[0]), {}
    result = threads.run(dynamic_workflow(graph, log, item_calls, timeouts=True), continue_on_error=True,
                         raise_on_failure=False)
    check_dynamic(result, log, item_calls, graph, exact=True, timeouts=True)


@given(graph=dynamic_graphs())
@_DYNAMIC
def test_dynamic_runs_once_only_under_strict_checkpoints(threads, graph):
    log, item_calls = Log(graph[0]), {}
    with MemoryStore() as store:
        result = threads.run(dynamic_workflow(graph, log, item_calls), continue_on_error=True,
                             raise_on_failure=False, store=store, checkpoint="strict")
        check_dynamic(result, log, item_calls, graph, exact=True)
        saved = store.load(result.run_id)
    assert saved.statuses.tolist() == result.statuses.tolist()


@given(graph=dynamic_graphs(), cancel_after=st.sampled_from([None, 0.0, 0.001, 0.003]))
@_DYNAMIC
def test_dynamic_fail_fast_and_cancelled_runs_end_terminal(threads, graph, cancel_after):
    from flow_orchestrator.engine import CancellationToken
    log, item_calls = Log(graph[0]), {}
    token = CancellationToken()
    handle = threads.submit(dynamic_workflow(graph, log, item_calls), cancel=token, raise_on_failure=False)
    if cancel_after is not None:
        time.sleep(cancel_after)
        token.cancel("enough")
    result = handle.result(30)
    check_dynamic(result, log, item_calls, graph, exact=False)
    if cancel_after is None and not result.ok:
        # fail-fast: an all_done node whose dependencies all ended ran (or is running's end)
        assert result.status in (RunStatus.FAILED, RunStatus.CANCELLED)
