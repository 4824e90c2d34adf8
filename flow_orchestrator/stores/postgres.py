"""A PostgreSQL store (psycopg 3, the ``postgres`` extra): runs shared by processes and hosts.

Tables (created when missing, in the store's schema):

* ``runs``: ``run_id`` (primary key, ``COLLATE "C"`` so runs list in code-point order),
  ``workflow``, ``status``, ``updated_at``, ``num_nodes`` and ``state``, the snapshot
  encoded by the FlatBuffers codec (``BYTEA``);
* ``checkpoints``: one row per checkpoint batch, ``(run_id, seq)`` the primary key and
  ``record`` the batch framed and chained as a journal record (``<u32 length><u32
  CRC32>`` + payload, format 2 of :mod:`.journal`): the chain starts from
  :func:`.journal.snapshot_seed` of the run's snapshot, so rows that are missing,
  repeated, reordered or left from another snapshot raise ``CorruptStateError`` on
  load.  Format 1 rows (no chain) are still read; the first checkpoint on top of them
  folds them into a new snapshot.

Every write is one transaction.  ``checkpoint`` first updates the run's row (``UPDATE
... RETURNING``), which locks it, so batches of one run get consecutive ``seq`` numbers
whichever process writes them, and a concurrent ``save`` or ``delete`` is ordered
before or after the batch, never interleaved.  ``load`` reads the snapshot and its
checkpoint rows in one statement (one consistent view) and replays the rows in order: a
damaged last row is ignored (a torn tail), a damaged row before an intact one is
corruption.

Locks are session-level advisory locks (``pg_try_advisory_lock``) held by a dedicated
connection opened for each :meth:`PostgresStore.lock` and closed on release.  The lock
key is the signed 64-bit BLAKE2b digest of the schema and the run id, so stores on
different schemas of one database do not block each other.  Two run ids whose keys
collide (about one chance in ``2**64`` for a pair) merely cannot be locked at the same
time: the second one gets :class:`RunLockedError`; two holders of one run are still
impossible, so no ``locks`` table is kept to tell such collisions apart.

The server releases a session's advisory locks when the session ends, so the lock of a
dead process does not outlive it: a killed process's socket is closed by its kernel, and
the server sees it at once.  Against a host that vanished (power loss, network cut) the
lock connection sets the server's ``tcp_keepalives_idle`` / ``_interval`` / ``_count``
for its session, so the server probes the silent client and ends the session (and frees
the lock) after about ``idle + interval * count`` seconds, and libpq's client-side
``keepalives`` so a holder notices a server that vanished.  It also sets
``idle_session_timeout=0`` so a server-wide idle timeout cannot drop a held lock.  The
lock connection's ``application_name`` names the holder (``flow-orchestrator pid N on
HOST``), quoted by :class:`RunLockedError`; a lock whose holder is a dead process on
this host, whose session the server has not ended yet, is waited for (at most
``dead_holder_grace`` seconds) instead of being refused.  Session locks need a direct
connection (or a pooler in session mode): a transaction-mode pooler would move them.

Where it sits: layer L4 (services, durability): loaded on first use of its class, with
psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..codecs import SMALL_STATE, flatbuffers_codec
from ..state import CorruptStateError, RunState
from . import journal
from ._locking import pid_alive
from .base import (
    RunInfo,
    RunLock,
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
)
from .errors import LockLostError, RunLockedError, RunNotFoundError, StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

_APP_NAME = "flow-orchestrator"
_HOLDER = re.compile(r"flow-orchestrator pid (\d+) on ")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
_CHUNK = 2**20  # bytes per row of an output kept apart (what psycopg copies at a time)
_SETUP_LOCK = (0x666C6F77, 0x7363686D)  # a two-int4 advisory key: a space apart from the run locks' bigint keys


def _psycopg() -> ModuleType:
    """The :mod:`psycopg` module; :class:`StoreError` telling how to install it if missing."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError("PostgresStore needs psycopg 3: pip install 'flow-orchestrator[postgres]'"
                         f" ({exc})") from exc
    return psycopg


def _app_name(pid: int, host: str) -> str:
    """The ``application_name`` of a lock connection, as the server stores it (printable
    ASCII, at most 63 bytes), so that it can be compared with ``pg_stat_activity``'s."""
    name = f"{_APP_NAME} pid {pid} on {host}"
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in name)[:63]


