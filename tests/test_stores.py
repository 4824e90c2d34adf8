"""The store contract: every store (memory, JSON files, FlatBuffers files, SQLite, PostgreSQL) passes it.

The PostgreSQL store runs against the server named by ``FLOW_ORCHESTRATOR_TEST_POSTGRES``
(a libpq conninfo), else the first of a few local defaults that answers; each test gets
a schema of its own, dropped after it.  When no server is reachable its tests skip,
saying why, except under ``FLOW_ORCHESTRATOR_CI=1`` (``.ci/run``), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flow_orchestrator import NodeStatus, WorkflowBuilder
from flow_orchestrator.errors import CorruptStateError, FlowError
from flow_orchestrator.state import BLOB_MIN, NOT_SAVED, ErrorRecord, RunState
from flow_orchestrator.stores import (
    CheckpointError,
    FlatBuffersFileStore,
    JsonFileStore,
    MemoryStore,
    PostgresStore,
    RunInfo,
    RunLockedError,
    RunNotFoundError,
    SqliteStore,
    Store,
    StoreError,
    Transition,
)

CHILD = """
import sys, time
from flow_orchestrator.stores import FlatBuffersFileStore, JsonFileStore, SqliteStore, RunLockedError
kind, where, run_id, mode = sys.argv[1:5]
if kind == "postgres":
    from flow_orchestrator.stores import PostgresStore
    store = PostgresStore(where, schema=sys.argv[5])
else:
    store = {"json": JsonFileStore, "flatbuffers": FlatBuffersFileStore, "sqlite": SqliteStore}[kind](where)
if mode == "hold":
    with store.lock(run_id):
        print("locked", flush=True)
        time.sleep(600)
elif mode == "run":  # a durable run whose second node never ends (killed mid-run by the test)
    from flow_orchestrator import WorkflowBuilder
    from flow_orchestrator.engine import Engine

    def stuck():
        print("running", flush=True)
        time.sleep(600)

    workflow = WorkflowBuilder("stuck").add("first", lambda: 1).add("stuck", stuck, depends_on="first").build()
    with Engine(1) as engine:
        engine.run(workflow, store=store, run_id=run_id, checkpoint="strict")
else:
    try:
        with store.lock(run_id):
            print("acquired", flush=True)
    except RunLockedError:
        print("run-locked", flush=True)
"""


# -- stores and helpers ---------------------------------------------------------------------------


@dataclass
class Env:
    """One kind of store: how to open it (again, on the same storage) and reach its bytes.

    ``where`` is a directory, a database file or (PostgreSQL) a conninfo, with ``schema``.
    """

    kind: str
    where: str
    open: Callable[[], Store]
    schema: str = ""
    _journal_header: bytes = b""

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` (``{s}``: the quoted schema) on the PostgreSQL store's database."""
        import psycopg

        with psycopg.connect(self.where, autocommit=True) as db:
            cur = db.execute(query.format(s=f'"{self.schema}"'), args)
            return cur.fetchall() if cur.description else []

    def snapshot_path(self, run_id: str) -> Path:
        """The snapshot file of a file store."""
        suffix = {"json": ".json", "flatbuffers": ".fbs"}[self.kind]
        return Path(self.where) / f"{run_id}{suffix}"

    def read_snapshot(self, run_id: str) -> bytes:
        """The stored snapshot bytes (file or ``runs.state`` blob)."""
        if self.kind == "postgres":
            return self.sql("SELECT state FROM {s}.runs WHERE run_id = %s", (run_id,))[0][0]
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                return db.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        return self.snapshot_path(run_id).read_bytes()

    def write_snapshot(self, run_id: str, data: bytes) -> None:
        """Overwrite the stored snapshot bytes behind the store's back."""
        if self.kind == "postgres":
            self.sql("UPDATE {s}.runs SET state = %s WHERE run_id = %s", (data, run_id))
        elif self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                db.execute("UPDATE runs SET state = ? WHERE run_id = ?", (data, run_id))
        else:
            self.snapshot_path(run_id).write_bytes(data)

    def damage_last_checkpoint(self, run_id: str, damage: Callable[[bytes], bytes]) -> None:
        """Replace the journal (files) or the last checkpoint row (databases) by ``damage(bytes)``."""
        if self.kind == "postgres":
            seq, record = self.sql("SELECT seq, record FROM {s}.checkpoints WHERE run_id = %s ORDER BY seq DESC"
                                   " LIMIT 1", (run_id,))[0]
            self.sql("UPDATE {s}.checkpoints SET record = %s WHERE run_id = %s AND seq = %s",
                     (damage(record), run_id, seq))
        elif self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                seq, record = db.execute("SELECT seq, record FROM checkpoints WHERE run_id = ? ORDER BY seq DESC",
                                         (run_id,)).fetchone()
                db.execute("UPDATE checkpoints SET record = ? WHERE run_id = ? AND seq = ?", (damage(record), run_id, seq))
        else:
            path = Path(self.where) / f"{run_id}.journal"
            path.write_bytes(damage(path.read_bytes()))


    def records(self, run_id: str) -> list[bytes]:
        """The framed checkpoint records, in order: a file journal's frames after its header,
        or the databases' checkpoint rows."""
        if self.kind == "postgres":
            return [bytes(r[0]) for r in self.sql("SELECT record FROM {s}.checkpoints WHERE run_id = %s ORDER BY seq",
                                                  (run_id,))]
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                return [r[0] for r in db.execute("SELECT record FROM checkpoints WHERE run_id = ? ORDER BY seq",
                                                 (run_id,))]
        data, frames, pos = (Path(self.where) / f"{run_id}.journal").read_bytes(), [], 0
        while pos < len(data):
            end = pos + 8 + struct.unpack_from("<I", data, pos)[0]
            frames.append(data[pos:end])
            pos = end
        self._journal_header = frames[0]
        return frames[1:]

    def blobs(self, run_id: str) -> dict[str, bytes]:
        """The outputs the store keeps apart from the run's snapshot, by a key of the store's."""
        if self.kind == "postgres":
            rows = self.sql("SELECT node, digest, chunk, data FROM {s}.outputs WHERE run_id = %s"
                            " ORDER BY node, digest, chunk", (run_id,))
            out: dict[str, bytes] = {}
            for node, digest, _, data in rows:
                key = f"{node}-{bytes(digest).hex()}"
                out[key] = out.get(key, b"") + bytes(data)
            return out
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                return {f"{node}-{digest.hex()}": data for node, digest, data in db.execute(
                    "SELECT node, digest, data FROM outputs WHERE run_id = ?", (run_id,))}
        folder = Path(self.where) / f"{run_id}.outputs"
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))} if folder.is_dir() else {}

    def write_blob(self, run_id: str, key: str, data: bytes | None) -> None:
        """Replace an output kept apart by ``data`` behind the store's back (``None``: delete it)."""
        if self.kind in ("sqlite", "postgres"):
            node, digest = key.split("-")
            args = (run_id, int(node), bytes.fromhex(digest))
            if self.kind == "postgres":
                self.sql("DELETE FROM {s}.outputs WHERE run_id = %s AND node = %s AND digest = %s", args)
                if data is not None:
                    self.sql("INSERT INTO {s}.outputs VALUES (%s, %s, %s, 0, %s)", (*args, data))
                return
            with sqlite3.connect(self.where) as db:
                db.execute("DELETE FROM outputs WHERE run_id = ? AND node = ? AND digest = ?", args)
                if data is not None:
                    db.execute("INSERT INTO outputs VALUES (?, ?, ?, ?)", (*args, data))
            return
        path = Path(self.where) / f"{run_id}.outputs" / key
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)

    def write_records(self, run_id: str, frames: list[bytes]) -> None:
        """Replace the checkpoint records by ``frames`` (after :meth:`records`)."""
        if self.kind == "postgres":
            self.sql("DELETE FROM {s}.checkpoints WHERE run_id = %s", (run_id,))
            for seq, frame in enumerate(frames, 1):
                self.sql("INSERT INTO {s}.checkpoints VALUES (%s, %s, %s)", (run_id, seq, frame))
        elif self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                db.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
                db.executemany("INSERT INTO checkpoints VALUES (?, ?, ?)",
                               [(run_id, seq, frame) for seq, frame in enumerate(frames, 1)])
        else:
            (Path(self.where) / f"{run_id}.journal").write_bytes(self._journal_header + b"".join(frames))


