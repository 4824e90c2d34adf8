"""Checkpoint records packed in bulk (``RecordBatch``): the same bytes and the same states
as records one by one, through every store, with the journal's chain intact.

A durable run's writer hands its store one :class:`RecordBatch` (columns) per group
commit; a store packs it with numpy (:func:`journal.encode_batch`) and applies it in bulk
(:class:`MemoryStore`).  These tests hold the packed path to the record-by-record one,
which stays the reference (and what :func:`journal.decode_batch` reads).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import store  # noqa: F401  (the fixture: every kind of store)

from flow_orchestrator import NodeStatus, WorkflowBuilder
from flow_orchestrator.checkpoint import CheckpointPolicy
from flow_orchestrator.engine import Engine
from flow_orchestrator.errors import CorruptStateError
from flow_orchestrator.state import BLOB_MIN, NOT_SAVED, ErrorRecord, RunState
from flow_orchestrator.stores import (
    CheckpointError,
    SqliteStore,
    Store,
    Transition,
    journal,
)
from flow_orchestrator.stores.base import RecordBatch, apply_batches, copy_state

DONE = int(NodeStatus.COMPLETED)
FAILED = int(NodeStatus.FAILED)
RUNNING = int(NodeStatus.RUNNING)
NODES = 12


def _noop() -> None:
    return None


def initial(run_id: str = "packed") -> RunState:
    builder = WorkflowBuilder("packed")
    for i in range(NODES):
        builder.add(f"n{i}", _noop)
    return RunState.initial(builder.build(), run_id, started_at=1000.0)


records = st.lists(st.tuples(
    st.integers(0, NODES - 1),
    st.sampled_from([DONE, DONE, DONE, FAILED, RUNNING, int(NodeStatus.CANCELLED)]),
    st.integers(0, 9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=6),
    st.booleans(),
), max_size=20)


def transitions(rows: list[tuple]) -> list[Transition]:
    """Valid transitions from drawn rows: an output exactly when completed, an error on
    some of the others."""
    return [Transition(node, status, attempt, started, ended, output if status == DONE else None,
                       ErrorRecord("ValueError", f"bad {node}", "Traceback ...") if erred and status != DONE else None)
            for node, status, attempt, started, ended, output, erred in rows]


@settings(max_examples=200, deadline=None)
@given(records, st.booleans())
def test_packed_bytes_are_the_record_by_record_bytes(rows: list[tuple], uniform: bool) -> None:
    """Whatever the mix (outputs of one size or of many, none, failures, errors), packing
    the columns gives exactly the bytes of encoding each record, and decodes to them."""
    if uniform:
        rows = [row[:5] + (b"ab",) + row[6:] for row in rows]
    recs = transitions(rows)
    batch = RecordBatch.of_transitions(recs)
    assert len(batch) == len(recs)
    packed = journal.encode_batch(5.0, batch, b"{}")
    assert packed == journal.encode_batch(5.0, recs, b"{}")
    stamp, back, data = journal.decode_batch(packed)
    assert stamp == 5.0 and data == b"{}" and len(back) == len(recs)
    for got, want in zip(back, recs):
        assert got[:3] == want[:3] and got[5:] == want[5:]
        for a, b in zip(got[3:5], want[3:5]):
            assert (math.isnan(a) and math.isnan(b)) or a == b
    assert [tuple(t[:3]) + tuple(t[5:]) for t in batch] == [tuple(t[:3]) + tuple(t[5:]) for t in recs]


def test_rows_queued_by_a_run_become_columns() -> None:
    """The writer's rows ``(node, status, attempt, started, ended, output or error)``:
    outputs of the completed ones, errors of the others, in record order."""
    error = ErrorRecord("KeyError", "'x'", "")
    batch = RecordBatch.of_rows([(3, DONE, 1, 0.5, 0.75, b"1"), (4, FAILED, 2, 0.5, 1.0, error),
                                 (5, DONE, 1, 0.25, 0.5, b"[2]"), (6, int(NodeStatus.CANCELLED), 1, 0.5, 0.5, None)])
    assert batch.nodes.tolist() == [3, 4, 5, 6] and batch.nodes.dtype == np.int32
    assert batch.statuses.tolist() == [DONE, FAILED, DONE, int(NodeStatus.CANCELLED)]
    assert batch.outputs == [b"1", b"[2]"] and batch.errors == {1: error}
    assert batch.check(7) is batch
    with pytest.raises(CheckpointError, match="not a node of this run"):
        batch.check(6)
    assert len(RecordBatch.of_rows([])) == 0


def test_a_bad_batch_is_refused_in_bulk() -> None:
    good = RecordBatch.of_rows([(0, DONE, 1, 0.0, 1.0, b"1"), (1, DONE, 1, 0.0, 1.0, b"2")])
    for field, value, match in [("outputs", [b"1"], "exactly when the status is completed"),
                                ("outputs", [b"1", "2"], "exactly when the status is completed"),
                                ("attempts", np.array([1, -1], np.int32), "attempt must be"),
                                ("statuses", np.array([DONE, 99], np.uint8), "unknown node status"),
                                ("nodes", np.array([0, 1], np.int64), "int32 array"),
                                ("errors", {5: ErrorRecord("E", "", "")}, "record indexes")]:
        bad = RecordBatch(good.nodes, good.statuses, good.attempts, good.started, good.ended, good.outputs,
                          good.errors)
        setattr(bad, field, value)
        with pytest.raises(CheckpointError, match=match):
            bad.check(4)


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=4))
def test_packed_batches_apply_as_records_one_by_one(batches: list[list[tuple]]) -> None:
    """Applying batches in bulk (a node named twice in a batch falls back to the order of
    its records) gives the state of applying their transitions one by one."""
    state = initial()
    lists = [transitions(rows) for rows in batches]
    want = apply_batches(copy_state(state), [(float(i), recs, None) for i, recs in enumerate(lists)])
    got = apply_batches(copy_state(state), [(float(i), RecordBatch.of_transitions(recs), None)
                                            for i, recs in enumerate(lists)])
    assert_same_state(got, want)
    assert got.updated_at == want.updated_at


def assert_same_state(a: RunState, b: RunState) -> None:
    """The same progress: statuses, attempts, times (bit for bit), outputs and errors."""
    for name in ("statuses", "attempts"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("started", "ended"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.outputs == b.outputs and a.errors == b.errors


def test_packed_batches_round_trip_through_every_store_with_the_chain_intact(store: Store) -> None:  # noqa: F811
    """Packed batches (outputs of one size, of many sizes, with failures and errors) and
    records one by one, interleaved: the store loads what applying them all gives, its
    chain of records follows from the snapshot (a reopened store appends to it too)."""
    state = initial()
    store.save(state)
    error = ErrorRecord("ValueError", "no \udcff", "Traceback ...")
    steps: list[list[Transition]] = [
        [Transition(n, DONE, 1, 0.5 * n, 0.5 * n + 0.25, b"%d" % n) for n in range(4)],          # one size
        [Transition(4, DONE, 2, 1.0, 2.0, b"[1, 2, 3]"), Transition(5, FAILED, 3, 1.0, -0.0, None, error),
         Transition(6, DONE, 1, float("nan"), 3.0, b""), Transition(7, RUNNING, 1, 2.0, float("nan"))],
        [Transition(7, DONE, 1, 2.0, 4.0, b'"seven"'), Transition(5, DONE, 4, 5.0, 6.0, b"5")],   # error cleared
    ]
    for i, recs in enumerate(steps):
        store.checkpoint("packed", RecordBatch.of_transitions(recs), b'{"step": %d}' % i if i == 1 else None)
    store.checkpoint("packed", [Transition(8, DONE, 1, 7.0, 8.0, b"8")])                          # one by one
    want = copy_state(state)
    for recs in steps + [[Transition(8, DONE, 1, 7.0, 8.0, b"8")]]:
        want = apply_batches(want, [(0.0, recs, None)])
    loaded = store.load("packed")
    assert_same_state(loaded, want)
    assert loaded.data == b'{"step": 1}' and 5 not in loaded.errors
    assert loaded.output(7) == "seven"


def test_packed_batches_with_outputs_kept_apart_or_not_saved_round_trip(store: Store) -> None:  # noqa: F811
    """A batch holding a large output (kept as a blob by durable stores) and one not saved
    (``persist=False``) goes record by record, to what each store loads back."""
    store.save(initial())
    large = bytes(range(256)) * (BLOB_MIN // 256 + 1)
    recs = [Transition(0, DONE, 1, 0.0, 1.0, large), Transition(1, DONE, 1, 0.0, 1.0, NOT_SAVED),
            Transition(2, DONE, 1, 0.0, 1.0, b"2")]
    batch = RecordBatch.of_transitions(recs)
    assert journal.encode_batch(1.0, batch) == journal.encode_batch(1.0, recs)
    store.checkpoint("packed", batch)
    loaded = store.load("packed")
    assert loaded.outputs[0] == large and loaded.outputs[1] is NOT_SAVED and loaded.outputs[2] == b"2"


def test_the_chain_of_packed_records_is_checked(tmp_path: Path) -> None:
    """Packed records are chained like any: a reordered record is corruption."""
    import sqlite3

    path = tmp_path / "runs.db"
    with SqliteStore(path) as sqlite_store:
        sqlite_store.save(initial())
        for n in range(3):
            sqlite_store.checkpoint("packed", RecordBatch.of_transitions([Transition(n, DONE, 1, 0.0, 1.0, b"1")]))
        rows = sqlite_store.load("packed")
    assert (rows.statuses[:3] == DONE).all()
    with sqlite3.connect(path) as db:
        first, second = (r[0] for r in db.execute("SELECT record FROM checkpoints ORDER BY seq LIMIT 2"))
        db.execute("UPDATE checkpoints SET record = ? WHERE seq = 1", (second,))
        db.execute("UPDATE checkpoints SET record = ? WHERE seq = 2", (first,))
    with SqliteStore(path) as reopened, pytest.raises(CorruptStateError):
        reopened.load("packed")


def test_a_run_hands_every_store_packed_batches_and_the_last_partial_one_is_kept(store: Store) -> None:  # noqa: F811
    """A batched run gives its store RecordBatch objects, the last one (closing, with the
    final snapshot to follow) through ``_checkpoint_before_save`` (SQLite: no fsync of its
    own).  Killed before its final snapshot (never written here), the journal alone holds
    all 7 completions, the last partial batch of 1 too."""
    saved: list[RunState] = []
    save = store.save
    got: list[tuple[str, object]] = []

    def first_save_only(state: RunState) -> None:
        if not saved:
            save(state)
        saved.append(state)

    def spy(name: str) -> object:
        real = getattr(store, name)

        def call(run_id: str, records: object, data: bytes | None = None) -> None:
            got.append((name, records))
            real(run_id, records, data)
        return call

    store.save = first_save_only  # type: ignore[method-assign]
    store.checkpoint = spy("checkpoint")  # type: ignore[method-assign]
    store._checkpoint_before_save = spy("_checkpoint_before_save")  # type: ignore[method-assign]
    builder = WorkflowBuilder("seven")
    for i in range(7):
        builder.add(f"n{i}", (lambda i=i: i * 10), depends_on=[f"n{i - 1}"] if i else ())
    with Engine(2) as engine:
        engine.run(builder.build(), store=store, run_id="partial",
                   checkpoint=CheckpointPolicy.batched(every=3, interval=3600.0, max_pending=3))
    assert all(type(b) is RecordBatch for _, b in got)
    calls = [(name, len(b)) for name, b in got]  # type: ignore[arg-type]
    assert calls[:3] == [("checkpoint", 3), ("checkpoint", 3), ("_checkpoint_before_save", 1)]
    assert calls[3:] in ([], [("checkpoint", 1)])  # Store's default hands it to checkpoint
    state = store.load("partial")
    assert state.run_status == "running"  # only the journal holds the progress
    assert (state.statuses == DONE).all()
    assert [state.output(i) for i in range(7)] == [i * 10 for i in range(7)]


def test_strict_runs_make_every_batch_durable_on_its_own(tmp_path: Path) -> None:
    """Under strict, even the batches written while the run closes go through
    ``checkpoint`` (each completion durable before anything depends on it)."""
    with SqliteStore(tmp_path / "runs.db") as sqlite_store:
        used: list[str] = []
        real = sqlite_store._checkpoint_before_save

        def before_save(*args: object) -> None:
            used.append("before_save")
            real(*args)  # type: ignore[arg-type]

        sqlite_store._checkpoint_before_save = before_save  # type: ignore[method-assign]
        builder = WorkflowBuilder("strict")
        for i in range(5):
            builder.add(f"n{i}", _noop, depends_on=[f"n{i - 1}"] if i else ())
        with Engine(2) as engine:
            engine.run(builder.build(), store=sqlite_store, run_id="s", checkpoint="strict")
        assert used == [] and (sqlite_store.load("s").statuses == DONE).all()


def test_memoized_output_bytes_keep_each_value_and_its_type(tmp_path: Path) -> None:
    """The writer makes the bytes of None, booleans and small ints once per run: each
    node still loads back its own value, of its own type (True is not 1), and values
    beyond the memo's range go through the serializer as before."""
    values = [None, True, False, 1, 0, -5, 1024, 1025, -1025, 2**70, 1.0, "1", True, 1]
    builder = WorkflowBuilder("memo")
    for i, value in enumerate(values):
        builder.add(f"n{i}", (lambda value=value: value))
    with SqliteStore(tmp_path / "runs.db") as sqlite_store, Engine(2) as engine:
        engine.run(builder.build(), store=sqlite_store, run_id="memo", checkpoint="batched")
        state = sqlite_store.load("memo")
    loaded = [state.output(i) for i in range(len(values))]
    assert loaded == values and [type(v) for v in loaded] == [type(v) for v in values]
