"""Metrics: the per-node counters and histograms of the core, and the per-workflow run
counts, agree with what the results of the runs say; snapshots and registries."""

from __future__ import annotations

import gc
import weakref
import itertools
import math
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow_orchestrator import Engine, NodeStatus, RunStatus, WorkflowBuilder
from flow_orchestrator.errors import DefinitionError, NodeCancelledError, UnknownWorkflowError
from flow_orchestrator.metrics import BUCKET_BOUNDS, METRIC_COUNTS, MetricsRegistry, WorkflowMetrics, bucket_of

from engine_helpers import fail, flaky, ok
from strategies import dags

COL = {name: j for j, name in enumerate(METRIC_COUNTS)}
BUCKETS = len(BUCKET_BOUNDS) + 1


def give_up():
    raise NodeCancelledError("giving up")


def hang(ctx):
    ctx.wait(30)


def leave():
    raise SystemExit(3)


def chain(name: str = "chain", n: int = 3, action=ok):
    flow = WorkflowBuilder(name)
    for i in range(n):
        flow.add(f"n{i}", action, depends_on=[f"n{i - 1}"] if i else [])
    return flow.build()


def random_workflow(n, sources, targets, failing, flaky_nodes):
    deps: dict[int, list[str]] = {v: [] for v in range(n)}
    for u, v in zip(sources.tolist(), targets.tolist()):
        deps[v].append(f"n{u}")
    flow = WorkflowBuilder("random")
    for v in range(n):
        if v in failing:
            flow.add(f"n{v}", fail, depends_on=deps[v])
        elif v in flaky_nodes:
            flow.add(f"n{v}", flaky, depends_on=deps[v], retries=1)
        else:
            flow.add(f"n{v}", ok, depends_on=deps[v])
    return flow.build()


def expected_counts(results) -> np.ndarray:
    """``int64[nodes, 7]`` counters implied by the results (no timeouts, no action cancels)."""
    expected = np.zeros((len(results[0].statuses), len(METRIC_COUNTS)), dtype=np.int64)
    for result in results:
        attempts = result.attempts.astype(np.int64)
        statuses = result.statuses
        ended_attempt = (statuses == NodeStatus.COMPLETED) | (statuses == NodeStatus.FAILED)
        expected[:, COL["started"]] += attempts
        expected[:, COL["retried"]] += attempts - ended_attempt
        for status, column in ((NodeStatus.COMPLETED, "completed"), (NodeStatus.FAILED, "failed"),
                               (NodeStatus.TIMED_OUT, "timed_out"), (NodeStatus.SKIPPED, "skipped"),
                               (NodeStatus.CANCELLED, "cancelled")):
            expected[:, COL[column]] += statuses == status
    return expected


def check_histograms(m: WorkflowMetrics) -> None:
    """Every ended attempt is in the duration histogram, every start in the wait one."""
    started = m.counts[:, COL["started"]]
    assert m.duration_hist.shape[1] == m.wait_hist.shape[1] == BUCKETS
    if m.duration_hist.shape[0] == len(m.node_names):
        assert (m.duration_hist.sum(axis=1) == started).all()
        assert (m.wait_hist.sum(axis=1) == started).all()
    assert m.duration_hist.sum() == m.wait_hist.sum() == started.sum()
    assert (m.duration_sum >= 0).all() and (m.wait_sum >= 0).all()
    assert (m.duration_sum[started == 0] == 0).all() and (m.wait_sum[started == 0] == 0).all()


def check_runs(m: WorkflowMetrics, results) -> None:
    outcomes = {status.value: 0 for status in RunStatus}
    for result in results:
        outcomes[result.status.value] += 1
    assert m.runs == outcomes
    assert m.run_duration_hist.sum() == len(results)
    assert m.run_duration_sum == pytest.approx(sum(r.wall_seconds for r in results))


# -- counts equal what the results say ------------------------------------------------------------


