"""The store contract: every store (memory, JSON files, FlatBuffers files, SQLite) passes it."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flow_orchestrator import NodeStatus, WorkflowBuilder
from flow_orchestrator.errors import CorruptStateError, FlowError
from flow_orchestrator.state import ErrorRecord, RunState
from flow_orchestrator.stores import (
    CheckpointError,
    FlatBuffersFileStore,
    JsonFileStore,
    MemoryStore,
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
store = {"json": JsonFileStore, "flatbuffers": FlatBuffersFileStore, "sqlite": SqliteStore}[kind](where)
if mode == "hold":
    with store.lock(run_id):
        print("locked", flush=True)
        time.sleep(600)
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
    """One kind of store: how to open it (again, on the same storage) and reach its bytes."""

    kind: str
    where: str
    open: Callable[[], Store]

    def snapshot_path(self, run_id: str) -> Path:
        """The snapshot file of a file store."""
        suffix = {"json": ".json", "flatbuffers": ".fbs"}[self.kind]
        return Path(self.where) / f"{run_id}{suffix}"

    def read_snapshot(self, run_id: str) -> bytes:
        """The stored snapshot bytes (file or ``runs.state`` blob)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                return db.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        return self.snapshot_path(run_id).read_bytes()

    def write_snapshot(self, run_id: str, data: bytes) -> None:
        """Overwrite the stored snapshot bytes behind the store's back."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                db.execute("UPDATE runs SET state = ? WHERE run_id = ?", (data, run_id))
        else:
            self.snapshot_path(run_id).write_bytes(data)

    def damage_last_checkpoint(self, run_id: str, damage: Callable[[bytes], bytes]) -> None:
        """Replace the journal (files) or the last checkpoint row (SQLite) by ``damage(bytes)``."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.where) as db:
                seq, record = db.execute("SELECT seq, record FROM checkpoints WHERE run_id = ? ORDER BY seq DESC",
                                         (run_id,)).fetchone()
                db.execute("UPDATE checkpoints SET record = ? WHERE run_id = ? AND seq = ?", (damage(record), run_id, seq))
        else:
            path = Path(self.where) / f"{run_id}.journal"
            path.write_bytes(damage(path.read_bytes()))


def _memory_env(tmp_path: Path) -> Env:
    store = MemoryStore()
    return Env("memory", "", lambda: store)


FACTORIES = {
    "memory": _memory_env,
    "json": lambda p: Env("json", str(p / "runs"), lambda: JsonFileStore(p / "runs")),
    "flatbuffers": lambda p: Env("flatbuffers", str(p / "runs"), lambda: FlatBuffersFileStore(p / "runs")),
    "sqlite": lambda p: Env("sqlite", str(p / "runs.db"), lambda: SqliteStore(p / "runs.db")),
}
DURABLE = ["json", "flatbuffers", "sqlite"]


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
    return subprocess.Popen([sys.executable, "-c", CHILD, env.kind, env.where, run_id, mode],
                            stdout=subprocess.PIPE, text=True, env=environment, cwd="/")


@pytest.fixture(params=list(FACTORIES))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    """Every kind of store."""
    return FACTORIES[request.param](tmp_path)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    """The stores whose data outlives the process (files, SQLite)."""
    return FACTORIES[request.param](tmp_path)


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

    def test_list_and_delete(self, env: Env) -> None:
        """list_runs reports every run (or one workflow's), sorted; delete forgets a run."""
        store = env.open()
        store.save(make_state("b", workflow="etl"))
        store.save(make_state("a", workflow="other", status="completed"))
        runs = store.list_runs()
        assert [r.run_id for r in runs] == ["a", "b"]
        assert runs == [RunInfo("a", "other", "completed", 2000.0), RunInfo("b", "etl", "running", 2000.0)]
        assert [r.run_id for r in store.list_runs("etl")] == ["b"]
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
        store.checkpoint("run-1", [Transition(3, DONE, 2, 4.0, 5.0, b"[3]"),
                                   Transition(2, NodeStatus.PENDING, 3, float("nan"), float("nan"))])
        loaded = env.open().load("run-1") if env.kind != "memory" else store.load("run-1")
        assert loaded.statuses.tolist() == [DONE, DONE, NodeStatus.PENDING, DONE, NodeStatus.RUNNING, 0]
        assert loaded.attempts.tolist() == [1, 2, 3, 2, 1, 0]
        assert loaded.outputs == {0: b"1", 1: b'"two\\n"', 3: b"[3]"}
        assert loaded.errors == {}
        assert loaded.started[3] == 4.0 and loaded.ended[3] == 5.0 and np.isnan(loaded.ended[4])
        assert np.isnan(loaded.started[2])
        assert loaded.updated_at > 2000.0
        store.save(loaded)  # a snapshot supersedes the checkpoints
        assert_same(store.load("run-1"), loaded)

    def test_checkpoint_data_replaces_workflow_data(self, env: Env) -> None:
        """A batch carrying workflow data replaces the state's; one without keeps the last."""
        store = env.open()
        store.save(make_state())
        store.checkpoint("run-1", [Transition(3, DONE, 1, 1.0, 2.0, b"3")], data=b'{"k": 1}')
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
               [(3, 1, 1, 10**400, 0.0)], [(3, 1, 1, 0.0, "0")], [(True, 1, 1, 0.0, 0.0)], ["abc"]]
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
            assert "run-1" not in [r.run_id for r in store.list_runs()] or durable.kind == "sqlite"

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
        """The lock of a process killed with SIGKILL is taken over, not waited on."""
        durable.open()  # creates the directory or database
        child = _spawn(durable, "run-1", "hold")
        try:
            assert child.stdout.readline().strip() == "locked"
            store = durable.open()
            with pytest.raises(RunLockedError), store.lock("run-1"):
                pass
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
