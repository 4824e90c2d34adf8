"""Stores: where run states are saved, checkpointed, loaded, listed and locked.

Every store implements :class:`Store`: ``save`` (a full snapshot), ``load``,
``list_runs``, ``delete``, ``checkpoint`` (a batch of node transitions on top of the
last snapshot), ``lock`` and ``close``.  The stores are :class:`MemoryStore`,
:class:`JsonFileStore`, :class:`FlatBuffersFileStore`, :class:`SqliteStore` and :class:`PostgresStore` (the
``postgres`` extra: psycopg 3, imported only when ``PostgresStore`` is first used).

Guarantees:

* **Atomic snapshots.**  File stores write a temporary file in the same directory,
  flush and fsync it, :func:`os.replace` it over the snapshot and fsync the directory:
  a crash at any point leaves the old snapshot or the new one, never a mix.  SQLite
  writes each snapshot in one transaction (WAL, ``synchronous=FULL``).
* **Journal framing and chain.**  A checkpoint batch is one record framed as
  ``<u32 length><u32 CRC32>`` + payload, appended to ``<run>.journal`` and fsynced (a
  row in the databases).  Every record carries a sequence number (1 after each snapshot)
  and a running checksum chained to its snapshot (:mod:`.journal`), so ``load`` raises
  :class:`~flow_orchestrator.errors.CorruptStateError` for records missing, repeated,
  reordered or copied from another snapshot.  A file journal's header names the sha256
  of the snapshot it extends, so a journal left behind by a crash during ``save`` is
  ignored.  A torn or damaged last record is ignored (the next ``checkpoint`` cuts it
  off); a damaged record with an intact one after it is ``CorruptStateError``.  A batch
  is applied all or nothing.  Format 1 journals (no sequence numbers) are still read and
  folded into a snapshot by the next ``checkpoint``.
* **Loading never writes** and raises only :class:`RunNotFoundError`,
  :class:`~flow_orchestrator.errors.CorruptStateError` (damaged data, checked by the
  codecs' checksums and bounds checks, the journal's chain and
  :meth:`~flow_orchestrator.state.RunState.validate`) or :class:`StoreError` (I/O
  failures, and every error of a back end, such as a damaged SQLite file).
* **Locks** are exclusive and fail fast with :class:`RunLockedError`, never wait.
  File stores ``flock`` ``<run>.lock``, which the kernel releases when the holder
  dies, so a killed process never blocks a run; the lock file itself is never deleted.
  SQLite keeps ``(run_id, pid, hostname, acquired_at)`` rows taken in an ``IMMEDIATE``
  transaction; a row of a dead pid on this host is taken over (a row from another host
  is honoured until removed).  PostgreSQL takes a session-level advisory lock
  (``pg_try_advisory_lock``, keyed by a 64-bit hash of the schema and run id) on a
  connection of its own, with TCP keepalives both ways; the server frees it when that
  session ends, so when the holder dies (at once for a killed process, after the
  keepalive probes for a vanished host).  :class:`MemoryStore` locks are per store object.  Locks
  are advisory: ``save`` and ``checkpoint`` do not check them.
* Run ids are checked (:func:`check_run_id`): no path separators, control characters
  or leading dot, so they cannot escape a store's directory.

Where it sits: layer L4 (services, durability).  The interface, records and errors
(:mod:`.base`, :mod:`.errors`) load with the package; every store implementation is
imported on first use of its name (PEP 562), so ``import flow_orchestrator`` loads
neither ``sqlite3`` nor ``flatbuffers`` nor ``psycopg``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import RunInfo, Store, Transition, check_run_id
from .errors import (
    CheckpointError,
    CheckpointFailedError,
    RunExistsError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
)

if TYPE_CHECKING:
    from .files import FileStore, FlatBuffersFileStore, JsonFileStore
    from .memory import MemoryStore
    from .postgres import PostgresStore
    from .sqlite import SqliteStore
    from .urls import StoreURLError, open_store

__all__ = [
    "CheckpointError",
    "CheckpointFailedError",
    "FileStore",
    "FlatBuffersFileStore",
    "JsonFileStore",
    "MemoryStore",
    "PostgresStore",
    "RunExistsError",
    "RunInfo",
    "RunLockedError",
    "RunNotFoundError",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreURLError",
    "Transition",
    "check_run_id",
    "open_store",
]

# Each implementation's name -> the submodule that defines it (imported on first use).
_LAZY = {
    "FileStore": "files",
    "FlatBuffersFileStore": "files",
    "JsonFileStore": "files",
    "MemoryStore": "memory",
    "PostgresStore": "postgres",
    "SqliteStore": "sqlite",
    "StoreURLError": "urls",
    "open_store": "urls",
}


def __getattr__(name: str) -> object:
    """A store implementation, imported on first use (so are its back end's modules)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
