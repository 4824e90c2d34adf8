"""A SQLite store (stdlib :mod:`sqlite3`, WAL): the embedded default for durable runs.

Checkpoint rows hold one framed, chained record each (:mod:`.journal`, format 2): the
chain starts from :func:`.journal.snapshot_seed` of the run's snapshot blob, so rows that
are missing, repeated, reordered or left from another snapshot raise
:class:`~flow_orchestrator.errors.CorruptStateError` on load.  Rows of format 1 (no
chain) are still read; the first checkpoint on top of them folds them into a new
snapshot.  Every error of the database (a damaged file included) is raised as
:class:`StoreError` or :class:`CorruptStateError`.

Where it sits: layer L4 (services, durability): loaded on first use of its class, with
sqlite3.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from ..codecs import SMALL_STATE, flatbuffers_codec
from ..state import CorruptStateError, RunState
from . import journal
from ._locking import FileLock
from .base import (
    RunInfo,
    Store,
    _check_data,
    _taken,
    apply_batches,
    blob_refs,
    check_records,
    check_run_id,
    corrupt_info,
    held,
    kept_apart_of,
    listed,
    wanted,
)
from .errors import RunLockedError, RunNotFoundError, StoreError

if TYPE_CHECKING:
    from .base import RunLock

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
    updated_at REAL NOT NULL, num_nodes INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS outputs (
    run_id TEXT NOT NULL, node INTEGER NOT NULL, digest BLOB NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run_id, node, digest));
CREATE TABLE IF NOT EXISTS locks (
    run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, hostname TEXT NOT NULL,
    acquired_at REAL NOT NULL, token TEXT NOT NULL);
"""


_WAL_LIMIT = 64 * 2**20  # bytes of write-ahead log kept after a checkpoint of the log
_CHUNK = 16 * 2**20      # bytes per write into an output blob