def _memory_env(tmp_path: Path) -> Env:
    store = MemoryStore()
    return Env("memory", "", lambda: store)


FACTORIES = {
    "memory": _memory_env,
    "json": lambda p: Env("json", str(p / "runs"), lambda: JsonFileStore(p / "runs")),
    "flatbuffers": lambda p: Env("flatbuffers", str(p / "runs"), lambda: FlatBuffersFileStore(p / "runs")),
    "sqlite": lambda p: Env("sqlite", str(p / "runs.db"), lambda: SqliteStore(p / "runs.db")),
}
KINDS = [*FACTORIES, "postgres"]
DURABLE = ["json", "flatbuffers", "sqlite", "postgres"]
from pg_server import postgres_conninfo as _postgres_conninfo


@contextlib.contextmanager
def _postgres_env() -> Iterator[Env]:
    """A PostgreSQL env on a schema of its own, dropped (its stores closed) afterwards."""
    conninfo, schema = _postgres_conninfo(), f"test_{uuid.uuid4().hex[:16]}"
    opened: list[Store] = []

    def open_store() -> Store:
        """A new store object on the test's schema."""
        opened.append(PostgresStore(conninfo, schema=schema, connect_timeout=5))
        return opened[-1]

    env = Env("postgres", conninfo, open_store, schema)
    try:
        yield env
    finally:
        for store in opened:
            store.close()
        env.sql("DROP SCHEMA IF EXISTS {s} CASCADE")


@contextlib.contextmanager
def _make_env(kind: str, tmp_path: Path) -> Iterator[Env]:
    """The env of ``kind`` for one test."""
    if kind == "postgres":
        with _postgres_env() as env:
            yield env
    else:
        yield FACTORIES[kind](tmp_path)


def _noop() -> None:
    return None


def _workflow(name: str = "etl", n: int = 6):
    builder = WorkflowBuilder(name)
    for i in range(n):
        builder.add(f"n{i}", _noop, depends_on=[f"n{i - 1}"] if i else ())
    return builder.build()


def make_state(run_id: str = "run-1", *, workflow: str = "etl", status: str = "running") -> RunState:
    """A state with completed, failed and pending nodes, NaN and non-NaN times, outputs and an error."""
    state = RunState.initial(_workflow(workflow), run_id, started_at=1000.0)
    state.statuses[:3] = [NodeStatus.COMPLETED, NodeStatus.COMPLETED, NodeStatus.FAILED]
    state.attempts[:3] = [1, 2, 3]
    state.started[:3] = [0.0, 1.5, -0.0]
    state.ended[:2] = [1.0, np.inf]
    state.outputs = {0: b"1", 1: b'"two\\n"'}
    state.errors = {2: ErrorRecord("ValueError", "bad \udcff", "Traceback ...")}
    state.run_status = status
    state.updated_at = 2000.0
    state.validate()
    return state


