"""Locks that do not lie: they die with their holder, and a holder finds out when it lost one.

Joined to the store contract of ``test_stores.py`` (its ``env``, ``durable`` and
``postgres`` fixtures; a holder SIGKILLed and never reaped, a zombie, is tested there:
``test_lock_of_killed_process_taken_over``): every store's lock gives a :class:`RunLock` whose ``check()`` tells a lost lock; and a
durable run whose lock is lost (its PostgreSQL session terminated, its lock file
deleted) stops with :class:`CheckpointFailedError` caused by :class:`LockLostError`,
writing nothing after the loss, so that a second engine can take the run over without
two of them running it.  Waits are on events (a node started, the run ended), never on
the wall clock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_stores
from test_stores import Env, make_state

import flow_orchestrator as fo
from flow_orchestrator.stores import (
    CheckpointFailedError,
    JsonFileStore,
    LockLostError,
    PostgresStore,
    RunLock,
    RunLockedError,
    SqliteStore,
    StoreError,
)

env, durable, postgres = test_stores.env, test_stores.durable, test_stores.postgres  # the contract's fixtures

DONE = int(fo.NodeStatus.COMPLETED)
PATIENCE = 120.0  # a bound on event waits, so that a broken build fails instead of hanging


def _lock_file(env: Env, run_id: str) -> Path:
    """The file a file or SQLite store flocks for ``run_id``."""
    if env.kind == "sqlite":
        return Path(env.where + "-locks") / f"{run_id}.lock"
    return Path(env.where) / f"{run_id}.lock"


# -- the contract: locks die with their holder; a handle tells a lost lock ------------------------


def test_lock_gives_a_handle_that_checks(env: Env) -> None:
    """``with store.lock(r) as lock``: ``lock.check()`` passes while held, raises LockLostError once released."""
    store = env.open()
    with store.lock("run-1") as lock:
        assert isinstance(lock, RunLock) and lock.run_id == "run-1"
        lock.check()
        assert lock.alive
    assert not lock.alive
    with pytest.raises(LockLostError, match="released"):
        lock.check()
    if env.kind == "memory":
        assert lock.check_interval is None  # a memory lock is never lost: no need to poll
    else:
        assert lock.check_interval == store.lock_check_interval == 1.0


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_lock_file_deleted_or_replaced_is_lost(durable: Env, how: str) -> None:
    """A lock file deleted or replaced under its holder: the holder's check says so
    (another process could lock the new file meanwhile)."""
    if durable.kind == "postgres":
        pytest.skip("PostgreSQL locks have no file")
    store = durable.open()
    with store.lock("run-1") as lock:
        path = _lock_file(durable, "run-1")
        assert path.exists()
        if how == "deleted":
            path.unlink()
        else:
            path.with_name("new").write_text("")
            os.replace(path.with_name("new"), path)
        # Why it matters: someone else gets the run.
        with durable.open().lock("run-1"), pytest.raises(LockLostError, match="lock file"):
            lock.check()
        assert not lock.alive  # lost for good


def test_sqlite_lock_file_beside_the_database(tmp_path: Path) -> None:
    """SQLite locks ``<database>-locks/<run>.lock``, kept after release and delete; the row names the holder."""
    store = SqliteStore(tmp_path / "runs.db")
    store.save(make_state())
    locked = pytest.raises(RunLockedError, match=f"locked by pid {os.getpid()} on ")
    with store.lock("run-1"), locked, SqliteStore(tmp_path / "runs.db").lock("run-1"):
        pass
    store.delete("run-1")
    assert (tmp_path / "runs.db-locks" / "run-1.lock").exists()  # never deleted: unlinking races
    with SqliteStore(tmp_path / "runs.db").lock("run-1"):
        pass


def test_sqlite_lock_where_no_lock_file_can_be_made(tmp_path: Path) -> None:
    """A database whose lock directory cannot be created still reads; ``lock`` raises StoreError."""
    store = SqliteStore(tmp_path / "runs.db")
    store.save(make_state())
    (tmp_path / "runs.db-locks").write_text("in the way")  # as a read-only directory would be, even for root
    with pytest.raises(StoreError, match="cannot create the lock directory"):
        store.lock("run-1").__enter__()
    assert store.load("run-1").run_id == "run-1"


def test_sqlite_lock_in_a_read_only_directory(tmp_path: Path) -> None:
    """A read-only directory holding an existing lock file: runs lock; without one: StoreError."""
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    store = SqliteStore(tmp_path / "runs.db")
    store.save(make_state())
    with store.lock("run-1"):
        pass
    os.chmod(tmp_path / "runs.db-locks", 0o555)
    os.chmod(tmp_path / "runs.db-locks" / "run-1.lock", 0o444)
    try:
        with store.lock("run-1"):
            pass
        with pytest.raises(StoreError, match="lock file"):
            store.lock("run-2").__enter__()
    finally:
        os.chmod(tmp_path / "runs.db-locks", 0o755)


def _lock_backend(env: Env, store: PostgresStore, run_id: str) -> int:
    """The backend pid holding ``run_id``'s advisory lock, found in ``pg_locks``."""
    unsigned = store._lock_key(run_id) & 0xFFFF_FFFF_FFFF_FFFF
    rows = env.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                   " AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                   (unsigned >> 32, unsigned & 0xFFFF_FFFF))
    assert len(rows) == 1
    return rows[0][0]


def test_postgres_terminated_lock_session_is_lost(postgres: Env) -> None:
    """pg_terminate_backend of the lock's session: check() raises LockLostError; another store locks the run."""
    store = postgres.open()
    with store.lock("run-1") as lock:
        lock.check()
        assert postgres.sql("SELECT pg_terminate_backend(%s)", (_lock_backend(postgres, store, "run-1"),)) == [(True,)]
        with pytest.raises(LockLostError, match="session ended"):
            lock.check()
        with postgres.open().lock("run-1"):
            pass