@given(dag=dags(max_nodes=30, max_edges=60), data=st.data())
def test_counts_match_the_results(dag, data):
    n, sources, targets = dag
    failing = data.draw(st.sets(st.integers(0, n - 1), max_size=3), label="failing")
    flaky_nodes = data.draw(st.sets(st.integers(0, n - 1), max_size=n), label="flaky")
    runs = data.draw(st.integers(1, 3), label="runs")
    serial = data.draw(st.booleans(), label="serial")
    continue_on_error = data.draw(st.booleans(), label="continue_on_error")
    wf = random_workflow(n, sources, targets, failing, flaky_nodes - failing)
    with Engine(3, executor="serial" if serial else None, metrics=True) as engine:
        results = [engine.run(wf, continue_on_error=continue_on_error, raise_on_failure=False)
                   for _ in range(runs)]
        m = engine.metrics.workflow("random")
    assert m.node_names == wf.names
    assert (m.counts == expected_counts(results)).all(), (m.counts, expected_counts(results))
    check_histograms(m)
    check_runs(m, results)
    assert m.totals() == {col: int(m.counts[:, j].sum()) for j, col in enumerate(METRIC_COUNTS)}


def test_many_concurrent_runs_count_exactly():
    flow = WorkflowBuilder("many")
    for i in range(100):
        deps = [f"n{i - 1}", f"n{i // 2}"] if i else []
        action = fail if i == 60 else flaky if i % 9 == 4 else ok
        flow.add(f"n{i}", action, depends_on=sorted(set(deps) - {f"n{i}"}), retries=1)
    wf = flow.build()
    with Engine(8, metrics=True) as engine:
        handles = [engine.submit(wf, continue_on_error=i % 2 == 0, raise_on_failure=False) for i in range(40)]
        results = [h.result(timeout=120) for h in handles]
        m = engine.metrics.workflow("many")
    # n60 fails on both attempts: one retry, one failure per run that reached it.
    assert (m.counts == expected_counts(results)).all()
    check_histograms(m)
    check_runs(m, results)


def test_timeouts_are_counted():
    wf = (WorkflowBuilder("timeouts").add("slow", hang, timeout=0.03, retries=1)
          .add("dep", ok, depends_on="slow").add("other", ok).build())
    with Engine(2, metrics=True) as engine:
        result = engine.run(wf, continue_on_error=True, raise_on_failure=False)
        m = engine.metrics.workflow("timeouts")
    assert result.status_of("slow") is NodeStatus.TIMED_OUT
    assert m.node("slow") | {"duration_sum": 0, "wait_sum": 0} == {
        "started": 2, "completed": 0, "failed": 0, "retried": 1, "timed_out": 1, "skipped": 0,
        "cancelled": 0, "duration_sum": 0, "wait_sum": 0}
    assert m.node("slow")["duration_sum"] >= 0.06
    assert m.node("dep")["skipped"] == 1 and m.node("other")["completed"] == 1
    check_histograms(m)
    assert m.runs == {"completed": 0, "failed": 1, "cancelled": 0}


def test_an_action_giving_up_is_counted_cancelled_with_its_duration():
    wf = WorkflowBuilder("give_up").add("quit", give_up).add("dep", ok, depends_on="quit").build()
    with Engine(1, executor="serial", metrics=True) as engine:
        engine.run(wf, raise_on_failure=False)
        m = engine.metrics.workflow("give_up")
    assert m.node("quit")["started"] == m.node("quit")["cancelled"] == 1
    assert m.node("dep")["skipped"] == 1
    check_histograms(m)
    assert m.runs == {"completed": 0, "failed": 0, "cancelled": 1}


def test_an_interrupted_run_is_counted_cancelled():
    wf = WorkflowBuilder("interrupted").add("a", leave).build()
    with Engine(1, executor="serial", metrics=True) as engine:
        with pytest.raises(SystemExit) as info:
            engine.run(wf)
        m = engine.metrics.workflow("interrupted")
    assert info.value.result.status is RunStatus.CANCELLED
    assert m.node("a")["cancelled"] == 1
    assert m.runs == {"completed": 0, "failed": 0, "cancelled": 1}


