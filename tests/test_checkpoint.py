"""Durable runs: checkpoint policies on every store, resume by run id, failures of saving.

Every test runs against each store (memory, JSON files, FlatBuffers files, SQLite) and,
where the policy matters, each policy.  The crash (SIGKILL) trials are in
``test_crash_resume.py``.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from flow_orchestrator import NodeStatus, WorkflowBuilder
from flow_orchestrator.checkpoint import CheckpointPolicy
from flow_orchestrator.engine import Engine
from flow_orchestrator.errors import DefinitionError, IncompatibleStateError, WorkflowFailedError
from flow_orchestrator.serialization import JsonSerializer, PickleSerializer, SerializationError
from flow_orchestrator.stores import (
    CheckpointFailedError,
    FlatBuffersFileStore,
    JsonFileStore,
    MemoryStore,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    SqliteStore,
    Store,
    StoreError,
)
from flow_orchestrator.state import NOT_SAVED
from flow_orchestrator.workflow import Workflow

from pg_server import fresh_schema
from strategies import dags

DONE = int(NodeStatus.COMPLETED)
POLICIES = ("strict", "batched", "end")


def open_store(kind: str, where: Path) -> Store:
    """A store of ``kind`` on ``where`` (a directory)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "json":
        return JsonFileStore(where / "json")
    if kind == "flatbuffers":
        return FlatBuffersFileStore(where / "fbs")
    return SqliteStore(where / "runs.db")