BIG = bytes(range(256)) * (BLOB_MIN // 256 + 3)  # an output a durable store keeps apart
BIGGER = BIG[::-1] + b"!"


def big_state(run_id: str = "run-1") -> RunState:
    """:func:`make_state` with a large output, an output not saved (persist=False) and a small one."""
    state = make_state(run_id)
    state.statuses[2] = DONE
    state.errors = {}
    state.outputs = {0: BIG, 1: b"1", 2: NOT_SAVED}
    state.validate()
    return state


def assert_same(a: RunState, b: RunState) -> None:
    """Equal states, with NaN in the same positions (and bit-exact non-NaN times)."""
    for name in ("started", "ended"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        assert x[~np.isnan(x)].tobytes() == y[~np.isnan(y)].tobytes(), name
    for name in ("statuses", "attempts", "succ_indptr", "succ_indices"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    for name in ("workflow", "fingerprint", "run_id", "run_status", "node_names", "outputs", "errors", "data",
                 "serializer", "format_version", "started_at", "updated_at"):
        assert getattr(a, name) == getattr(b, name), name


def _spawn(env: Env, run_id: str, mode: str) -> subprocess.Popen[str]:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # cwd="/": ``python -c`` puts the working directory first on sys.path, and the
    # uncompiled source package of a checkout there would shadow the installed one.
    return subprocess.Popen([sys.executable, "-c", CHILD, env.kind, env.where, run_id, mode, env.schema],
                            stdout=subprocess.PIPE, text=True, env=environment, cwd="/", start_new_session=True)


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """Every kind of store."""
    with _make_env(request.param, tmp_path) as made:
        yield made


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """The stores whose data outlives the process (files, SQLite, PostgreSQL)."""
    with _make_env(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def postgres() -> Iterator[Env]:
    """The PostgreSQL store alone."""
    with _postgres_env() as made:
        yield made


DONE = NodeStatus.COMPLETED


# -- the contract ---------------------------------------------------------------------------------


class TestStoreContract:
    """What every store guarantees."""

    def test_round_trip_exact(self, env: Env) -> None:
        """save/load keeps every field: arrays bit for bit, NaN positions, -0.0, inf, outputs, errors."""
        state = make_state()
        with env.open() as store:
            store.save(state)
            assert_same(store.load("run-1"), state)
        if env.kind != "memory":
            assert_same(env.open().load("run-1"), state)

    def test_large_outputs_round_trip_and_not_saved_outputs(self, env: Env) -> None:
        """Large outputs (kept apart by durable stores) and outputs not saved (persist=False)
        come back exactly from snapshots and checkpoints, from this store object and a new one."""
        state = big_state()
        with env.open() as store:
            store.save(state)
            assert_same(store.load("run-1"), state)
            store.checkpoint("run-1", [Transition(3, DONE, 1, 1.0, 2.0, BIGGER), Transition(4, DONE, 1, 2.0, 3.0, NOT_SAVED)])
            loaded = store.load("run-1")
            assert loaded.outputs == {0: BIG, 1: b"1", 2: NOT_SAVED, 3: BIGGER, 4: NOT_SAVED}
            assert loaded.outputs[2] is NOT_SAVED and loaded.outputs[4] is NOT_SAVED
            with pytest.raises(KeyError, match="not saved"):
                loaded.output(4)
            if env.kind != "memory":
                assert_same(env.open().load("run-1"), loaded)
            store.save(loaded)
            assert_same(store.load("run-1"), loaded)

    def test_large_outputs_are_written_once_not_per_snapshot(self, durable: Env) -> None:
        """A large output is one blob of the store: snapshots and checkpoint records reference
        it (they stay small), saving again does not write it again, and blobs no snapshot
        references any more are deleted, as are all of a run's with the run."""
        store = durable.open()
        state = big_state()
        store.save(state)
        assert len(durable.read_snapshot("run-1")) < BLOB_MIN
        assert list(durable.blobs("run-1").values()) == [BIG]
        store.checkpoint("run-1", [Transition(3, DONE, 1, 1.0, 2.0, BIGGER)])
        assert all(len(record) < BLOB_MIN for record in durable.records("run-1"))
        assert sorted(durable.blobs("run-1").values()) == sorted([BIG, BIGGER])
        final = store.load("run-1")
        store.save(final)  # the final snapshot: references, no copy
        assert len(durable.read_snapshot("run-1")) < BLOB_MIN
        assert sorted(durable.blobs("run-1").values()) == sorted([BIG, BIGGER])
        final.statuses[3], final.outputs = NodeStatus.PENDING, {0: BIG, 1: b"1", 2: NOT_SAVED}
        store.save(final)  # node 3 will run again: its blob is superseded
        assert list(durable.blobs("run-1").values()) == [BIG]
        assert_same(durable.open().load("run-1"), final)
        store.delete("run-1")
        assert durable.blobs("run-1") == {}

    def test_damaged_or_missing_blobs_are_corruption(self, durable: Env) -> None:
        """A blob that is damaged, cut short, longer, or missing raises CorruptStateError on
        load (from a snapshot or a checkpoint record), and loading writes nothing."""
        store = durable.open()
        store.save(big_state())
        store.checkpoint("run-1", [Transition(3, DONE, 1, 1.0, 2.0, BIGGER)])
        for key, blob in durable.blobs("run-1").items():
            flipped = bytearray(blob)
            flipped[len(blob) // 2] ^= 1
            for damaged in (bytes(flipped), blob[:-1], blob + b"\0", b"", None):
                durable.write_blob("run-1", key, damaged)
                before = durable.blobs("run-1")
                for reader in (store, durable.open()):
                    with pytest.raises(CorruptStateError):
                        reader.load("run-1")
                assert durable.blobs("run-1") == before
            durable.write_blob("run-1", key, blob)
        assert store.load("run-1").outputs[3] == BIGGER

    def test_unicode_run_id(self, env: Env) -> None:
        """Non-ASCII run ids are stored and listed unchanged."""
        store, state = env.open(), _with_run_id(make_state(), "rün 1 ☃ #2")
        store.save(state)
        assert_same(store.load("rün 1 ☃ #2"), state)
        assert [r.run_id for r in store.list_runs()] == ["rün 1 ☃ #2"]

    def test_caller_cannot_mutate_stored_state(self, env: Env) -> None:
        """Changing a saved or loaded state does not change the stored one."""
        store, state = env.open(), make_state()
        store.save(state)
        state.attempts[5] = 99
        loaded = store.load("run-1")
        assert loaded.attempts[5] == 0
        try:  # a copy, or read-only views of the stored bytes: either way the store is unchanged
            loaded.attempts[5] = 7
            loaded.outputs[4] = b"x"
        except ValueError:
            pass
        assert store.load("run-1").attempts[5] == 0
        assert 4 not in store.load("run-1").outputs

    def test_missing_run(self, env: Env) -> None:
        """load, delete and checkpoint of an unknown run raise RunNotFoundError (a LookupError)."""
        store = env.open()
        for call in (store.load, store.delete, lambda r: store.checkpoint(r, [])):
            with pytest.raises(RunNotFoundError) as info:
                call("nope")
            assert isinstance(info.value, (FlowError, LookupError))
        assert store.exists("nope") is False
        store.save(make_state("nope"))
        assert store.exists("nope") is True
        store.delete("nope")
        assert store.exists("nope") is False

    def test_list_and_delete(self, env: Env) -> None:
        """list_runs reports every run (or one workflow's), sorted; delete forgets a run."""
        store = env.open()
        store.save(make_state("b", workflow="etl"))
        store.save(make_state("a", workflow="other", status="completed"))
        with store.lock("b"):  # running, and its holder lives
            runs = store.list_runs()
        assert [r.run_id for r in runs] == ["a", "b"]
        assert runs == [RunInfo("a", "other", "completed", 2000.0), RunInfo("b", "etl", "running", 2000.0)]
        assert [r.run_id for r in store.list_runs("etl")] == ["b"]
        crashed = store.list_runs("etl")[0]  # saved as running, and nobody holds its lock
        assert crashed.run_status == "crashed" and "lock" in crashed.reason
        assert all(isinstance(r.updated_at, float) for r in runs)
        store.delete("a")
        assert [r.run_id for r in store.list_runs()] == ["b"]
        with pytest.raises(RunNotFoundError):
            store.load("a")

    def test_save_replaces(self, env: Env) -> None:
        """A second save of a run replaces the first."""
        store = env.open()
        store.save(make_state())
        newer = make_state(status="failed")
        store.save(newer)
        assert_same(store.load("run-1"), newer)
        assert len(store.list_runs()) == 1

    def test_checkpoints_replayed_in_order(self, env: Env) -> None:
        """Checkpoint batches are replayed on load in order, later records winning."""
        store = env.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 2.0, float("nan"))])
        store.checkpoint("run-1", [(3, NodeStatus.PENDING, 1, 2.0, 2.5, None, ErrorRecord("E", "retry")),
                                   (4, NodeStatus.RUNNING, 1, 3.0, float("nan"), None, None)])
        store.checkpoint("run-1", [Transition(2, DONE, 4, 3.0, 3.5, b"2"), Transition(3, DONE, 2, 4.0, 5.0, b"[3]")])
        loaded = env.open().load("run-1") if env.kind != "memory" else store.load("run-1")
        assert loaded.statuses.tolist() == [DONE, DONE, DONE, DONE, NodeStatus.RUNNING, 0]
        assert loaded.attempts.tolist() == [1, 2, 4, 2, 1, 0]
        assert loaded.outputs == {0: b"1", 1: b'"two\\n"', 2: b"2", 3: b"[3]"}
        assert loaded.errors == {}
        assert loaded.started[3] == 4.0 and loaded.ended[3] == 5.0 and np.isnan(loaded.ended[4])
        assert loaded.started[2] == 3.0
        assert loaded.updated_at > 2000.0
        store.save(loaded)  # a snapshot supersedes the checkpoints
        assert_same(store.load("run-1"), loaded)

    def test_checkpoint_data_replaces_workflow_data(self, env: Env) -> None:
        """A batch carrying workflow data replaces the state's; one without keeps the last."""
        store = env.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(2, DONE, 4, 1.0, 2.0, b"2"), Transition(3, DONE, 1, 1.0, 2.0, b"3")],
                         data=b'{"k": 1}')
        store.checkpoint("run-1", [Transition(4, NodeStatus.RUNNING, 1, 2.0, float("nan"))])
        store.checkpoint("run-1", [], data=b'{"k": 2, "z": [1]}')
        store.checkpoint("run-1", [Transition(4, DONE, 1, 2.0, 3.0, b"4")])
        loaded = env.open().load("run-1") if env.kind != "memory" else store.load("run-1")
        assert loaded.data == b'{"k": 2, "z": [1]}'
        assert loaded.load_data() == {"k": 2, "z": [1]}
        assert loaded.outputs[4] == b"4"
        with pytest.raises(CheckpointError):
            store.checkpoint("run-1", [], data="not bytes")  # type: ignore[arg-type]

    def test_invalid_checkpoints_refused(self, env: Env) -> None:
        """Invalid records raise CheckpointError and change nothing."""
        store = env.open()
        store.save(make_state())
        bad = [[(6, 1, 1, 0.0, 0.0)], [(3, 9, 1, 0.0, 0.0)], [(3, DONE, 1, 0.0, 0.0)],
               [(3, 1, 1, 0.0, 0.0, b"x")], [(3, 1, -1, 0.0, 0.0)], [(3, 1)], [("3", 1, 1, 0.0, 0.0)],
               [(3, 1, 1, 10**400, 0.0)], [(3, 1, 1, 0.0, "0")], [(True, 1, 1, 0.0, 0.0)], ["abc"],
               [(3, 1, 2**24, 0.0, 0.0)]]
        for batch in bad:
            with pytest.raises(CheckpointError):
                store.checkpoint("run-1", batch)
        assert_same(store.load("run-1"), make_state())

    def test_invalid_run_ids(self, env: Env) -> None:
        """Run ids that could escape a directory or are not valid names are refused."""
        store = env.open()
        for run_id in ("../x", "a/b", "a\\b", ".hidden", "..", "", "a\x00b", "a\nb", "\ud800", "é" * 101, 7):
            with pytest.raises(StoreError):
                store.load(run_id)
            with pytest.raises(StoreError):
                store.lock(run_id)
            if isinstance(run_id, str) and run_id:
                with pytest.raises(StoreError):
                    store.save(_with_run_id(make_state(), run_id))
        assert store.list_runs() == []

    def test_concurrent_saves_from_threads(self, env: Env) -> None:
        """Saves, checkpoints and loads from many threads at once lose or tear nothing."""
        store = env.open()
        saved = {f"t{i}-{k}": make_state("shared", status=("running", "failed")[k % 2]) for i in range(6)
                 for k in range(10)}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            """One thread's saves, checkpoints and loads."""
            try:
                for k in range(10):
                    store.save(saved[f"t{i}-{k}"])
                    store.save(make_state(f"own-{i}"))
                    store.checkpoint(f"own-{i}", [Transition(5, NodeStatus.RUNNING, k, 0.0, 0.0)])
                    store.load("shared")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.load("shared").run_status in ("running", "failed")
        for i in range(6):
            assert store.load(f"own-{i}").attempts[5] == 9
        assert len(store.list_runs()) == 7

    def test_lock_is_exclusive_in_process(self, env: Env) -> None:
        """A held run cannot be locked again by the same or another store object."""
        store = env.open()
        with store.lock("run-1"):
            with pytest.raises(RunLockedError), store.lock("run-1"):
                pass
            if env.kind != "memory":
                other = env.open()
                with pytest.raises(RunLockedError), other.lock("run-1"):
                    pass
            with store.lock("run-2"):
                pass
        with store.lock("run-1"):  # released
            pass

    # -- durable stores ---------------------------------------------------------------------

    def test_torn_checkpoint_tail_ignored(self, durable: Env) -> None:
        """A truncated last checkpoint is ignored, earlier ones kept, and later checkpoints still land."""
        store = durable.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        store.checkpoint("run-1", [Transition(3, DONE, 1, 1.0, 2.0, b"3")])
        durable.damage_last_checkpoint("run-1", lambda b: b[:-3])
        loaded = durable.open().load("run-1")
        assert loaded.statuses[3] == NodeStatus.RUNNING and 3 not in loaded.outputs
        store.checkpoint("run-1", [Transition(4, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        loaded = durable.open().load("run-1")
        assert loaded.statuses[3] == NodeStatus.RUNNING and loaded.statuses[4] == NodeStatus.RUNNING

    def test_flipped_checkpoint_byte_ignored(self, durable: Env) -> None:
        """A last checkpoint failing its CRC is ignored, earlier ones kept."""
        store = durable.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        store.checkpoint("run-1", [Transition(4, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        durable.damage_last_checkpoint("run-1", lambda b: b[:-5] + bytes([b[-5] ^ 0x40]) + b[-4:])
        loaded = durable.open().load("run-1")
        assert loaded.statuses[3] == NodeStatus.RUNNING and loaded.statuses[4] == NodeStatus.PENDING

    def test_fuzzed_files_load_or_raise_corruption(self, durable: Env) -> None:
        """Damaged snapshots load as a valid state or raise CorruptStateError; torn journals lose only their tail."""
        store = durable.open()
        store.save(make_state())
        for k in range(3):
            store.checkpoint("run-1", [Transition(3 + k, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        good = durable.read_snapshot("run-1")
        rng = random.Random(5)
        for _ in range(60):
            damaged = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            durable.write_snapshot("run-1", bytes(damaged[: rng.randint(0, len(damaged))] if rng.random() < 0.3
                                                   else damaged))
            try:
                durable.open().load("run-1").validate()
            except CorruptStateError:
                pass
        durable.write_snapshot("run-1", good)
        for cut in (1, 4, 8, 20, 45):
            store.checkpoint("run-1", [Transition(5, DONE, cut, 1.0, 2.0, b"5")])
            durable.damage_last_checkpoint("run-1", lambda b, c=cut: b[:-c])
            loaded = durable.open().load("run-1")
            assert loaded.statuses[3:6].tolist() == [NodeStatus.RUNNING] * 3 and 5 not in loaded.outputs

    def test_corrupt_snapshot(self, durable: Env) -> None:
        """A damaged snapshot raises CorruptStateError on load and is left as it is."""
        store = durable.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        data = bytearray(durable.read_snapshot("run-1"))
        for damaged in (bytes(data[: len(data) // 2]), bytes(data[:-1]) + bytes([data[-1] ^ 1]), b"", b"\x00" * 64):
            durable.write_snapshot("run-1", damaged)
            for reader in (store, durable.open()):
                with pytest.raises(CorruptStateError):
                    reader.load("run-1")
            assert durable.read_snapshot("run-1") == damaged
            [info] = store.list_runs()  # listed (never hidden), corrupt, with a reason
            assert info.run_id == "run-1" and info.run_status == "corrupt" and info.reason

    def test_damaged_runs_are_listed_corrupt(self, durable: Env) -> None:
        """A damaged snapshot is listed corrupt with a reason, never left out and never
        raising: every truncation, and any flipped byte of a state of at most 64 KiB
        (checked whole); while the run id stays taken (exists, delete works)."""
        store = durable.open()
        store.save(make_state("ok", status="completed"))
        store.save(make_state())
        good = durable.read_snapshot("run-1")
        assert len(good) < 65536
        rng = random.Random(7)
        cuts = [0, 1, 10, 23, 24, 25, len(good) // 2, len(good) - 1]
        flips = [*range(30), *rng.sample(range(30, len(good)), 20)]
        reader = durable.open()  # another store object (and, for PostgreSQL, connection)
        for damaged in [good[:cut] for cut in cuts] + [good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]
                                                        for i in flips]:
            durable.write_snapshot("run-1", damaged)
            runs = reader.list_runs()
            assert [r.run_id for r in runs] == ["ok", "run-1"]
            assert runs[0].run_status == "completed"
            assert runs[1].run_status == "corrupt" and runs[1].reason, runs[1]
            assert runs[1] in reader.list_runs("etl")  # its workflow: unknown or etl
            with pytest.raises(CorruptStateError):
                reader.load("run-1")
            assert store.exists("run-1")
        store.delete("run-1")
        assert [r.run_id for r in store.list_runs()] == ["ok"]

    def test_listing_reads_headers_only(self, durable: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        """list_runs decodes no state; in a state over 64 KiB it checks the frame header
        and (files) the head: a truncation or a damaged head is corrupt, damage in the
        body is found by load."""
        store = durable.open()
        big = make_state()
        big.data = b'{"pad": "' + b"x" * 200_000 + b'"}'  # inline (a large output would be a blob of its own)
        store.save(big)
        from flow_orchestrator.codecs import flatbuffers_codec, json_codec

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("list_runs decoded a state")

        good = durable.read_snapshot("run-1")
        with monkeypatch.context() as patch:
            for codec in (flatbuffers_codec, json_codec):
                patch.setattr(codec, "decode", refuse)
            assert [(r.run_status, r.workflow) for r in durable.open().list_runs()] == [("crashed", "etl")]
            for damaged in (good[:-1], good[:100_000], good[:8] + b"\x07" + good[9:], b"X" + good[1:]):
                durable.write_snapshot("run-1", damaged)
                [info] = durable.open().list_runs()
                assert info.run_status == "corrupt" and info.reason
            middle = len(good) // 2
            durable.write_snapshot("run-1", good[:middle] + bytes([good[middle] ^ 1]) + good[middle + 1:])
            assert [r.run_status for r in durable.open().list_runs()] == ["crashed"]
        with pytest.raises(CorruptStateError):
            durable.open().load("run-1")

    def test_crashed_run_is_listed_crashed(self, durable: Env) -> None:
        """A durable run whose process is SIGKILLed mid-run is listed crashed (its lock
        holder is gone); while the process lives it is running."""
        durable.open()  # creates the directory or database
        child = _spawn(durable, "job", "run")
        try:
            assert child.stdout.readline().strip() == "running"
            store = durable.open()
            [info] = store.list_runs()
            assert (info.run_id, info.workflow, info.run_status, info.reason) == ("job", "stuck", "running", "")
            os.kill(child.pid, signal.SIGKILL)
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped yet
            [info] = store.list_runs()
            assert info.run_status == "crashed" and "lock" in info.reason
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        state = store.load("job")  # it can be resumed: the first node is done
        assert state.run_status == "running" and state.statuses.tolist()[0] == DONE
        with store.lock("job"):  # the probe took nothing: the lock is free to take
            assert store.list_runs()[0].run_status == "running"

    def _three_records(self, durable: Env) -> Store:
        """A saved run with three checkpoint records (of a run that could have happened)."""
        store = durable.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(2, NodeStatus.RUNNING, 4, 1.0, float("nan"))])
        store.checkpoint("run-1", [Transition(2, DONE, 4, 1.0, 2.0, b"2")])
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 2.0, float("nan"))])
        return store

    def test_dropped_repeated_or_reordered_records_are_corruption(self, durable: Env) -> None:
        """Whole intact records dropped (but the last), repeated or reordered never load as a
        state that never existed: CorruptStateError, and no checkpoint lands on top of them."""
        store = self._three_records(durable)
        good = durable.records("run-1")
        assert len(good) == 3
        r1, r2, r3 = good
        for edited in ([r2, r3], [r1, r3], [r1, r2, r2, r3], [r1, r1, r2, r3], [r1, r3, r2], [r2, r1, r3],
                       [r1, r2, r3, r2], [r1, r2, r3, r1]):
            durable.write_records("run-1", edited)
            for reader in (durable.open(), store):
                with pytest.raises(CorruptStateError):
                    reader.load("run-1")
            with pytest.raises(CorruptStateError):
                durable.open().checkpoint("run-1", [Transition(5, NodeStatus.RUNNING, 1, 3.0, float("nan"))])
        durable.write_records("run-1", [r1, r2])  # the last record lost: as if the crash came before it
        loaded = durable.open().load("run-1")
        assert loaded.statuses[2] == DONE and loaded.statuses[3] == NodeStatus.PENDING

    def test_records_of_another_snapshot_never_apply(self, durable: Env) -> None:
        """Records copied from another run (or an older snapshot) are refused or ignored."""
        store = self._three_records(durable)
        foreign = durable.records("run-1")
        store.save(make_state("run-2"))
        store.checkpoint("run-2", [Transition(5, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        durable.records("run-2")
        durable.write_records("run-2", foreign)
        try:
            loaded = durable.open().load("run-2")
        except CorruptStateError:
            return
        assert_same(loaded, make_state("run-2"))  # a file journal naming another snapshot is stale

    def test_damaged_record_in_the_middle_is_corruption(self, durable: Env) -> None:
        """A damaged record followed by intact ones raises CorruptStateError: never skipped with
        the later records applied, never cut off with them by the next checkpoint."""
        store = self._three_records(durable)
        r1, r2, r3 = durable.records("run-1")
        for damaged in (r2[:-1] + bytes([r2[-1] ^ 0x10]), r2[:12] + bytes([r2[12] ^ 1]) + r2[13:], r2[:-4],
                        b"\xff" * 8 + r2[8:], r2[:8] + b"\x00" + r2[9:]):
            durable.write_records("run-1", [r1, damaged, r3])
            for reader in (durable.open(), store):
                with pytest.raises(CorruptStateError):
                    reader.load("run-1")
            with pytest.raises(CorruptStateError):
                durable.open().checkpoint("run-1", [Transition(5, NodeStatus.RUNNING, 1, 3.0, float("nan"))])
            if durable.kind in ("sqlite", "postgres"):
                assert durable.records("run-1")[2] == r3  # the intact record was not cut off
            else:
                assert (Path(durable.where) / "run-1.journal").read_bytes().endswith(r3)

    def test_fuzzed_journals_load_or_raise_corruption(self, durable: Env) -> None:
        """Random damage to the records loads a state the run went through or raises
        CorruptStateError, nothing else."""
        self._three_records(durable)
        good = durable.records("run-1")
        states = []
        for k in range(4):
            durable.write_records("run-1", good[:k])
            states.append(durable.open().load("run-1"))
        rng = random.Random(13)
        for _ in range(60 if durable.kind == "postgres" else 150):
            frames = [bytearray(f) for f in good]
            for _ in range(rng.randint(1, 3)):
                frame = frames[rng.randrange(3)]
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            if rng.random() < 0.3:
                frames[-1] = frames[-1][: rng.randrange(len(frames[-1]))]
            durable.write_records("run-1", [bytes(f) for f in frames])
            try:
                loaded = durable.open().load("run-1")
            except CorruptStateError:
                continue
            assert any(loaded.statuses.tolist() == s.statuses.tolist() and loaded.outputs == s.outputs
                       for s in states)

    def test_lock_in_another_process(self, durable: Env) -> None:
        """A run locked here cannot be locked by another process until released."""
        store = durable.open()
        with store.lock("run-1"):
            child = _spawn(durable, "run-1", "try")
            out, _ = child.communicate(timeout=120)
        assert out.strip() == "run-locked"
        child = _spawn(durable, "run-1", "try")
        out, _ = child.communicate(timeout=120)
        assert out.strip() == "acquired"

    def test_lock_of_killed_process_taken_over(self, durable: Env) -> None:
        """The lock of a process killed with SIGKILL is taken over at once, not waited on, even
        while the killed process is a zombie nobody reaped (``os.kill(pid, 0)`` still finds it)."""
        durable.open()  # creates the directory or database
        child = _spawn(durable, "run-1", "hold")
        try:
            assert child.stdout.readline().strip() == "locked"
            store = durable.open()
            with pytest.raises(RunLockedError), store.lock("run-1"):
                pass
            os.kill(child.pid, signal.SIGKILL)
            # Wait until every thread of the child is dead, without reaping it (WNOWAIT).
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
            with store.lock("run-1"):
                stat = Path(f"/proc/{child.pid}/stat").read_bytes()
                assert stat[stat.rfind(b")") + 2:][:1] == b"Z"  # still not reaped
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        other = durable.open()
        with store.lock("run-1"), pytest.raises(RunLockedError), other.lock("run-1"):
            pass


def _with_run_id(state: RunState, run_id: str) -> RunState:
    state.run_id = run_id
    return state


class TestStoreSpecifics:
    """What is particular to one kind of store: stale journals, file layout, WAL, closing."""

    @pytest.mark.parametrize("kind", ["json", "flatbuffers"])
    def test_stale_journal_after_crash_in_save_is_ignored(self, kind: str, tmp_path: Path) -> None:
        """A journal of an older snapshot (crash before its removal) is not replayed."""
        env = FACTORIES[kind](tmp_path)
        store = env.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        old_journal = (tmp_path / "runs" / "run-1.journal").read_bytes()
        newer = make_state(status="failed")
        store.save(newer)
        (tmp_path / "runs" / "run-1.journal").write_bytes(old_journal)  # as if the crash came before the unlink
        assert_same(env.open().load("run-1"), newer)
        store.checkpoint("run-1", [Transition(4, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        loaded = env.open().load("run-1")
        assert loaded.statuses[3] == NodeStatus.PENDING and loaded.statuses[4] == NodeStatus.RUNNING

    @pytest.mark.parametrize("kind", ["json", "flatbuffers"])
    def test_no_temporary_files_left(self, kind: str, tmp_path: Path) -> None:
        """Only the snapshot and journal remain after writes."""
        store = FACTORIES[kind](tmp_path).open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 1.0, float("nan"))])
        assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
            ["run-1" + FACTORIES[kind](tmp_path).snapshot_path("run-1").suffix, "run-1.journal"])

    def test_sqlite_refuses_a_file_that_is_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not a database raises StoreError."""
        (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
        with pytest.raises(StoreError):
            SqliteStore(tmp_path / "junk.db")

    @pytest.mark.parametrize("kind", ["json", "sqlite"])
    def test_format_1_journals_are_read_and_folded_before_appending(self, kind: str, tmp_path: Path) -> None:
        """Records without sequence numbers (journal format 1) still load; the next checkpoint
        folds them into a snapshot before appending a chained record."""
        from flow_orchestrator.stores import journal

        env = FACTORIES[kind](tmp_path)
        store = env.open()
        store.save(make_state())
        old = [journal.frame(journal.encode_batch(5.0, [Transition(2, NodeStatus.RUNNING, 4, 1.0, float("nan"))])),
               journal.frame(journal.encode_batch(6.0, [Transition(2, DONE, 4, 1.0, 2.0, b"2")]))]
        if kind == "sqlite":
            env.write_records("run-1", old)
        else:
            snapshot = env.read_snapshot("run-1")
            head = journal.frame(struct.pack("<16sQ32s", b"FORS-JOURNAL-1\x00\x00", 6,
                                             __import__("hashlib").sha256(snapshot).digest()))
            (tmp_path / "runs" / "run-1.journal").write_bytes(head + b"".join(old))
        loaded = env.open().load("run-1")
        assert loaded.statuses[2] == DONE and loaded.outputs[2] == b"2" and loaded.updated_at == 6.0
        env.open().checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 2.0, float("nan"))])
        again = env.open().load("run-1")
        assert again.statuses[2] == DONE and again.statuses[3] == NodeStatus.RUNNING
        assert len(env.records("run-1")) == 1  # folded: one chained record on a new snapshot

    def test_batch_with_trailing_bytes_is_refused(self) -> None:
        """Bytes after a batch's records that are not its data are corruption, not "no data"."""
        from flow_orchestrator.stores import journal

        records = [Transition(3, DONE, 1, 1.0, 2.0, b"3")]
        assert journal.decode_batch(journal.encode_batch(5.0, records))[1:] == (records, None)
        assert journal.decode_batch(journal.encode_batch(5.0, records, b"{}"))[2] == b"{}"
        for tail in (b"\x00", b"\x02", b"\xff" * 3, b"\x00" * 9):
            with pytest.raises(CorruptStateError):
                journal.decode_batch(journal.encode_batch(5.0, records) + tail)
        with pytest.raises(CorruptStateError):
            journal.decode_batch(journal.encode_batch(5.0, records, b"{}") + b"\x00")

    def test_records_reference_blobs_and_mark_outputs_not_saved(self) -> None:
        """A record references an output kept as a blob by length and sha256 (fetched and
        checked on decoding), marks an output not saved, and refuses unknown or clashing flags."""
        from flow_orchestrator.state import blob_digest
        from flow_orchestrator.stores import journal

        records = [Transition(3, DONE, 1, 1.0, 2.0, BIG), Transition(4, DONE, 1, 1.0, 2.0, NOT_SAVED)]
        payload = journal.encode_batch(5.0, records, None, {id(BIG): blob_digest(BIG)})
        assert len(payload) < 200
        assert journal.decode_batch(payload, lambda node, size, digest: BIG)[1] == records
        for wrong in (BIG[:-1], BIGGER):
            with pytest.raises(CorruptStateError):
                journal.decode_batch(payload, lambda node, size, digest, wrong=wrong: wrong)
        with pytest.raises(CorruptStateError, match="kept apart"):
            journal.decode_batch(payload)
        flags_at = 12 + 25  # the batch header, then the first record's fields before its flags
        for flags in (1 | 4, 4 | 8, 16, 0x80):
            forged = bytearray(payload)
            forged[flags_at] = flags
            with pytest.raises(CorruptStateError):
                journal.decode_batch(bytes(forged), lambda node, size, digest: BIG)

    def test_sqlite_with_a_damaged_schema_raises_store_errors(self, tmp_path: Path) -> None:
        """One byte of the schema's text made invalid UTF-8: StoreError, not UnicodeDecodeError."""
        SqliteStore(tmp_path / "runs.db").close()
        data = bytearray((tmp_path / "runs.db").read_bytes())
        at = data.index(b"tablerunsruns")  # sqlite_master's row of table runs: type, name, tbl_name
        data[at + 5] = 0xFF
        (tmp_path / "runs.db").write_bytes(bytes(data))
        with pytest.raises(StoreError):
            SqliteStore(tmp_path / "runs.db")

    def test_fuzzed_sqlite_files_raise_only_store_errors(self, tmp_path: Path) -> None:
        """Random byte flips and truncations of a database: opening, loading, listing and
        checkpointing raise only StoreError or CorruptStateError (never sqlite3's or Python's)."""
        path = tmp_path / "runs.db"
        with SqliteStore(path) as store:
            store.save(make_state())
            store.checkpoint("run-1", [Transition(2, NodeStatus.RUNNING, 4, 1.0, float("nan"))])
            store.checkpoint("run-1", [Transition(2, DONE, 4, 1.0, 2.0, b"2")])
        good = path.read_bytes()
        assert not Path(f"{path}-wal").exists() or not Path(f"{path}-wal").stat().st_size
        rng = random.Random(31)
        for _ in range(200):
            damaged = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            if rng.random() < 0.2:
                damaged = damaged[: rng.randrange(len(damaged))]
            for extra in ("-wal", "-shm"):
                Path(f"{path}{extra}").unlink(missing_ok=True)
            path.write_bytes(bytes(damaged))
            try:
                with SqliteStore(path, timeout=0.1) as store:
                    for call in (lambda: store.load("run-1"), store.list_runs, lambda: store.exists("run-1"),
                                 lambda: store.checkpoint("run-1", [Transition(3, NodeStatus.RUNNING, 1, 2.0, 2.0)])):
                        try:
                            call()
                        except (StoreError, CorruptStateError):
                            pass
            except StoreError:
                pass

    def test_sqlite_gives_space_back(self, tmp_path: Path) -> None:
        """A new SQLite database has auto_vacuum = INCREMENTAL: replacing snapshots and deleting
        runs shrinks the file; compact() turns it on in an older database."""
        path = tmp_path / "runs.db"
        with SqliteStore(path) as store:
            assert store._conn is not None and store._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
            for i in range(3):
                state = big_state(f"run-{i}")
                state.outputs[0] = os.urandom(4 * BLOB_MIN)
                store.save(state)
            store.checkpoint("run-0", [Transition(3, DONE, 1, 1.0, 2.0, os.urandom(4 * BLOB_MIN))])
            store.save(store.load("run-0"))
            for i in range(3):
                store.delete(f"run-{i}")
            store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            assert path.stat().st_size < BLOB_MIN  # 5 blobs of 4 * BLOB_MIN were written
        old = tmp_path / "old.db"
        with sqlite3.connect(old) as db:
            db.execute("CREATE TABLE t (x)")
        with SqliteStore(old) as store:
            assert store._conn is not None and store._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
            store.compact()
            assert store._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2

    def test_lock_probe_is_waited_out_and_never_blocks_a_holder(self, tmp_path: Path) -> None:
        """A shared lock in the way (list_runs' probe, dropped at once) does not make a lock
        fail; an exclusive one (a holder) does, at once; the probe sees a holder."""
        import fcntl

        from flow_orchestrator.stores._locking import FileLock

        path = str(tmp_path / "r.lock")
        assert not FileLock.held(path) and not os.path.exists(path)  # no file: free, none created
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_SH)
        timer = threading.Timer(0.02, os.close, (fd,))
        timer.start()
        lock = FileLock(path, "r")
        timer.join()
        assert FileLock.held(path)
        with pytest.raises(RunLockedError):
            FileLock(path, "r")
        lock.release()
        assert not FileLock.held(path)

    def test_sqlite_uses_wal(self, tmp_path: Path) -> None:
        """The SQLite database is in WAL mode."""
        SqliteStore(tmp_path / "runs.db").save(make_state())
        with sqlite3.connect(tmp_path / "runs.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_closed_store_refuses(self, tmp_path: Path) -> None:
        """A closed store raises StoreError."""
        for kind, factory in FACTORIES.items():
            (tmp_path / kind).mkdir()
            store = factory(tmp_path / kind).open()
            store.close()
            with pytest.raises(StoreError):
                store.save(make_state())


class TestPostgresStore:
    """What is particular to the PostgreSQL store: lazy psycopg, errors, reconnection, locks."""

    def test_import_needs_no_psycopg(self) -> None:
        """Importing the stores (and naming PostgresStore) does not import psycopg."""
        code = ("import sys, flow_orchestrator.stores as s; s.PostgresStore; "
                "assert 'psycopg' not in sys.modules, 'psycopg imported'")
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        subprocess.run([sys.executable, "-c", code], check=True, env=environment, cwd="/")

    def test_missing_psycopg_is_a_store_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without psycopg, creating the store says how to install it."""
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(StoreError, match=r"pip install 'flow-orchestrator\[postgres\]'"):
            PostgresStore("host=127.0.0.1")

    def test_bad_server_or_arguments_are_store_errors(self) -> None:
        """An unreachable server, a malformed conninfo or schema raise StoreError (never psycopg's
        errors), and no message shows the password."""
        pytest.importorskip("psycopg", reason="needs the 'postgres' extra")
        for conninfo, schema, message in (
                ("host=127.0.0.1 port=1 user=x password=s3cret dbname=x", "public", "cannot connect to PostgreSQL"),
                ("nonsense", "public", "invalid PostgreSQL connection string"),
                ("host=127.0.0.1", 'a"b', "invalid schema name"), ("host=127.0.0.1", "", "invalid schema name")):
            with pytest.raises(StoreError, match=message) as info:
                PostgresStore(conninfo, schema=schema, connect_timeout=2)
            assert "s3cret" not in str(info.value)

    def test_lost_connection_is_a_store_error_then_reopened(self, postgres: Env) -> None:
        """A connection the server ended fails one call with StoreError; the next call reconnects."""
        store = postgres.open()
        store.save(make_state())
        backend = store._conn.info.backend_pid  # type: ignore[attr-defined]
        assert postgres.sql("SELECT pg_terminate_backend(%s)", (backend,)) == [(True,)]
        with pytest.raises(StoreError) as info:
            store.load("run-1")
        assert type(info.value) is StoreError
        assert_same(store.load("run-1"), make_state())

    def test_lock_names_holder_and_schemas_are_apart(self, postgres: Env) -> None:
        """RunLockedError names the holding process; the same run id on another schema is another lock."""
        store = postgres.open()
        other = Env("postgres", postgres.where, lambda: PostgresStore(postgres.where, schema=postgres.schema + "_b"),
                    postgres.schema + "_b")
        try:
            with other.open() as elsewhere, store.lock("run-1"):
                locked = pytest.raises(RunLockedError, match=f"locked by flow-orchestrator pid {os.getpid()} on ")
                with locked, postgres.open().lock("run-1"):
                    pass
                with elsewhere.lock("run-1"):
                    pass
        finally:
            other.sql("DROP SCHEMA IF EXISTS {s} CASCADE")

    def test_lock_session_keepalives_and_close_releases(self, postgres: Env) -> None:
        """The lock's own session has server keepalives and no idle timeout; close() releases the lock."""
        store, other = postgres.open(), postgres.open()
        lock = store.lock("run-1")
        with lock:
            [conn] = store._locks  # type: ignore[attr-defined]
            assert conn.execute("SHOW idle_session_timeout").fetchone() == ("0",)
            if not str(conn.info.host).startswith("/"):  # TCP, not a Unix socket
                assert conn.execute("SHOW tcp_keepalives_idle").fetchone() == ("10",)
                assert conn.info.get_parameters()["keepalives"] == "1"
                assert conn.info.get_parameters()["tcp_user_timeout"] == "15000"  # interval * count, in ms
            store.close()
            with other.lock("run-1"):
                pass
        for call in (lambda: store.lock("run-2"), lambda: store.save(make_state()), lambda: store.load("run-1")):
            with pytest.raises(StoreError):
                call()

    def test_session_of_dead_holder_is_waited_for(self, postgres: Env) -> None:
        """A lock still held by the ending session of a dead local process is waited for, briefly;
        one of a live process is refused at once."""
        import psycopg

        from flow_orchestrator.stores.postgres import _app_name

        store = postgres.open()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        key = store._lock_key("run-1")  # type: ignore[attr-defined]
        for pid, refused in ((dead.pid, False), (os.getpid(), True)):
            holder = psycopg.connect(postgres.where, autocommit=True,
                                     application_name=_app_name(pid, socket.gethostname()))
            assert holder.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
            timer = threading.Timer(0.3, holder.close)
            timer.start()
            try:
                if refused:
                    with pytest.raises(RunLockedError), store.lock("run-1"):
                        pass
                else:
                    with store.lock("run-1"):
                        pass
            finally:
                timer.join()