def test_process_pool_runs_are_counted():
    # forkserver or spawn, never fork
    from flow_orchestrator.external import process_pool

    wf = (WorkflowBuilder("processes").add("a", ok).add("b", fail, depends_on="a")
          .add("c", ok, depends_on="b").add("d", ok).build())
    with process_pool(2) as pool, Engine(2, executor=pool, metrics=True) as engine:
        results = [engine.run(wf, continue_on_error=True, raise_on_failure=False) for _ in range(2)]
        m = engine.metrics.workflow("processes")
    assert (m.counts == expected_counts(results)).all()
    check_histograms(m)
    check_runs(m, results)


# -- histograms ---------------------------------------------------------------------------------------


def test_bucket_bounds_are_powers_of_four_from_one_microsecond():
    assert len(BUCKET_BOUNDS) == BUCKETS - 1
    assert BUCKET_BOUNDS[0] == pytest.approx(1e-6)
    assert all(b == pytest.approx(a * 4) for a, b in itertools.pairwise(BUCKET_BOUNDS))
    assert bucket_of(0.0) == 0 and bucket_of(1e-6) == 0 and bucket_of(1.01e-6) == 1
    assert bucket_of(BUCKET_BOUNDS[-1]) == BUCKETS - 2 and bucket_of(1e9) == BUCKETS - 1


def test_a_duration_lands_in_the_bucket_that_bounds_it():
    wf = WorkflowBuilder("sleep").add("nap", lambda ctx: ctx.wait(0.003)).build()
    with Engine(1, executor="serial", metrics=True) as engine:
        result = engine.run(wf)
        m = engine.metrics.workflow("sleep")
    seconds = float(result.durations()[0])
    (bucket,) = np.flatnonzero(m.duration_hist[0])
    lower = BUCKET_BOUNDS[bucket - 1] if bucket else 0.0
    upper = BUCKET_BOUNDS[bucket] if bucket < len(BUCKET_BOUNDS) else math.inf
    assert lower * (1 - 1e-6) <= seconds <= upper * (1 + 1e-6)
    assert m.duration_sum[0] == pytest.approx(seconds, rel=1e-6)
    assert m.run_duration_hist[bucket_of(result.wall_seconds)] == 1


def test_without_node_histograms_one_row_per_workflow():
    registry = MetricsRegistry(node_histograms=False)
    wf = chain(n=5)
    with Engine(2, metrics=registry) as engine:
        results = [engine.run(wf) for _ in range(3)]
    m = registry.workflow("chain")
    assert m.duration_hist.shape == m.wait_hist.shape == (1, BUCKETS)
    assert m.duration_sum.shape == m.wait_sum.shape == (5,)
    assert (m.counts[:, COL["started"]] == 3).all()
    check_histograms(m)
    check_runs(m, results)


# -- registries and snapshots -----------------------------------------------------------------------


def test_engine_metrics_argument():
    with Engine(1, metrics=True) as engine:
        assert isinstance(engine.metrics, MetricsRegistry)
    with Engine(1) as engine:
        assert engine.metrics is None
    registry = MetricsRegistry(node_histograms=True)
    with Engine(1, metrics=registry) as engine:
        assert engine.metrics is registry
    with pytest.raises(DefinitionError):
        Engine(1, metrics="yes")


def test_a_registry_shared_by_two_engines():
    registry = MetricsRegistry(node_histograms=True)
    wf, other = chain("shared"), chain("other", n=2)
    with Engine(2, metrics=registry) as threads, Engine(1, executor="serial", metrics=registry) as serial:
        threads.run(wf)
        serial.run(wf)
        serial.run(other)
    assert sorted(m.workflow for m in registry.snapshot()) == ["other", "shared"]
    m = registry.workflow("shared")
    assert (m.counts[:, COL["started"]] == 2).all() and (m.counts[:, COL["completed"]] == 2).all()
    assert m.runs["completed"] == 2
    assert registry.workflow("other").runs["completed"] == 1