@pytest.fixture(params=["memory", "json", "flatbuffers", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterable[Store]:
    if request.param == "postgres":
        with fresh_schema() as (conninfo, schema):
            from flow_orchestrator.stores import PostgresStore

            with PostgresStore(conninfo, schema=schema) as opened:
                yield opened
        return
    with open_store(request.param, tmp_path) as opened:
        yield opened


class Recording(Store):
    """A store that forwards to another and records what it was asked to write.

    ``durable`` is the set of node ids whose completion was written (checkpoint or save);
    ``fail_after`` makes the n-th checkpoint call raise; ``delay`` slows each write;
    ``max_saves`` drops the snapshots after that many silently (as a process killed before
    its final snapshot would).
    """

    def __init__(self, inner: Store, *, fail_after: int | None = None, delay: float = 0.0,
                 max_saves: int | None = None) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.max_saves = max_saves
        self.delay = delay
        self.lock_ = threading.Lock()
        self.durable: set[int] = set()
        self.batches: list[list[int]] = []
        self.saves = 0
        self.data_blobs: list[bytes] = []

    def save(self, state):  # type: ignore[no-untyped-def]
        if self.max_saves is not None and self.saves >= self.max_saves:
            return
        time.sleep(self.delay)
        self.inner.save(state)
        with self.lock_:
            self.saves += 1
            self.durable = set(np.flatnonzero(state.statuses == DONE).tolist())

    def checkpoint(self, run_id, transitions, data=None):  # type: ignore[no-untyped-def]
        records = list(transitions)
        with self.lock_:
            if self.fail_after is not None and len(self.batches) >= self.fail_after:
                raise StoreError("the disk is full (simulated)")
        time.sleep(self.delay)
        self.inner.checkpoint(run_id, records, data)
        with self.lock_:
            self.batches.append([r.node_id for r in records])
            self.durable |= {r.node_id for r in records if r.status == DONE}
            if data is not None:
                self.data_blobs.append(data)

    def load(self, run_id):  # type: ignore[no-untyped-def]
        return self.inner.load(run_id)

    def exists(self, run_id):  # type: ignore[no-untyped-def]
        return self.inner.exists(run_id)

    def list_runs(self, workflow=None):  # type: ignore[no-untyped-def]
        return self.inner.list_runs(workflow)

    def delete(self, run_id):  # type: ignore[no-untyped-def]
        self.inner.delete(run_id)

    def lock(self, run_id):  # type: ignore[no-untyped-def]
        return self.inner.lock(run_id)

    def close(self) -> None:
        self.inner.close()

    def is_durable(self, node: int) -> bool:
        with self.lock_:
            return node in self.durable


def layered(width: int, depth: int, action: Callable[[str], Callable[..., object]], name: str = "layers") -> Workflow:
    """``depth`` layers of ``width`` nodes, each depending on every node of the layer before."""
    b = WorkflowBuilder(name)
    for layer in range(depth):
        for i in range(width):
            node = f"n{layer}_{i}"
            deps = [f"n{layer - 1}_{j}" for j in range(width)] if layer else []
            b.add(node, action(node), depends_on=deps)
    return b.build()


def writer_of(name: str) -> Callable[..., object]:
    """An action storing its name's length in the data and returning its inputs' sum + 1."""
    def action(ctx):  # type: ignore[no-untyped-def]
        ctx.data[name] = len(name)
        return sum(ctx.inputs.values()) + 1
    return action


def expected_outputs(wf: Workflow) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in wf.graph.topological_order().tolist():
        preds = wf.graph.predecessors(node).tolist()
        out[wf.names[node]] = sum(out[wf.names[p]] for p in preds) + 1
    return out


# -- policies ------------------------------------------------------------------------------------


def test_policy_validation() -> None:
    assert CheckpointPolicy.of("strict") == CheckpointPolicy.strict()
    assert CheckpointPolicy.of("end").mode == "end"
    assert CheckpointPolicy.batched(every=5, interval=0.5).every == 5
    for bad in [dict(mode="sometimes"), dict(every=0), dict(every=True), dict(interval=0),
                dict(interval=float("nan")), dict(max_pending=0), dict(every=10, max_pending=5)]:
        with pytest.raises(DefinitionError):
            CheckpointPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        CheckpointPolicy.of("always")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        with Engine(2) as engine:
            engine.run(layered(1, 1, writer_of), store=MemoryStore(), checkpoint="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", POLICIES)
def test_durable_run_saves_everything(store: Store, policy: str) -> None:
    """After a run, the store holds every output, the data and the final status."""
    wf = layered(4, 3, writer_of)
    with Engine(2) as engine:
        result = engine.run(wf, store=store, checkpoint=policy, run_id="r1", data={"seed": 7})
    state = store.load("r1")
    assert state.run_status == "completed" and result.run_id == "r1"
    assert (state.statuses == DONE).all()
    assert {wf.names[i]: v for i, v in state.load_outputs().items()} == expected_outputs(wf)
    assert state.load_data() == {"seed": 7, **{name: len(name) for name in wf.names}}
    assert state.workflow == wf.name and state.attempts.tolist() == [1] * len(wf)
    assert np.isfinite(state.started).all() and (state.ended >= state.started).all()


@pytest.mark.parametrize("policy", ["strict", "batched"])
def test_journal_holds_progress_before_the_end(tmp_path: Path, policy: str) -> None:
    """While a run goes on, completed nodes are in the store (strict at once; batched
    within ``interval``), with the data they wrote."""
    inner = SqliteStore(tmp_path / "runs.db")
    seen: dict[str, object] = {}

    def probe(ctx):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # > the batched interval below
        state = inner.load("r1")
        seen["statuses"] = state.statuses.tolist()
        seen["data"] = state.load_data()
        return 0

    def first(ctx):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # the writer has saved the first snapshot and sleeps, idle
        ctx.data["first"] = 1
        return 1

    b = WorkflowBuilder("progress")
    b.add("first", first)
    b.add("probe", probe, depends_on=["first"])
    spec = CheckpointPolicy.batched(every=1000, interval=0.1) if policy == "batched" else policy
    with inner, Engine(2) as engine:
        engine.run(b.build(), store=inner, checkpoint=spec, run_id="r1")
    assert seen["statuses"] == [DONE, int(NodeStatus.PENDING)]
    assert seen["data"] == {"first": 1}


def test_unsaveable_initial_data_is_refused_and_the_engine_still_closes() -> None:
    engine = Engine(2)
    with pytest.raises(SerializationError, match="workflow data"):
        engine.run(layered(1, 2, writer_of), store=MemoryStore(), data={"lock": threading.Lock()})
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "Engine.close() waits for a run that never started"


def test_end_policy_writes_only_snapshots(tmp_path: Path) -> None:
    store = Recording(MemoryStore())
    with Engine(2) as engine:
        engine.run(layered(5, 4, writer_of), store=store, checkpoint="end")
    assert store.batches == [] and store.saves == 2


@settings(deadline=None)  # the profile's examples: dev 60, ci 200 (a few ms each)
@given(dag=dags(max_nodes=25, max_edges=60))
def test_strict_completion_durable_before_dependents_start(dag) -> None:  # type: ignore[no-untyped-def]
    """Under the strict policy, every node starts only after all its dependencies'
    completions were written to the store."""
    n, src, dst = dag
    store = Recording(MemoryStore())
    early: list[int] = []
    deps: dict[int, set[int]] = {v: set() for v in range(n)}
    for u, v in zip(src.tolist(), dst.tolist()):
        deps[v].add(u)

    def checker(node: int) -> Callable[[], int]:
        def action() -> int:
            if not all(store.is_durable(d) for d in deps[node]):
                early.append(node)
            return 1
        return action

    b = WorkflowBuilder("strict")
    for v in range(n):
        b.add(f"v{v}", checker(v), depends_on=[f"v{u}" for u in sorted(deps[v])])
    wf = b.build()
    assert wf.names == [f"v{v}" for v in range(n)]
    with Engine(2) as engine:
        engine.run(wf, store=store, checkpoint="strict")
    assert early == []


def test_batched_groups_commits_and_bounds_pending(tmp_path: Path) -> None:
    """Batched commits come every ``every`` records (or at the end); with a slow store,
    no batch exceeds ``max_pending`` (workers wait: back-pressure)."""
    wf = layered(50, 4, lambda name: (lambda: 1))
    store = Recording(MemoryStore())
    with Engine(2) as engine:
        engine.run(wf, store=store, checkpoint=CheckpointPolicy.batched(every=40, interval=60))
    sizes = [len(b) for b in store.batches]
    assert sum(sizes) == 200 and all(s >= 40 for s in sizes[:-1]) and len(sizes) <= 5
    slow = Recording(MemoryStore(), delay=0.01)
    with Engine(2) as engine:
        engine.run(wf, store=slow, checkpoint=CheckpointPolicy.batched(every=5, interval=60, max_pending=10))
    assert sum(len(b) for b in slow.batches) == 200
    assert max(len(b) for b in slow.batches) <= 10


def test_last_partial_batch_reaches_the_journal_without_a_final_snapshot(store: Store) -> None:
    """A run that ends without its final snapshot (killed) keeps every record in its journal,
    the last partial batch too: 7 completions in batches of 3 are 3 + 3 + 1, and the writer
    must not drop the 1 on close."""
    wf = layered(7, 1, writer_of)
    recording = Recording(store, max_saves=1)  # the initial snapshot only
    with Engine(2) as engine:
        engine.run(wf, store=recording, run_id="partial",
                   checkpoint=CheckpointPolicy.batched(every=3, interval=3600.0, max_pending=3))
    assert list(map(len, recording.batches)) == [3, 3, 1]  # max_pending=3: never more than 3 a batch
    state = store.load("partial")
    assert state.run_status == "running"  # only the journal holds the progress
    assert (state.statuses == DONE).all() and len(state.outputs) == 7


def test_strict_group_commit_shares_writes() -> None:
    """Strict completions that wait together share one write."""
    wf = layered(100, 1, lambda name: (lambda: time.sleep(0.002)))
    store = Recording(MemoryStore(), delay=0.02)
    with Engine(2) as engine:
        engine.run(wf, store=store, checkpoint="strict")
    assert sum(len(b) for b in store.batches) == 100
    assert len(store.batches) < 100


def test_data_written_only_when_changed() -> None:
    store = Recording(MemoryStore())
    b = WorkflowBuilder("data")
    b.add("a", lambda ctx: ctx.data.__setitem__("a", 1))
    b.add("b", lambda: None, depends_on=["a"])
    b.add("c", lambda: None, depends_on=["b"])
    with Engine(1) as engine:
        engine.run(b.build(), store=store, checkpoint="strict")
    assert len(store.batches) == 3 and len(store.data_blobs) == 1


# -- failures --------------------------------------------------------------------------------------


def test_unsaveable_output_fails_its_node(store: Store) -> None:
    """An output the serializer refuses fails its node, naming it; dependents are skipped."""
    b = WorkflowBuilder("bad-output")
    b.add("fine", lambda: 1)
    b.add("weird", lambda: object(), depends_on=["fine"])
    b.add("after", lambda: 2, depends_on=["weird"])
    with Engine(2) as engine:
        result = engine.run(b.build(), store=store, raise_on_failure=False, run_id="r")
    assert result.status_of("weird") == NodeStatus.FAILED
    assert result.status_of("after") == NodeStatus.SKIPPED
    error = result.errors["weird"]
    assert isinstance(error, SerializationError) and "'weird'" in str(error)
    state = store.load("r")
    assert state.run_status == "failed" and state.errors[1].type.endswith("SerializationError")
    assert state.load_outputs() == {0: 1}


def test_pickle_serializer_round_trips_objects(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "p.db") as store, Engine(2) as engine:
        b = WorkflowBuilder("pickled")
        b.add("a", lambda: {1, 2, 3})
        wf = b.build()
        engine.run(wf, store=store, serializer=PickleSerializer(), run_id="p")
        assert store.load("p").load_outputs(PickleSerializer()) == {0: {1, 2, 3}}
        again = engine.resume(wf, "p", store=store, serializer=PickleSerializer())
        assert again.output("a") == {1, 2, 3}
        with pytest.raises(SerializationError, match="saved with the 'pickle' serializer"):
            engine.resume(wf, "p", store=store, serializer=JsonSerializer())  # contradicts the saved run
        with pytest.raises(SerializationError, match="runs code stored in the run"):
            engine.resume(wf, "p", store=store)  # pickle is never chosen for you


def test_store_failure_cancels_run_and_keeps_last_state() -> None:
    """A write that fails cancels the run with CheckpointFailedError; the store keeps
    the last state it accepted, from which the run resumes."""
    inner = MemoryStore()
    store = Recording(inner, fail_after=2)
    wf = layered(1, 30, writer_of, "chain")
    with Engine(2) as engine:
        with pytest.raises(CheckpointFailedError) as info:
            engine.run(wf, store=store, checkpoint="strict", run_id="c")
        result = info.value.result
        assert result.status.value == "cancelled"
        saved = inner.load("c")
        assert int((saved.statuses == DONE).sum()) == 2
        assert int((result.statuses == DONE).sum()) <= 3  # nothing starts once the save failed
        resumed = engine.resume(wf, "c", store=inner, checkpoint="strict")
    assert resumed.outputs == expected_outputs(wf)


def test_new_run_never_overwrites_a_stored_one(store: Store) -> None:
    wf = layered(2, 2, writer_of)
    with Engine(2) as engine:
        engine.run(wf, store=store, run_id="same")
        before = store.load("same")
        with pytest.raises(RunExistsError):
            engine.run(wf, store=store, run_id="same")
        assert store.load("same") == before
        with store.lock("same"):
            with pytest.raises(RunLockedError):
                engine.resume(wf, "same", store=store)


def test_resume_argument_errors(store: Store) -> None:
    wf = layered(2, 1, writer_of)
    with Engine(2) as engine:
        with pytest.raises(DefinitionError):
            engine.run(wf, resume="r")  # a run id needs a store
        with pytest.raises(RunNotFoundError):
            engine.resume(wf, "never-saved", store=store)
        engine.run(wf, store=store, run_id="r")
        with pytest.raises(DefinitionError):
            engine.run(wf, store=store, resume="r", run_id="other")
        with pytest.raises(StoreError):
            engine.run(wf, store=store, run_id="../escape")
        other = layered(3, 1, writer_of)
        with pytest.raises(IncompatibleStateError):
            engine.resume(other, "r", store=store)
        engine.resume(wf, "r", store=store)  # the failed attempts released the lock


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_resume_after_failure_runs_only_what_did_not_complete(store: Store, policy: str) -> None:
    calls: list[str] = []
    broken = {"n2_1"}

    def action(name: str) -> Callable[..., object]:
        def run(ctx):  # type: ignore[no-untyped-def]
            calls.append(name)
            if name in broken:
                raise RuntimeError("broken")
            ctx.data[name] = len(name)
            return sum(ctx.inputs.values()) + 1
        return run

    wf = layered(3, 4, action)
    with Engine(2) as engine:
        with pytest.raises(WorkflowFailedError):
            engine.run(wf, store=store, checkpoint=policy, run_id="job", data={"seed": 1})
        first = set(calls)
        done_before = {wf.names[i] for i in np.flatnonzero(store.load("job").statuses == DONE)}
        assert done_before and "n2_1" not in done_before
        broken.clear()
        calls.clear()
        result = engine.resume(wf, "job", store=store, checkpoint=policy)
    assert result.outputs == expected_outputs(wf)
    assert not set(calls) & done_before
    assert set(calls) | done_before == set(wf.names) and first
    state = store.load("job")
    assert state.run_status == "completed" and (state.statuses == DONE).all()
    assert state.load_data() == {"seed": 1, **{n: len(n) for n in wf.names}}


def test_resume_with_new_nodes_and_rerun(store: Store) -> None:
    calls: list[str] = []

    def action(name: str) -> Callable[..., object]:
        def run(ctx):  # type: ignore[no-untyped-def]
            calls.append(name)
            return sum(ctx.inputs.values()) + 1
        return run

    wf = layered(2, 3, action)
    with Engine(2) as engine:
        engine.run(wf, store=store, run_id="grow")
        b = WorkflowBuilder("layers")
        for node in wf.names:
            b.add(node, action(node), depends_on=[wf.names[p] for p in wf.graph.predecessors(wf.names.index(node)).tolist()])
        b.add("extra", action("extra"), depends_on=["n2_0"])
        bigger = b.build()
        with pytest.raises(IncompatibleStateError):
            engine.resume(bigger, "grow", store=store)
        calls.clear()
        result = engine.resume(bigger, "grow", store=store, allow_new_nodes=True)
        assert calls == ["extra"] and result.output("extra") == expected_outputs(wf)["n2_0"] + 1
        assert store.load("grow").num_nodes == len(wf) + 1
        calls.clear()
        engine.resume(bigger, "grow", store=store, rerun=["n1_0"])
        assert sorted(calls) == ["extra", "n1_0", "n2_0", "n2_1"]
    assert (store.load("grow").statuses == DONE).all()


def test_interrupted_run_saves_its_progress(store: Store) -> None:
    """Ctrl-C (here raised by an action) still leaves a state to resume from."""
    interrupt = {"on": True}

    def action(name: str) -> Callable[..., object]:
        def run(ctx):  # type: ignore[no-untyped-def]
            if name == "n2_0" and interrupt["on"]:
                raise KeyboardInterrupt
            return sum(ctx.inputs.values()) + 1
        return run

    wf = layered(2, 4, action)
    with Engine(2) as engine:
        with pytest.raises(KeyboardInterrupt):
            engine.run(wf, store=store, run_id="ki", checkpoint="end")
        state = store.load("ki")
        assert state.run_status == "cancelled"
        assert {wf.names[i] for i in np.flatnonzero(state.statuses == DONE)} >= {"n0_0", "n0_1", "n1_0", "n1_1"}
        interrupt["on"] = False
        assert engine.resume(wf, "ki", store=store).outputs == expected_outputs(wf)


def test_timeouts_and_failures_are_recorded(store: Store) -> None:
    b = WorkflowBuilder("errors")
    b.add("slow", lambda ctx: ctx.wait(5), timeout=0.05)
    b.add("bad", lambda: 1 / 0)
    b.add("good", lambda: 1)
    with Engine(2, continue_on_error=True) as engine:
        engine.run(b.build(), store=store, checkpoint="strict", run_id="e", raise_on_failure=False)
    state = store.load("e")
    assert state.statuses.tolist() == [NodeStatus.TIMED_OUT, NodeStatus.FAILED, DONE]
    assert state.errors[0].type.endswith("NodeTimeoutError") and state.errors[1].type == "ZeroDivisionError"
    assert "division by zero" in state.errors[1].message


def test_submit_with_store(store: Store) -> None:
    wf = layered(3, 3, writer_of)
    with Engine(2) as engine:
        handle = engine.submit(wf, store=store, checkpoint="strict", run_id="bg")
        assert handle.result(timeout=30).status.value == "completed"
    assert (store.load("bg").statuses == DONE).all()


def test_unsaveable_data_cancels_the_run() -> None:
    store = MemoryStore()
    b = WorkflowBuilder("bad-data")
    b.add("a", lambda ctx: ctx.data.__setitem__("lock", threading.Lock()))
    b.add("b", lambda: 1, depends_on=["a"])
    with Engine(2) as engine, pytest.raises(CheckpointFailedError) as info:
        engine.run(b.build(), store=store, checkpoint="strict", run_id="d")
    assert "workflow data" in str(info.value.__cause__)
    assert store.load("d").run_status == "running"  # the last state the store accepted



def test_persist_false_keeps_an_output_out_of_the_store_and_reruns_only_when_needed(store: Store) -> None:
    """persist=False: the node's record says completed without an output; a resume runs it
    again exactly when a dependent that has not completed needs it (and so its own
    unsaved dependencies), and not otherwise."""
    ran: list[str] = []

    def step(name: str) -> Callable[..., Any]:
        def action(ctx: Any) -> Any:
            ran.append(name)
            if name == "report" and ctx.data.get("fail"):
                raise RuntimeError("report failed")
            return np.full(3, len(ran)) if name != "report" else "ok"
        return action

    def build() -> Workflow:
        # a (unsaved) -> b (unsaved) -> c (saved) -> report <- x (unsaved);  lone (unsaved)
        return (WorkflowBuilder("persist")
                .add("a", step("a"), persist=False)
                .add("b", step("b"), depends_on="a", persist=False)
                .add("c", step("c"), depends_on="b")
                .add("x", step("x"), persist=False)
                .add("lone", step("lone"), persist=False)
                .add("report", step("report"), depends_on=["c", "x"], continue_on_error=True)
                .build())

    with Engine(2) as engine:
        failed = engine.run(build(), store=store, run_id="p-1", data={"fail": True}, raise_on_failure=False)
        assert not failed.ok and sorted(ran) == ["a", "b", "c", "lone", "report", "x"]
        saved = store.load("p-1")
        names = saved.node_names
        unsaved = {names[i] for i, blob in saved.outputs.items() if blob is NOT_SAVED}
        assert unsaved == {"a", "b", "x", "lone"} and saved.output("c").tolist() == failed.output("c").tolist()
        assert (saved.statuses[[names.index(n) for n in ("a", "b", "c", "x", "lone")]] == DONE).all()
        ran.clear()
        resumed = engine.resume(build(), "p-1", store=store, data={"fail": False})
    assert resumed.ok and sorted(ran) == ["report", "x"]  # c is saved: a and b are not needed
    assert resumed.output("report") == "ok" and resumed.output("x") is not None
    final = store.load("p-1")
    assert {final.node_names[i] for i, b in final.outputs.items() if b is NOT_SAVED} == {"a", "b", "x", "lone"}
    ran.clear()
    with Engine(2) as engine:  # c re-run: it needs b, which needs a; lone is still not needed
        engine.resume(build(), "p-1", store=store, rerun=["c"])
    assert sorted(ran) == ["a", "b", "c", "report", "x"]


def test_persist_option_is_checked() -> None:
    with pytest.raises(DefinitionError, match="persist"):
        WorkflowBuilder("w").add("a", lambda: 1, persist=1)


def test_a_large_output_costs_one_copy_and_is_written_once(store: Store) -> None:
    """A node returning a large array: the durable run holds the array and its serialized
    form (raw buffers: one copy), not more; snapshots reference the stored output."""
    size = 16 * 2**20
    workflow = (WorkflowBuilder("large").add("big", lambda: np.ones(size // 8))
                .add("small", lambda big: float(big[0]), depends_on="big").build())
    with Engine(1) as engine:
        engine.run(workflow)  # compiled, pools warm
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = engine.run(workflow, store=store, run_id="big-1", checkpoint="strict")
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert result.output("small") == 1.0
    assert peak < 2.2 * size, f"peak {peak / size:.2f}x the array"
    assert np.array_equal(store.load("big-1").output("big"), np.ones(size // 8))


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_completed_node_without_recorded_output_is_saved_cancelled_when_the_run_was(status: str) -> None:
    """A node that completed while the run ended, its output not recorded yet, is saved
    cancelled when the run was cancelled or interrupted (such a run leaves no node
    pending), pending otherwise; either way a resume runs it again."""
    from types import SimpleNamespace

    from flow_orchestrator.checkpoint import DurableRun
    from flow_orchestrator.result import RunResult
    from flow_orchestrator.status import RunStatus

    ran: list[str] = []

    def action(name: str) -> Callable[[], object]:
        def run() -> object:
            ran.append(name)
            return len(name)
        return run

    wf = WorkflowBuilder("late").add("a", action("a")).add("bb", action("bb")).build()
    store = MemoryStore()
    with DurableRun(store, "r1", CheckpointPolicy.of("end"), None) as durable:
        result = RunResult(wf, "r1", RunStatus(status), np.array([DONE, DONE], np.uint8), np.array([1, 1], np.int32),
                           np.array([0.0, 0.0]), np.array([1.0, 1.0]), [1, 2], {}, 1.0)
        writer = SimpleNamespace(outputs={0: b"1"}, errors={})  # bb's output never reached the writer
        state = durable._final_state(result, {}, writer)  # type: ignore[arg-type]
        durable.release()
    expected = NodeStatus.CANCELLED if status == "cancelled" else NodeStatus.PENDING
    assert state.statuses.tolist() == [DONE, expected] and state.outputs == {0: b"1"}
    state.validate()
    store.save(state)
    with Engine(1) as engine:
        resumed = engine.resume(wf, "r1", store=store)
    assert resumed.ok and resumed.outputs == {"a": 1, "bb": 2} and ran == ["bb"]