class SqliteStore(Store):
    """Runs in one SQLite database: a ``runs`` table (snapshot encoded by the FlatBuffers
    codec), a ``checkpoints`` table (one framed batch per row) and a ``locks`` table.

    One connection shared by all threads under a mutex; every write is one transaction
    (``BEGIN IMMEDIATE``).  ``timeout`` is how long to wait for another process's
    write transaction.

    Run locks are ``flock`` locks on one file per run beside the database,
    ``<database>-locks/<run id>.lock`` (the directory is created on the first lock; the
    files are never deleted, not even by :meth:`delete`), so the kernel releases a lock
    when its holder exits, even one never reaped.  The ``locks`` table only tells who
    holds a run (pid, host, time), for :class:`RunLockedError`'s message.  A database in
    a directory where the lock directory cannot be created (read-only) can be read, but
    :meth:`lock` raises :class:`StoreError`.  An in-memory database (``":memory:"``)
    locks within this store object.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self._mutex = threading.RLock()
        self._verified: set[str] = set()  # runs whose checkpoint rows this object has checked
        self._conn: sqlite3.Connection | None = None
        memory = self.path in ("", ":memory:")
        self.lock_dir = None if memory else os.path.abspath(self.path) + "-locks"
        self._memory_locks: set[str] = set()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            # Freed pages go back to the file (incremental_vacuum after deletes): only
            # takes effect on a new database, so it comes before the tables.
            self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged schema text: UnicodeDecodeError
            self.close()
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE", *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the store's mutex.  ``synced=False``: committed without an
        fsync of its own (``synchronous=NORMAL``: kept if the process dies, made durable
        by the next synced commit, since the WAL is written in order), for what only
        informs: the ``locks`` rows (the lock itself is the ``flock``)."""
        with self._mutex:
            if self._conn is None:
                raise StoreError("the store is closed")
            db = self._conn
            try:
                if not synced:
                    db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"BEGIN {mode}")
            except sqlite3.Error as exc:
                self._synced(synced)
                raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if isinstance(exc, (sqlite3.Error, UnicodeDecodeError)):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise
            finally:
                self._synced(synced)

    def _synced(self, synced: bool) -> None:
        """Back to ``synchronous=FULL`` after a transaction that was not ``synced``."""
        if not synced and self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA synchronous=FULL")

    def save(self, state: RunState) -> None:
        """Replace the run's row and drop its checkpoints and the output blobs the new
        snapshot does not reference, in one transaction; then give freed pages back."""
        check_run_id(state.run_id)
        refs = blob_refs(state.outputs)
        blob = flatbuffers_codec.encode(state, refs=refs)
        with self._transaction() as db:
            self._put_outputs(db, state.run_id, {(node, digest): state.outputs[node] for node, digest in refs.items()})
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (state.run_id, state.workflow, state.run_status, state.updated_at, state.num_nodes, blob))
            db.execute("DELETE FROM checkpoints WHERE run_id = ?", (state.run_id,))
            kept = set(refs.items())
            stale = [(rowid,) for rowid, node, digest in db.execute(
                "SELECT rowid, node, digest FROM outputs WHERE run_id = ?", (state.run_id,)) if (node, digest) not in kept]
            db.executemany("DELETE FROM outputs WHERE rowid = ?", stale)
            self._verified.add(state.run_id)
        self._reclaim()

    def _put_outputs(self, db: sqlite3.Connection, run_id: str, blobs: dict[tuple[int, bytes], bytes]) -> None:
        """Write each output blob not stored yet, in pieces straight from its bytes
        (``zeroblob``, then incremental blob I/O: no copy of the whole output)."""
        for (node, digest), data in blobs.items():
            cur = db.execute("INSERT OR IGNORE INTO outputs VALUES (?, ?, ?, zeroblob(?))",
                             (run_id, node, digest, len(data)))
            if cur.rowcount != 1 or not data or cur.lastrowid is None:
                continue
            view = memoryview(data)
            with db.blobopen("outputs", "data", cur.lastrowid) as out:
                for start in range(0, len(view), _CHUNK):
                    out.write(view[start:start + _CHUNK])

    def _fetch(self, db: sqlite3.Connection, run_id: str) -> Callable[[int, int, bytes], bytes]:
        """What the decoders call for an output kept as a blob (read in one piece)."""
        def fetch(node: int, size: int, digest: bytes) -> bytes:
            row = db.execute("SELECT rowid, length(data) FROM outputs WHERE run_id = ? AND node = ? AND digest = ?",
                             (run_id, node, digest)).fetchone()
            if row is None:
                raise CorruptStateError(f"run {run_id!r}: the stored output of node id {node} is missing")
            if row[1] != size:
                raise CorruptStateError(f"run {run_id!r}: the stored output of node id {node} has {row[1]} bytes,"
                                        f" not the {size} its state references")
            with db.blobopen("outputs", "data", row[0], readonly=True) as blob:
                return blob.read()
        return fetch

    def _reclaim(self) -> None:
        """Give the pages freed by deletes back to the file system (``auto_vacuum`` is
        incremental: see the class docstring for databases made before it)."""
        with contextlib.suppress(StoreError), self._mutex:
            if self._conn is not None:
                try:  # executescript steps the pragma to its end (execute frees one page)
                    self._conn.executescript("PRAGMA incremental_vacuum;")
                except sqlite3.Error as exc:
                    raise StoreError(str(exc)) from exc

    def compact(self) -> None:
        """Turn on ``auto_vacuum = INCREMENTAL`` in a database made before this library did
        (it needs a ``VACUUM``: the whole file is rewritten, and needs as much free disk),
        and give every free page back.  Do it while no run writes to the store."""
        with self._mutex:
            if self._conn is None:
                raise StoreError("the store is closed")
            try:
                self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot compact {self.path}: {exc}") from exc

    def _num_nodes(self, db: sqlite3.Connection, run_id: str) -> int:
        row = db.execute("SELECT num_nodes FROM runs WHERE run_id = ?", (check_run_id(run_id),)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
        return row[0]

    def load(self, run_id: str) -> RunState:
        """The snapshot with the checkpoint rows replayed in order, their chain checked (a
        damaged last row is ignored, a damaged row before an intact one is corruption)."""
        with self._transaction("DEFERRED") as db:  # one consistent view, outputs kept apart included
            row = db.execute("SELECT state FROM runs WHERE run_id = ?", (check_run_id(run_id),)).fetchone()
            records = [r[0] for r in db.execute(
                "SELECT record FROM checkpoints WHERE run_id = ? ORDER BY seq", (run_id,))]
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.path}")
            if not isinstance(row[0], bytes):
                raise CorruptStateError(f"the state of run {run_id!r} is not a blob")
            fetch = self._fetch(db, run_id)
            state = flatbuffers_codec.decode(row[0], fetch=fetch)
            if state.run_id != run_id:
                raise CorruptStateError(f"the row of run {run_id!r} holds run {state.run_id!r}")
            batches = journal.replay_rows(records, journal.snapshot_seed(row[0]), fetch)
        return apply_batches(state, batches)

    def exists(self, run_id: str) -> bool:
        """Whether the ``runs`` table has a row for the run."""
        with self._transaction("DEFERRED") as db:
            return db.execute("SELECT 1 FROM runs WHERE run_id = ?", (check_run_id(run_id),)).fetchone() is not None

    def list_runs(self, workflow: str | None = None) -> list[RunInfo]:
        """The runs, from the ``runs`` table's columns and each snapshot's frame header
        (its first 24 bytes and its length; a snapshot of at most 64 KiB is read whole and
        its CRC32 checked; no state is decoded), sorted by run id."""
        fb = flatbuffers_codec
        sql = (f"SELECT run_id, workflow, status, updated_at, CASE WHEN length(state) <= {SMALL_STATE}"
               f" THEN state ELSE substr(state, 1, {fb.HEADER_SIZE}) END, length(state), typeof(state) FROM runs")
        args: tuple[str, ...] = ()
        if workflow is not None:
            sql, args = sql + " WHERE workflow = ? OR typeof(workflow) != 'text'", (workflow,)
        with self._transaction("DEFERRED") as db:
            rows = db.execute(sql + " ORDER BY run_id", args).fetchall()
        infos = [self._info(*row) for row in rows]
        return [info for info in infos if wanted(info, workflow)]

    def _info(self, run_id: object, workflow: object, status: object, updated_at: object, head: object,
              size: object, kind: object) -> RunInfo:
        """The :class:`RunInfo` of one ``runs`` row."""
        try:
            check_run_id(run_id)
        except StoreError as exc:
            return corrupt_info(repr(run_id), str(exc))
        assert isinstance(run_id, str)
        stamp = float(updated_at) if isinstance(updated_at, (int, float)) else math.nan
        if kind != "blob" or not isinstance(head, bytes) or not isinstance(size, int):
            return corrupt_info(run_id, "its state is not a blob", stamp)
        try:
            flatbuffers_codec.check_frame_header(head, size)
        except CorruptStateError as exc:
            return corrupt_info(run_id, str(exc), stamp, workflow if isinstance(workflow, str) else "")
        return listed(run_id, workflow, status, updated_at, lambda: self._held(run_id))

    def _held(self, run_id: str) -> bool:
        """Whether a live holder has the run's lock (probed without blocking nor creating it)."""
        if self.lock_dir is None:
            with self._mutex:
                return run_id in self._memory_locks
        return FileLock.held(os.path.join(self.lock_dir, run_id + ".lock"))

    def delete(self, run_id: str) -> None:
        """Delete the run's row and checkpoints."""
        with self._transaction() as db:
            self._num_nodes(db, run_id)
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM outputs WHERE run_id = ?", (run_id,))
            self._verified.discard(run_id)
        self._reclaim()

    def checkpoint(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None = None) -> None:
        """Insert the batch as one chained row and bump ``updated_at``, in one transaction;
        :class:`CorruptStateError` if the rows before it are damaged in the middle."""
        self._append(run_id, transitions, data, synced=True)

    def _checkpoint_before_save(self, run_id: str, transitions: Iterable[Sequence[object]],
                                data: bytes | None = None) -> None:
        """:meth:`checkpoint` committed without an fsync of its own: the final snapshot's
        commit, right after it, syncs the WAL with this row in it."""
        self._append(run_id, transitions, data, synced=False)

    def _append(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None,
                synced: bool) -> None:
        records, stamp = _taken(transitions), time.time()
        _check_data(data)
        if self._legacy(run_id):
            self.save(self.load(run_id))  # format 1 rows: folded into a snapshot first
        with self._transaction(synced=synced) as db:
            checked = check_records(records, self._num_nodes(db, run_id))
            blobs, refs = kept_apart_of(checked)
            self._put_outputs(db, run_id, blobs)
            payload = journal.encode_batch(stamp, checked, data, refs)
            chain, seq = self._tail(db, run_id)
            db.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (run_id, seq + 1, journal.frame(chain.seal(payload))))
            db.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (stamp, run_id))

    def _legacy(self, run_id: str) -> bool:
        """Whether the run's first checkpoint row is of format 1 (checked once per run and object)."""
        if run_id in self._verified:
            return False
        with self._transaction("DEFERRED") as db:
            first = db.execute("SELECT record FROM checkpoints WHERE run_id = ? ORDER BY seq LIMIT 1",
                               (check_run_id(run_id),)).fetchone()
        payload = journal.single_frame(first[0]) if first is not None else None
        return payload is not None and journal.is_legacy(payload)

    def _tail(self, db: sqlite3.Connection, run_id: str) -> tuple[journal.Chain, int]:
        """The chain after the run's last checkpoint row, and that row's ``seq`` (0: none).

        The first time per run and store object every row is checked (chain, damage in
        the middle) and a torn last row deleted; then only the last row is read."""
        last = db.execute("SELECT seq, record FROM checkpoints WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
                          (run_id,)).fetchone()
        if run_id in self._verified:
            if last is None:
                return journal.Chain(self._seed(db, run_id)), 0
            payload = journal.single_frame(last[1])
            if payload is not None:
                return journal.Chain.after(payload), last[0]
        rows = db.execute("SELECT seq, record FROM checkpoints WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        chain = journal.Chain(self._seed(db, run_id))
        payloads = journal.row_payloads([record for _, record in rows])
        for payload in payloads:
            chain.follow(payload)
        if len(payloads) < len(rows):
            db.execute("DELETE FROM checkpoints WHERE run_id = ? AND seq >= ?", (run_id, rows[len(payloads)][0]))
        self._verified.add(run_id)
        return chain, rows[len(payloads) - 1][0] if payloads else 0

    @staticmethod
    def _seed(db: sqlite3.Connection, run_id: str) -> bytes:
        """The first link of the run's chain, from its snapshot's header (not the whole blob)."""
        row = db.execute("SELECT substr(state, 1, ?) FROM runs WHERE run_id = ?",
                         (journal.SEED_BYTES, run_id)).fetchone()
        if row is None or not isinstance(row[0], bytes):
            raise CorruptStateError(f"the state of run {run_id!r} is not a blob")
        return journal.snapshot_seed(row[0])

    def _holder(self, run_id: str) -> str:
        """Who holds the run, per its ``locks`` row (best effort: only information)."""
        with contextlib.suppress(StoreError), self._transaction("DEFERRED") as db:
            row = db.execute("SELECT pid, hostname FROM locks WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None:
                return f"pid {row[0]} on {row[1]}"
        return "another process or store"

    def _acquire(self, run_id: str) -> tuple[FileLock | None, str]:
        token, host = uuid.uuid4().hex, socket.gethostname()
        file_lock = None
        if self.lock_dir is None:
            with self._mutex:
                if run_id in self._memory_locks:
                    raise RunLockedError(f"run {run_id!r} is locked by this store")
                self._memory_locks.add(run_id)
        else:
            try:
                os.makedirs(self.lock_dir, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the lock directory {self.lock_dir} beside the database: "
                                 f"{exc.strerror}") from exc
            try:
                file_lock = FileLock(os.path.join(self.lock_dir, run_id + ".lock"), run_id)
            except RunLockedError:
                raise RunLockedError(f"run {run_id!r} is locked by {self._holder(run_id)}") from None
        try:
            with self._transaction(synced=False) as db:
                db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?)",
                           (run_id, os.getpid(), host, time.time(), token))
        except BaseException:
            self._release((file_lock, token), own_row=False, run_id=run_id)
            raise
        if file_lock is not None:
            file_lock.note_holder()
        return file_lock, token

    def _release(self, held_lock: tuple[FileLock | None, str], own_row: bool = True, run_id: str = "") -> None:
        file_lock, token = held_lock
        try:
            if own_row:
                with contextlib.suppress(StoreError), self._transaction(synced=False) as db:
                    db.execute("DELETE FROM locks WHERE token = ?", (token,))
        finally:
            if file_lock is not None:
                file_lock.release()
            else:
                with self._mutex:
                    self._memory_locks.discard(run_id)

    @staticmethod
    def _probe(held_lock: tuple[FileLock | None, str]) -> None:
        if held_lock[0] is not None:
            held_lock[0].check()

    def lock(self, run_id: str) -> contextlib.AbstractContextManager[RunLock]:
        """``flock`` ``<database>-locks/<run id>.lock`` (see the class docstring): released by
        the kernel when the holder exits; reported lost if that file is deleted or replaced."""
        check_run_id(run_id)
        return held(run_id, lambda: self._acquire(run_id), lambda h: self._release(h, run_id=run_id),
                    self._probe, self.lock_check_interval)

    def close(self) -> None:
        """Close the connection."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