def _dead_local_holder(app_name: str) -> bool:
    """Whether ``app_name`` names a lock connection of a process of this host that is gone."""
    match = _HOLDER.match(app_name)
    if match is None:
        return False
    pid = int(match.group(1))
    return app_name == _app_name(pid, socket.gethostname()) and not pid_alive(pid)


def _quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (names are checked to hold no quote)."""
    return '"' + name + '"'


class PostgresStore(Store):
    """Runs in a PostgreSQL database (psycopg 3): a ``runs`` and a ``checkpoints`` table in
    ``schema``, locks as session-level advisory locks (see the module docstring).

    ``conninfo`` is a libpq connection string or URI (``""``: libpq's defaults and
    ``PG*`` environment variables).  ``schema`` (a plain identifier, created when missing
    with the tables) holds the tables: give the store a schema of its own when the
    database has other tables named ``runs`` or ``checkpoints``.  ``connect_timeout``
    is in (whole) seconds.
    ``keepalives`` is ``(idle, interval, count)`` in seconds for the TCP keepalives of
    the lock connections (server side and client side) and the client side of the data
    connection, unless ``conninfo`` sets its own.  ``dead_holder_grace`` is how long
    :meth:`lock` waits for the server to end the session of a lock holder that is a
    dead process of this host.

    One connection (autocommit, each write in an explicit transaction) is shared by all
    threads under a mutex; a connection found broken is replaced on the next call.
    Every psycopg error becomes a :class:`StoreError`.  A missing psycopg raises
    :class:`StoreError` here, not at ``import flow_orchestrator.stores``.
    """

    def __init__(self, conninfo: str = "", *, schema: str = "public", connect_timeout: int = 10,
                 keepalives: tuple[int, int, int] = (10, 5, 3), dead_holder_grace: float = 5.0) -> None:
        """Connect, and create the schema and tables if missing; :class:`StoreError` if impossible."""
        self._pg = _psycopg()
        if type(schema) is not str or not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"invalid schema name {schema!r}: letters, digits, _ and $, at most 63, not starting"
                             " with a digit")
        try:
            self._params = self._pg.conninfo.conninfo_to_dict(conninfo)
        except self._pg.Error as exc:
            raise StoreError(f"invalid PostgreSQL connection string: {exc}") from None
        self.conninfo, self.schema = conninfo, schema
        self.connect_timeout, self.keepalives, self.dead_holder_grace = connect_timeout, keepalives, dead_holder_grace
        host, port, db = (self._params.get(k) for k in ("host", "port", "dbname"))
        self.where = f"PostgreSQL {host or 'default host'}:{port or 'default port'}/{db or 'default db'}, schema {schema}"
        self._mutex = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._locks: set[psycopg.Connection[Any]] = set()  # open lock connections, closed by close()
        self._verified: set[str] = set()  # runs whose checkpoint rows this object has checked
        s = _quote(schema)
        self._runs, self._checkpoints, self._outputs = f"{s}.runs", f"{s}.checkpoints", f"{s}.outputs"
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- connections and transactions -----------------------------------------------------

    def _connect(self, *, lock: bool) -> psycopg.Connection[Any]:
        """A new autocommit connection (a lock connection: named, server keepalives on)."""
        idle, interval, count = self.keepalives
        extra: dict[str, Any] = {"connect_timeout": int(self.connect_timeout), "client_encoding": "UTF8"}
        for name, value in (("keepalives", 1), ("keepalives_idle", idle), ("keepalives_interval", interval),
                            ("keepalives_count", count)):
            if name not in self._params:
                extra[name] = value
        if lock:
            if "tcp_user_timeout" not in self._params:  # a check unanswered this long fails
                extra["tcp_user_timeout"] = int(interval * count * 1000)
            extra["application_name"] = _app_name(os.getpid(), socket.gethostname())
            extra["options"] = " ".join(filter(None, (
                self._params.get("options"), f"-c tcp_keepalives_idle={idle}",
                f"-c tcp_keepalives_interval={interval}", f"-c tcp_keepalives_count={count}",
                "-c idle_session_timeout=0")))
        else:
            extra["fallback_application_name"] = _APP_NAME
        try:
            return self._pg.connect(self._pg.conninfo.make_conninfo(self.conninfo, **extra), autocommit=True)
        except self._pg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {str(exc).strip()}") from None

    def _connection(self) -> psycopg.Connection[Any]:
        """The data connection (the mutex held), opened again if it broke."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is None or self._conn.closed:
            self._conn = self._connect(lock=False)
        return self._conn

    @contextlib.contextmanager
    def _cursor(self, *, transaction: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor of the data connection under the mutex, in a transaction that commits
        when the block ends (rolls back on an error); psycopg errors become StoreError."""
        with self._mutex:
            conn = self._connection()
            try:
                with contextlib.ExitStack() as stack:
                    if transaction:
                        stack.enter_context(conn.transaction())
                    yield stack.enter_context(conn.cursor())
            except self._pg.Error as exc:
                if conn.broken:
                    with contextlib.suppress(self._pg.Error):
                        conn.close()
                raise StoreError(f"{self.where}: {str(exc).strip()}") from None

    def _setup(self) -> None:
        """Create the schema and the tables when missing (serialised by an advisory lock, so
        that stores opened at once do not race; only by those who need to create)."""
        tables = f"""
            CREATE TABLE IF NOT EXISTS {self._runs} (
                run_id TEXT COLLATE "C" PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL, num_nodes INTEGER NOT NULL, state BYTEA NOT NULL);
            CREATE TABLE IF NOT EXISTS {self._checkpoints} (
                run_id TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, record BYTEA NOT NULL,
                PRIMARY KEY (run_id, seq));
            CREATE TABLE IF NOT EXISTS {self._outputs} (
                run_id TEXT COLLATE "C" NOT NULL, node INTEGER NOT NULL, digest BYTEA NOT NULL,
                chunk INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (run_id, node, digest, chunk))"""
        exists = ("SELECT count(*) FROM pg_tables WHERE schemaname = %s"
                  " AND tablename IN ('runs', 'checkpoints', 'outputs')")
        with self._cursor() as cur:
            if cur.execute(exists, (self.schema,)).fetchone() == (3,):
                return
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _SETUP_LOCK)
            if not cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
                cur.execute(f"CREATE SCHEMA {_quote(self.schema)}")
            cur.execute(tables)

    # -- the Store interface ----------------------------------------------------------------

    def save(self, state: RunState) -> None:
        """Insert or replace the run's row and drop its checkpoints, in one transaction."""
        check_run_id(state.run_id)
        refs = blob_refs(state.outputs)
        blob = flatbuffers_codec.encode(state, refs=refs)
        with self._cursor() as cur:
            self._put_outputs(cur, state.run_id, {(node, digest): state.outputs[node] for node, digest in refs.items()})
            cur.execute(f"INSERT INTO {self._runs} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE"
                        " SET workflow = EXCLUDED.workflow, status = EXCLUDED.status,"
                        " updated_at = EXCLUDED.updated_at, num_nodes = EXCLUDED.num_nodes, state = EXCLUDED.state",
                        (state.run_id, state.workflow, state.run_status, state.updated_at, state.num_nodes, blob))
            cur.execute(f"DELETE FROM {self._checkpoints} WHERE run_id = %s", (state.run_id,))
            kept = set(refs.items())
            stale = {(node, bytes(digest)) for node, digest in cur.execute(
                f"SELECT DISTINCT node, digest FROM {self._outputs} WHERE run_id = %s", (state.run_id,), binary=True)
                } - kept
            for node, digest in stale:
                cur.execute(f"DELETE FROM {self._outputs} WHERE run_id = %s AND node = %s AND digest = %s",
                            (state.run_id, node, digest))
        with self._mutex:
            self._verified.add(state.run_id)

    def _put_outputs(self, cur: psycopg.Cursor[Any], run_id: str, blobs: dict[tuple[int, bytes], bytes]) -> None:
        """Write each output blob not stored yet, as rows of at most ``_CHUNK`` bytes (so no
        copy of a whole output is ever made on the way to the server)."""
        for (node, digest), data in blobs.items():
            if cur.execute(f"SELECT 1 FROM {self._outputs} WHERE run_id = %s AND node = %s AND digest = %s"
                           " AND chunk = 0", (run_id, node, digest)).fetchone() is not None:
                continue
            view = memoryview(data)
            for i, start in enumerate(range(0, max(len(view), 1), _CHUNK)):
                cur.execute(f"INSERT INTO {self._outputs} VALUES (%s, %s, %s, %s, %s)",
                            (run_id, node, digest, i, view[start:start + _CHUNK]))

    def _fetch(self, cur: psycopg.Cursor[Any], run_id: str) -> Callable[[int, int, bytes], bytes]:
        """What the decoders call for an output kept as a blob (its rows, joined)."""
        def fetch(node: int, size: int, digest: bytes) -> bytes:
            rows = cur.execute(f"SELECT chunk, data FROM {self._outputs} WHERE run_id = %s AND node = %s"
                               " AND digest = %s ORDER BY chunk", (run_id, node, digest), binary=True).fetchall()
            if not rows:
                raise CorruptStateError(f"run {run_id!r}: the stored output of node id {node} is missing")
            if [r[0] for r in rows] != list(range(len(rows))):
                raise CorruptStateError(f"run {run_id!r}: the stored output of node id {node} has missing pieces")
            return b"".join(r[1] for r in rows)
        return fetch

    def load(self, run_id: str) -> RunState:
        """The snapshot with the checkpoint rows replayed in order, their chain checked (a
        damaged last row ignored); the row and its checkpoints are read in one statement
        (one consistent view)."""
        check_run_id(run_id)
        # One read-only transaction at REPEATABLE READ: the snapshot, its checkpoint rows
        # and the outputs they reference are one consistent view.
        with self._mutex, self._cursor(transaction=False) as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                row = cur.execute(f"SELECT r.state, ARRAY(SELECT c.record FROM {self._checkpoints} c"
                                  " WHERE c.run_id = r.run_id ORDER BY c.seq)"
                                  f" FROM {self._runs} r WHERE r.run_id = %s", (run_id,), binary=True).fetchone()
                if row is None:
                    raise RunNotFoundError(f"no run {run_id!r} in {self.where}")
                blob, records = row
                if not isinstance(blob, bytes):
                    raise CorruptStateError(f"the state of run {run_id!r} is not a byte string")
                fetch = self._fetch(cur, run_id)
                state = flatbuffers_codec.decode(blob, fetch=fetch)
                if state.run_id != run_id:
                    raise CorruptStateError(f"the row of run {run_id!r} holds run {state.run_id!r}")
                batches = journal.replay_rows(list(records or ()), journal.snapshot_seed(blob), fetch)
            finally:
                with contextlib.suppress(self._pg.Error):
                    cur.execute("ROLLBACK")
        return apply_batches(state, batches)

    def exists(self, run_id: str) -> bool:
        """Whether the ``runs`` table has a row for the run."""
        check_run_id(run_id)
        with self._cursor(transaction=False) as cur:
            return cur.execute(f"SELECT 1 FROM {self._runs} WHERE run_id = %s", (run_id,)).fetchone() is not None

    def list_runs(self, workflow: str | None = None) -> list[RunInfo]:
        """The runs, from the ``runs`` table's columns and each snapshot's frame header (its
        first 24 bytes and its length; a snapshot of at most 64 KiB is read whole and its
        CRC32 checked; no state is decoded), sorted by run id (code points).  The locks of running runs are probed with ``pg_try_advisory_lock_shared``
        (dropped at once; a holder's lock is exclusive, and :meth:`lock` waits out a probe)."""
        fb = flatbuffers_codec
        sql = (f"SELECT run_id, workflow, status, updated_at, CASE WHEN octet_length(state) <= {SMALL_STATE}"
               f" THEN state ELSE substring(state from 1 for {fb.HEADER_SIZE}) END, octet_length(state)"
               f" FROM {self._runs}")
        args: tuple[str, ...] = ()
        if workflow is not None:
            sql, args = sql + " WHERE workflow = %s", (workflow,)
        with self._cursor(transaction=False) as cur:
            rows = cur.execute(sql + ' ORDER BY run_id COLLATE "C"', args, binary=True).fetchall()
        running = [row[0] for row in rows if row[2] == "running"]
        free = self._unheld(running) if running else set()
        infos = []
        for run_id, name, status, updated_at, head, size in rows:
            try:
                flatbuffers_codec.check_frame_header(bytes(head), size)
            except CorruptStateError as exc:
                infos.append(corrupt_info(run_id, str(exc), updated_at, name))
                continue
            infos.append(listed(run_id, name, status, updated_at, run_id not in free))
        return infos

    def _unheld(self, run_ids: list[str]) -> set[str]:
        """Those of ``run_ids`` whose lock no live holder has: a shared advisory lock is
        taken (and dropped at once) where no session holds the exclusive one, and a lock
        still held by the session of a dead process of this host counts as free."""
        keys = {self._lock_key(run_id): run_id for run_id in run_ids}
        with self._mutex:
            conn = self._connection()
            try:
                got = conn.execute("SELECT k, pg_try_advisory_lock_shared(k) FROM unnest(%s::bigint[]) AS k",
                                   (list(keys),)).fetchall()
                free = [key for key, ok in got if ok]
                if free:
                    conn.execute("SELECT pg_advisory_unlock_shared(k) FROM unnest(%s::bigint[]) AS k", (free,))
                dead = [key for key, ok in got if not ok and _dead_local_holder(self._holder(conn, key) or "")]
            except self._pg.Error as exc:
                raise StoreError(f"{self.where}: {str(exc).strip()}") from None
        return {keys[key] for key in (*free, *dead)}

    def delete(self, run_id: str) -> None:
        """Delete the run's row and checkpoints, in one transaction."""
        check_run_id(run_id)
        with self._cursor() as cur:
            if cur.execute(f"DELETE FROM {self._runs} WHERE run_id = %s RETURNING 1", (run_id,)).fetchone() is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.where}")
            cur.execute(f"DELETE FROM {self._checkpoints} WHERE run_id = %s", (run_id,))
            cur.execute(f"DELETE FROM {self._outputs} WHERE run_id = %s", (run_id,))
        with self._mutex:
            self._verified.discard(run_id)

    def checkpoint(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None = None) -> None:
        """Append the batch as one chained row and bump ``updated_at``, in one transaction
        that holds the run's row lock (so concurrent writers of a run are serialised);
        :class:`CorruptStateError` if the rows before it are damaged in the middle."""
        records, stamp = _taken(transitions), time.time()
        _check_data(data)
        check_run_id(run_id)
        if self._legacy(run_id):
            self.save(self.load(run_id))  # format 1 rows: folded into a snapshot first
        with self._cursor() as cur:
            row = cur.execute(f"UPDATE {self._runs} SET updated_at = %s WHERE run_id = %s"
                              f" RETURNING num_nodes, substring(state from 1 for {journal.SEED_BYTES})",
                              (stamp, run_id), binary=True).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.where}")
            checked = check_records(records, row[0])
            blobs, refs = kept_apart_of(checked)
            self._put_outputs(cur, run_id, blobs)
            payload = journal.encode_batch(stamp, checked, data, refs)
            chain, seq = self._tail(cur, run_id, journal.snapshot_seed(bytes(row[1])))
            cur.execute(f"INSERT INTO {self._checkpoints} VALUES (%s, %s, %s)",
                        (run_id, seq + 1, journal.frame(chain.seal(payload))))
        with self._mutex:
            self._verified.add(run_id)

    def _legacy(self, run_id: str) -> bool:
        """Whether the run's first checkpoint row is of format 1 (checked once per run and object)."""
        with self._mutex:
            if run_id in self._verified:
                return False
        with self._cursor(transaction=False) as cur:
            first = cur.execute(f"SELECT record FROM {self._checkpoints} WHERE run_id = %s ORDER BY seq LIMIT 1",
                                (run_id,), binary=True).fetchone()
        payload = journal.single_frame(bytes(first[0])) if first is not None else None
        return payload is not None and journal.is_legacy(payload)

    def _tail(self, cur: psycopg.Cursor[Any], run_id: str, seed: bytes) -> tuple[journal.Chain, int]:
        """The chain after the run's last checkpoint row, and that row's ``seq`` (0: none).

        The first time per run and store object every row is checked (chain, damage in
        the middle) and a torn last row deleted; then only the last row is read."""
        last = cur.execute(f"SELECT seq, record FROM {self._checkpoints} WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
                           (run_id,), binary=True).fetchone()
        if last is None:
            return journal.Chain(seed), 0
        with self._mutex:
            verified = run_id in self._verified
        payload = journal.single_frame(bytes(last[1])) if verified else None
        if payload is not None:
            return journal.Chain.after(payload), int(last[0])
        rows = cur.execute(f"SELECT seq, record FROM {self._checkpoints} WHERE run_id = %s ORDER BY seq",
                           (run_id,), binary=True).fetchall()
        chain = journal.Chain(seed)
        payloads = journal.row_payloads([bytes(record) for _, record in rows])
        for payload in payloads:
            chain.follow(payload)
        if len(payloads) < len(rows):
            cur.execute(f"DELETE FROM {self._checkpoints} WHERE run_id = %s AND seq >= %s",
                        (run_id, rows[len(payloads)][0]))
        return chain, int(rows[len(payloads) - 1][0]) if payloads else 0

    # -- locks --------------------------------------------------------------------------------

    def _lock_key(self, run_id: str) -> int:
        """The signed 64-bit advisory lock key of ``run_id`` in this store's schema."""
        digest = hashlib.blake2b(f"{self.schema}\0{run_id}".encode(), digest_size=8,
                                 person=b"flow-orch-lock").digest()
        return int.from_bytes(digest, "big", signed=True)

    def _holder(self, conn: psycopg.Connection[Any], key: int) -> str | None:
        """The ``application_name`` of the session holding advisory lock ``key`` (``""`` if
        not visible), ``None`` if no session holds it."""
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
        row = conn.execute(
            "SELECT coalesce(a.application_name, ''), l.pid FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.mode = 'ExclusiveLock'"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
        if row is None:
            return None
        return row[0] or f"PostgreSQL backend {row[1]}"

    def _acquire(self, run_id: str) -> tuple[psycopg.Connection[Any], int]:
        """A new lock connection holding the run's advisory lock, and its backend pid;
        :class:`RunLockedError` (the connection closed) when another session holds it."""
        key, conn = self._lock_key(run_id), self._connect(lock=True)
        try:
            deadline, delay = time.monotonic() + self.dead_holder_grace, 0.005
            while conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() != (True,):
                holder = self._holder(conn, key)
                if holder is not None and (not _dead_local_holder(holder) or time.monotonic() > deadline):
                    raise RunLockedError(f"run {run_id!r} is locked by {holder} ({self.where})")
                time.sleep(delay)  # the holder is gone or going: its session is ending
                delay = min(2 * delay, 0.1)
            with self._mutex:
                if self._closed:
                    raise StoreError("the store is closed")
                self._locks.add(conn)
            backend = conn.info.backend_pid
        except BaseException as exc:
            with contextlib.suppress(self._pg.Error):
                conn.close()
            if isinstance(exc, self._pg.Error):
                raise StoreError(f"cannot lock run {run_id!r} in {self.where}: {str(exc).strip()}") from None
            raise
        return conn, backend

    def _probe(self, held_lock: tuple[psycopg.Connection[Any], int], run_id: str) -> None:
        """:class:`LockLostError` unless the lock's session still answers, on the same backend
        (a session-level advisory lock lives as long as its session)."""
        conn, backend = held_lock
        try:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        except self._pg.Error as exc:
            raise LockLostError(f"the lock of run {run_id!r} in {self.where} is lost: its session ended"
                                f" ({str(exc).strip() or type(exc).__name__}); another process may hold the run"
                                ) from None
        if row != (backend,):
            raise LockLostError(f"the lock of run {run_id!r} in {self.where} is lost: its connection now reaches"
                                " another session")

    def _release(self, held_lock: tuple[psycopg.Connection[Any], int]) -> None:
        """Unlock (so that the lock is free when this returns) and close the connection."""
        conn = held_lock[0]
        with self._mutex:
            self._locks.discard(conn)
        with contextlib.suppress(self._pg.Error):
            conn.execute("SELECT pg_advisory_unlock_all()")
        with contextlib.suppress(self._pg.Error):
            conn.close()

    def lock(self, run_id: str) -> contextlib.AbstractContextManager[RunLock]:
        """A session-level advisory lock on a connection of its own, held while in the block.

        :class:`RunLockedError` at once (naming the holder) when another session holds it,
        this store's own included; a dead holder's lock is freed by the server when its
        session ends (see the module docstring).  If the lock connection breaks, the lock
        is lost with it: the lock's :meth:`~.base.RunLock.check` (called by a durable run
        before each write and every :attr:`lock_check_interval` seconds) then raises
        :class:`LockLostError`.
        """
        check_run_id(run_id)
        if self._closed:
            raise StoreError("the store is closed")
        return held(run_id, lambda: self._acquire(run_id), self._release, lambda h: self._probe(h, run_id),
                    self.lock_check_interval)

    def close(self) -> None:
        """Close the data connection and every lock connection (releasing those locks)."""
        with self._mutex:
            self._closed = True
            conns = [c for c in (self._conn, *self._locks) if c is not None]
            self._conn = None
            self._locks.clear()
            for conn in conns:
                with contextlib.suppress(self._pg.Error):
                    conn.close()