def test_workflows_sharing_a_name_are_kept_apart():
    registry = MetricsRegistry(node_histograms=True)
    first, second = chain("same", n=2), chain("same", n=4)
    with Engine(1, executor="serial", metrics=registry) as engine:
        engine.run(first)
        engine.run(second)
        engine.run(second)
    sizes = sorted((len(m.node_names), m.runs["completed"]) for m in registry.snapshot())
    assert sizes == [(2, 1), (4, 2)]
    assert registry.workflow("same").workflow == "same"


def test_unknown_workflow_raises():
    registry = MetricsRegistry(node_histograms=True)
    with pytest.raises(UnknownWorkflowError, match="nope"):
        registry.workflow("nope")
    with Engine(1, executor="serial", metrics=registry) as engine:
        engine.run(chain())
        with pytest.raises(UnknownWorkflowError):
            registry.workflow("nope")


def test_node_view_and_totals():
    wf = WorkflowBuilder("view").add("a", ok).add("b", fail, depends_on="a").add("c", ok, depends_on="b").build()
    with Engine(1, executor="serial", metrics=True) as engine:
        engine.run(wf, raise_on_failure=False)
        m = engine.metrics.workflow("view")
    assert {k: v for k, v in m.node("b").items() if k in METRIC_COUNTS} == {
        "started": 1, "completed": 0, "failed": 1, "retried": 0, "timed_out": 0, "skipped": 0, "cancelled": 0}
    assert m.totals() == {"started": 2, "completed": 1, "failed": 1, "retried": 0, "timed_out": 0,
                          "skipped": 1, "cancelled": 0}
    with pytest.raises(ValueError):
        m.node("zzz")


def test_snapshots_are_copies():
    with Engine(1, executor="serial", metrics=True) as engine:
        wf = chain()
        engine.run(wf)
        before = engine.metrics.workflow("chain")
        engine.run(wf)
        after = engine.metrics.workflow("chain")
    assert (before.counts[:, COL["completed"]] == 1).all() and (after.counts[:, COL["completed"]] == 2).all()
    before.counts[:] = 99
    assert (engine.metrics.workflow("chain").counts[:, COL["completed"]] == 2).all()


def test_snapshots_while_runs_go_on():
    wf = chain("busy", n=200)
    registry = MetricsRegistry(node_histograms=True)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def snapshot_loop():
        try:
            while not stop.is_set():
                for m in registry.snapshot():
                    seen.append(int(m.counts[:, COL["started"]].sum()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=snapshot_loop)
    reader.start()
    try:
        with Engine(4, metrics=registry) as engine:
            handles = [engine.submit(wf) for _ in range(20)]
            results = [h.result(timeout=120) for h in handles]
    finally:
        stop.set()
        reader.join(30)
    assert not errors and seen
    assert seen == sorted(seen)  # counters only grow
    m = registry.workflow("busy")
    assert (m.counts[:, COL["completed"]] == 20).all()
    check_runs(m, results)


def test_metrics_outlive_the_workflow_object_but_keep_nothing_alive():
    registry = MetricsRegistry(node_histograms=True)
    with Engine(1, executor="serial", metrics=registry) as engine:
        kept, dropped = chain("kept"), chain("dropped")
        engine.run(kept)
        engine.run(dropped)
        probe = weakref.ref(dropped)
        del dropped
        gc.collect()
        # Neither the engine's cache of compiled workflows nor the registry keeps it...
        assert probe() is None
        # ...and its counts stay, under its name, for the next scrape.
        assert sorted(m.workflow for m in registry.snapshot()) == ["dropped", "kept"]
        # A workflow rebuilt for every run accumulates into the same series.
        engine.run(chain("dropped"))
        assert registry.workflow("dropped").runs["completed"] == 2