# -- durable runs: a lost lock stops the run, and nothing is written after it ---------------------


class Chain:
    """A strict chain ``a -> b -> c`` whose starts are counted; ``a`` tells it started,
    then waits: for ``gate`` (set by the test), or until the run is cancelled."""

    def __init__(self, wait_for_cancel: bool) -> None:
        self.starts: list[str] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.wait_for_cancel = wait_for_cancel

    def build(self) -> fo.Workflow:
        def a(ctx: object) -> str:
            self.starts.append("a")
            self.started.set()
            if self.wait_for_cancel:
                ctx.wait(PATIENCE)  # type: ignore[attr-defined]  # wakes when the run is cancelled
            else:
                self.gate.wait(PATIENCE)
            return "A"

        def step(name: str):
            def run() -> str:
                self.starts.append(name)
                return name.upper()
            return run

        return fo.WorkflowBuilder("chain").add("a", a).add("b", step("b"), depends_on="a") \
            .add("c", step("c"), depends_on="b").build()


def _run_losing_the_lock(store, lose, wait_for_cancel: bool, checkpoint: str = "strict",
                         saved: Callable[[], bool] | None = None) -> tuple[Chain, BaseException]:
    """Run the chain on ``store``; once ``a`` started and the run's initial snapshot is in
    the store (``saved()``: nodes start while the writer saves it), ``lose()`` the lock
    (then open the gate); the run's exception."""
    chain = Chain(wait_for_cancel)
    engine = fo.Engine(2)
    try:
        handle = engine.submit(chain.build(), store=store, run_id="r-1", checkpoint=checkpoint)
        assert chain.started.wait(PATIENCE)
        deadline = time.monotonic() + PATIENCE
        while not (saved or (lambda: store.exists("r-1")))():
            assert time.monotonic() < deadline, "the initial snapshot was never saved"
            time.sleep(0.005)
        lose()
        chain.gate.set()
        error = handle.exception(PATIENCE)
    finally:
        chain.gate.set()
        engine.close()
    assert error is not None, "the run went on without its lock"
    return chain, error


def _assert_stopped_by_lost_lock(error: BaseException, chain: Chain) -> None:
    assert isinstance(error, CheckpointFailedError) and isinstance(error.__cause__, LockLostError)
    assert "lock" in str(error) and "lost" in str(error)
    assert isinstance(error.result, fo.RunResult) and error.result.status == "cancelled"  # type: ignore[attr-defined]
    assert chain.starts == ["a"]  # nothing started after the loss


@pytest.mark.parametrize("checkpoint", ["strict", "batched", "end"])
def test_run_stops_when_its_lock_file_is_deleted(tmp_path: Path, checkpoint: str) -> None:
    """A file store's lock file deleted while ``a`` runs, then ``a`` completes: the run
    stops before writing ``a`` (strict: before ``b`` starts) and saves nothing more."""
    store = JsonFileStore(tmp_path / "runs")
    store.lock_check_interval = 3600.0  # only the check before a write can catch it
    chain, error = _run_losing_the_lock(store, (tmp_path / "runs" / "r-1.lock").unlink, False, checkpoint)
    if checkpoint == "strict":
        _assert_stopped_by_lost_lock(error, chain)
    else:
        assert isinstance(error.__cause__, LockLostError)
    saved = JsonFileStore(tmp_path / "runs").load("r-1")
    assert saved.run_status == "running" and DONE not in saved.statuses.tolist()  # the initial snapshot only


@pytest.mark.parametrize("checkpoint", ["strict", "end"])
def test_idle_run_notices_a_lost_lock(tmp_path: Path, checkpoint: str) -> None:
    """With nothing to write, the writer still checks the lock every lock_check_interval
    seconds, and cancels the run when it is gone."""
    store = JsonFileStore(tmp_path / "runs")
    store.lock_check_interval = 0.05
    chain, error = _run_losing_the_lock(store, (tmp_path / "runs" / "r-1.lock").unlink, True, checkpoint)
    _assert_stopped_by_lost_lock(error, chain)
    assert "lock was lost" in str(error.result.cancel_reason)  # type: ignore[attr-defined]


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "writing"])
def test_postgres_run_stops_when_its_lock_session_is_terminated(postgres: Env, idle: bool) -> None:
    """The lock's backend terminated by the server while ``a`` runs: the run stops with
    LockLostError (idle: found by the watchdog; writing: before writing ``a``), writes
    nothing after it, and a second engine then takes the run over; no node completes twice."""
    store = postgres.open()
    store.lock_check_interval = 0.2 if idle else 3600.0

    def lose() -> None:
        backend = _lock_backend(postgres, store, "r-1")
        assert postgres.sql("SELECT pg_terminate_backend(%s)", (backend,)) == [(True,)]

    def saved() -> bool:
        other = postgres.open()
        try:
            return other.exists("r-1")
        finally:
            other.close()

    chain, error = _run_losing_the_lock(store, lose, idle, saved=saved)
    _assert_stopped_by_lost_lock(error, chain)
    saved = postgres.open().load("r-1")
    assert saved.run_status == "running" and DONE not in saved.statuses.tolist()

    again = Chain(wait_for_cancel=False)
    again.gate.set()
    engine = fo.Engine(2)
    try:
        result = engine.resume(again.build(), "r-1", store=postgres.open())
    finally:
        engine.close()
    assert result.ok and [result.output(n) for n in "abc"] == ["A", "B", "C"]
    assert again.starts == ["a", "b", "c"]  # a was not saved completed by the first: it runs again, once
    assert chain.starts + again.starts == ["a", "a", "b", "c"]
