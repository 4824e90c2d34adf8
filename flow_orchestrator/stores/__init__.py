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
* **Locks** are exclusive and fail fast with :class:`RunLockedError`, never wait, and
  die with their holder.  File stores ``flock`` ``<run>.lock``; SQLite locks
  ``<database>-locks/<run>.lock`` beside the database (its ``locks`` rows only name the
  holder in messages).  The kernel releases an ``flock`` when the holder exits, before
  it is reaped, so a killed process, even a zombie, never blocks a run; lock files are
  never deleted (unlinking one races with its users).  PostgreSQL takes a session-level
  advisory lock (``pg_try_advisory_lock``, keyed by a 64-bit hash of the schema and run
  id) on a connection of its own, with TCP keepalives both ways; the server frees it
  when that session ends: at once for a killed process, after the keepalive probes
  (about ``idle + interval * count`` seconds) for a vanished host.
  :class:`MemoryStore` locks are per store object and never lost.
* **A lost lock is noticed.**  ``with store.lock(run_id) as lock`` gives a
  :class:`RunLock`; ``lock.check()`` raises :class:`LockLostError` once the lock is
  gone: its PostgreSQL session ended (``pg_terminate_backend``, a network cut, the store
  closed), or its lock file was deleted or replaced.  A durable run checks before every
  write (snapshot or checkpoint) and, while it has nothing to write, every
  :attr:`Store.lock_check_interval` seconds (1 by default); a lost lock cancels the run
  like a failed write (:class:`CheckpointFailedError` caused by :class:`LockLostError`)
  and nothing is written after it.  Locks stay advisory: ``save`` and ``checkpoint``
  themselves do not check them, so a write already under way when the lock goes can
  still land, and nodes already running when the run stops finish their call.
* **Listing never hides a run and decodes no state.**  ``list_runs`` reads what is
  cheap: a snapshot file's header (the codecs' ``read_header``: magic, version, length,
  workflow, run id, status, timestamps), a row's columns and its snapshot's frame header;
  a snapshot of at most 64 KiB is read whole and its CRC32 checked.  A run damaged there
  is listed :data:`CORRUPT` with a short :attr:`RunInfo.reason` (damage deeper in a
  larger state is found by ``load``); a run saved as running whose lock no live process
  holds is :data:`CRASHED`.  The lock is probed without blocking (a shared ``flock`` or
  advisory lock, taken and dropped at once, which a run taking its lock waits out).
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

from .base import CORRUPT, CRASHED, RunInfo, RunLock, Store, Transition, check_run_id
from .errors import (
    CheckpointError,
    CheckpointFailedError,
    LockLostError,
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
    "CORRUPT",
    "CRASHED",
    "CheckpointError",
    "CheckpointFailedError",
    "FileStore",
    "FlatBuffersFileStore",
    "JsonFileStore",
    "LockLostError",
    "MemoryStore",
    "PostgresStore",
    "RunExistsError",
    "RunInfo",
    "RunLock",
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
