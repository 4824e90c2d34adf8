"""File stores: one snapshot file, one journal and one lock file per run, in a directory.

For a run ``r``: ``r.state`` (the snapshot, written by the codec), ``r.journal`` (the
checkpoint batches since that snapshot) and ``r.lock`` (for :func:`fcntl.flock`; never
deleted, since unlinking a lock file races with its users).  Temporary files start
with a dot, which run ids cannot.

The journal is a header frame (``FORS-JOURNAL-2``, the number of nodes and the sha256
of the snapshot file it extends) and then one framed, chained record per checkpoint
batch (:mod:`.journal`): the first record's link is that sha256.  A journal whose header
names another snapshot is stale (left by a crash during ``save``) and ignored.  A
format 1 journal (``FORS-JOURNAL-1``, records without sequence numbers) is still read;
the first checkpoint on top of it folds it into a new snapshot.

``list_runs`` reads each snapshot's header (the codecs' ``read_header``), not a sidecar
index: nothing more is written and fsynced per snapshot, nothing can fall out of step
with the snapshot after a crash between two writes, and runs saved before keep listing.
Its cost: the CRC32 of a state over 64 KiB is not checked (``load`` checks it).

Where it sits: layer L4 (services, durability): loaded on first use of its classes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from ..codecs import flatbuffers_codec, json_codec
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
from .errors import RunNotFoundError, StoreError

if TYPE_CHECKING:
    from .base import RunLock

__all__ = ["FileStore", "FlatBuffersFileStore", "JsonFileStore"]

_JOURNAL_MAGIC = b"FORS-JOURNAL-2\x00\x00"
_LEGACY_MAGIC = b"FORS-JOURNAL-1\x00\x00"  # records without sequence numbers: read, folded before appending
_HEADER = struct.Struct("<16sQ32s")
_OUTPUTS = ".outputs"  # the folder of a run's outputs kept apart from its snapshot  # magic, number of nodes, sha256 of the snapshot file


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc


def _header(snapshot: bytes, num_nodes: int) -> bytes:
    return _HEADER.pack(_JOURNAL_MAGIC, num_nodes, hashlib.sha256(snapshot).digest())


class _Journal(NamedTuple):
    """What a journal that belongs to a snapshot holds."""

    nodes: int
    payloads: list[bytes]  # the intact records, header excluded
    end: int               # where the intact frames end (a torn tail starts)
    legacy: bool           # format 1: records without a chain
    seed: bytes            # the snapshot's sha256, the chain's first link


def _journal_frames(data: bytes | None, snapshot: bytes) -> _Journal | None:
    """The journal if it belongs to ``snapshot``; ``None`` when it is absent, stale or only
    a torn header.  :class:`CorruptStateError` for damage with intact records after it."""
    if not data:
        return None
    payloads, end = journal.read_frames(data)
    if not payloads or len(payloads[0]) != _HEADER.size:
        journal.read_frames(data, end, strict=True)  # a damaged header with records after it
        return None
    magic, n, digest = _HEADER.unpack(payloads[0])
    seed = hashlib.sha256(snapshot).digest()
    if magic not in (_JOURNAL_MAGIC, _LEGACY_MAGIC) or digest != seed:
        return None
    legacy = magic == _LEGACY_MAGIC
    if not legacy:
        journal.read_frames(data, end, strict=True)
    return _Journal(n, payloads[1:], end, legacy, seed)


class FileStore(Store):
    """A directory of runs whose snapshots are written by ``codec`` (a codec module).

    Writes are atomic (temporary file, flush, fsync, :func:`os.replace`, fsync of the
    directory); checkpoints are appended to the journal and fsynced.  Thread-safe.
    """

    suffix = ".state"

    def __init__(self, directory: str | os.PathLike[str], codec: ModuleType) -> None:
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._codec = codec
        self._mutex = threading.RLock()
        # run: (files key, nodes, end, chain) of the journal this object appended to last
        self._journals: dict[str, tuple[tuple[object, ...], int, int, journal.Chain]] = {}
        self._closed = False

    # -- paths -----------------------------------------------------------------------------

    def _path(self, run_id: str, suffix: str) -> str:
        if self._closed:
            raise StoreError("the store is closed")
        return os.path.join(self.directory, check_run_id(run_id) + suffix)

    def _write_atomic(self, path: str, data: bytes, *, sync_dir: bool = True) -> None:
        tmp = os.path.join(os.path.dirname(path),
                           f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            if sync_dir:
                _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write {path}: {exc}") from exc

    # -- snapshots -------------------------------------------------------------------------

    def save(self, state: RunState) -> None:
        """Write the output blobs not stored yet, replace the run's snapshot atomically,
        then drop its journal and the blobs the snapshot does not reference.

        A crash between the two leaves a journal whose header names the old snapshot's
        digest: it is ignored on load (and blobs no snapshot references, deleted by the
        next save).
        """
        path = self._path(state.run_id, self.suffix)
        refs = blob_refs(state.outputs)
        data = self._codec.encode(state, refs=refs)
        with self._mutex:
            self._journals.pop(state.run_id, None)
            self._put_outputs(state.run_id, {(node, digest): state.outputs[node] for node, digest in refs.items()})
            self._write_atomic(path, data)
            with contextlib.suppress(OSError):  # a journal left behind is stale: ignored on load
                os.unlink(self._path(state.run_id, ".journal"))
            keep = {self._blob_name(node, digest) for node, digest in refs.items()}
            self._drop_outputs(state.run_id, keep)

    # -- outputs kept apart: <run>.outputs/<node>-<sha256>.out, written once -------------------

    @staticmethod
    def _blob_name(node: int, digest: bytes) -> str:
        return f"{node}-{digest.hex()}.out"

    def _put_outputs(self, run_id: str, blobs: dict[tuple[int, bytes], bytes]) -> None:
        """Write each output blob not stored yet (atomically, fsynced) before anything
        references it."""
        if not blobs:
            return
        folder = self._path(run_id, _OUTPUTS)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc}") from exc
        wrote = False
        for (node, digest), blob in blobs.items():
            path = os.path.join(folder, self._blob_name(node, digest))
            if os.path.exists(path):
                continue
            self._write_atomic(path, blob, sync_dir=False)
            wrote = True
        if wrote:
            try:
                _fsync_dir(folder)
                _fsync_dir(self.directory)
            except OSError as exc:
                raise StoreError(f"cannot write {folder}: {exc}") from exc

    def _fetch(self, run_id: str) -> Callable[[int, int, bytes], bytes]:
        """What the decoders call for an output kept as a blob (read in one piece)."""
        folder = self._path(run_id, _OUTPUTS)

        def fetch(node: int, size: int, digest: bytes) -> bytes:
            path = os.path.join(folder, self._blob_name(node, digest))
            try:
                with open(path, "rb") as f:
                    return f.read(size + 1)
            except FileNotFoundError:
                raise CorruptStateError(f"run {run_id!r}: the stored output of node id {node} is missing"
                                        f" ({path})") from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
        return fetch

    def _drop_outputs(self, run_id: str, keep: set[str] | None = None) -> None:
        """Delete the run's output blobs but ``keep`` (all, and their folder, if ``None``)."""
        folder = self._path(run_id, _OUTPUTS)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot list {folder}: {exc}") from exc
        for name in names:
            if keep is None or name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
        if keep is None or not keep:
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    def _snapshot(self, run_id: str) -> bytes:
        data = _read(self._path(run_id, self.suffix))
        if data is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.directory}")
        return data

    def _decode(self, run_id: str, data: bytes) -> RunState:
        state = self._codec.decode(data, fetch=self._fetch(run_id))
        if state.run_id != run_id:
            raise CorruptStateError(f"the file of run {run_id!r} holds run {state.run_id!r}")
        return state

    def load(self, run_id: str) -> RunState:
        """The snapshot with the journal's records replayed (their chain checked, a torn
        tail ignored); never writes."""
        snapshot = self._snapshot(run_id)
        state = self._decode(run_id, snapshot)
        found = _journal_frames(_read(self._path(run_id, ".journal")), snapshot)
        if found is None:
            return state
        return apply_batches(state, journal.replay(found.payloads, found.seed, legacy=found.legacy,
                                                   fetch=self._fetch(run_id)))

    def exists(self, run_id: str) -> bool:
        """Whether the run's snapshot file exists."""
        return os.path.exists(self._path(run_id, self.suffix))

    def list_runs(self, workflow: str | None = None) -> list[RunInfo]:
        """Every run's snapshot file, from its header (:func:`~..codecs.json_codec.read_header`):
        no state is decoded.  A damaged header (bad magic or version, a file truncated or
        grown, unreadable fields, another run's id) lists the run corrupt, and so does any
        damage in a snapshot of at most 64 KiB (its CRC32 is checked); ``updated_at`` is the
        header's, or the journal's modification time when a checkpoint came after it."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise StoreError(f"cannot list {self.directory}: {exc.strerror}") from exc
        infos = []
        for name in names:
            if not name.endswith(self.suffix) or name.startswith("."):
                continue
            run_id = name[: -len(self.suffix)]
            try:
                check_run_id(run_id)
            except StoreError:
                continue  # not a run's file: no run id names it
            info = self._info(run_id)
            if info is not None and wanted(info, workflow):
                infos.append(info)
        return infos

    def _info(self, run_id: str) -> RunInfo | None:
        """What the run's snapshot header says (``None``: deleted meanwhile)."""
        path = self._path(run_id, self.suffix)
        mtime = math.nan
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                mtime = st.st_mtime
                header = self._codec.read_header(lambda n: os.pread(f.fileno(), n, 0), st.st_size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return corrupt_info(run_id, f"cannot read {path}: {exc.strerror}", mtime)
        except CorruptStateError as exc:
            return corrupt_info(run_id, str(exc), mtime)
        if header.run_id != run_id:
            return corrupt_info(run_id, f"the file of run {run_id!r} holds run {header.run_id!r}", mtime,
                                header.workflow)
        updated = header.updated_at
        with contextlib.suppress(OSError):
            journal_mtime = os.stat(self._path(run_id, ".journal")).st_mtime
            if journal_mtime > mtime:  # a checkpoint after the snapshot (a stale journal is older)
                updated = max(updated, journal_mtime)
        return listed(run_id, header.workflow, header.run_status, updated,
                      lambda: FileLock.held(self._path(run_id, ".lock")))

    def delete(self, run_id: str) -> None:
        """Remove the run's snapshot, then its journal (the lock file stays)."""
        with self._mutex:
            self._journals.pop(run_id, None)
            try:
                os.unlink(self._path(run_id, self.suffix))
            except FileNotFoundError:
                raise RunNotFoundError(f"no run {run_id!r} in {self.directory}") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(run_id, ".journal"))
            self._drop_outputs(run_id)
            with contextlib.suppress(OSError):
                _fsync_dir(self.directory)

    # -- checkpoints -----------------------------------------------------------------------

    def _open_journal(self, run_id: str) -> tuple[int, int, journal.Chain]:
        """(number of nodes, offset to append at, chain) of a journal that fits the snapshot,
        created (atomically) if absent or stale, its torn tail cut off; a format 1
        journal is first folded into a new snapshot.  :class:`CorruptStateError` if the
        journal is damaged in the middle or its chain is broken."""
        snapshot = self._snapshot(run_id)
        path = self._path(run_id, ".journal")
        found = _journal_frames(_read(path), snapshot)
        if found is not None and found.legacy:
            self.save(self.load(run_id))
            return self._open_journal(run_id)
        if found is None:
            n = self._decode(run_id, snapshot).num_nodes
            head = journal.frame(_header(snapshot, n))
            self._write_atomic(path, head)
            return n, len(head), journal.Chain(hashlib.sha256(snapshot).digest())
        chain = journal.Chain(found.seed)
        for payload in found.payloads:
            chain.follow(payload)
        return found.nodes, found.end, chain

    def _files_key(self, run_id: str) -> tuple[object, ...]:
        """Identity of the snapshot and journal files (inode, size, mtime), to tell
        whether the cached journal position is still right."""
        keys: list[tuple[int, int, int] | None] = []
        for suffix in (self.suffix, ".journal"):
            try:
                st = os.stat(self._path(run_id, suffix))
                keys.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                keys.append(None)
        if keys[0] is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.directory}")
        return tuple(keys)

    def _journal_position(self, run_id: str) -> tuple[int, int, journal.Chain]:
        """:meth:`_open_journal`, skipped when the files did not change since the last append
        by this object (so a checkpoint does not reread the snapshot and journal)."""
        cached = self._journals.get(run_id)
        if cached is not None and cached[0] == self._files_key(run_id):
            return cached[1], cached[2], cached[3]
        return self._open_journal(run_id)

    def checkpoint(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None = None) -> None:
        """Append the batch as one framed, chained record to the journal and fsync it."""
        records = _taken(transitions)
        _check_data(data)
        with self._mutex:
            n, end, chain = self._journal_position(run_id)
            checked = check_records(records, n)
            blobs, refs = kept_apart_of(checked)
            self._put_outputs(run_id, blobs)
            body = journal.encode_batch(time.time(), checked, data, refs)
            following = journal.Chain(chain.link, chain.seq)
            data = journal.frame(following.seal(body))
            try:
                with open(self._path(run_id, ".journal"), "r+b") as f:
                    f.truncate(end)
                    f.seek(end)
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                self._journals.pop(run_id, None)
                raise StoreError(f"cannot append to the journal of run {run_id!r}: {exc}") from exc
            self._journals[run_id] = (self._files_key(run_id), n, end + len(data), following)

    # -- locks -----------------------------------------------------------------------------

    def _acquire(self, run_id: str) -> FileLock:
        held_lock = FileLock(self._path(run_id, ".lock"), run_id)
        held_lock.note_holder()
        return held_lock

    def lock(self, run_id: str) -> contextlib.AbstractContextManager[RunLock]:
        """Hold ``<run>.lock`` with ``flock``: released by the kernel when the holder dies
        (before it is reaped); reported lost if the lock file is deleted or replaced."""
        self._path(run_id, ".lock")
        return held(run_id, lambda: self._acquire(run_id), FileLock.release, FileLock.check,
                    self.lock_check_interval)

    def close(self) -> None:
        """Mark the store closed (held locks are released when their ``with`` ends)."""
        self._closed = True


class JsonFileStore(FileStore):
    """A :class:`FileStore` writing readable JSON snapshots (``<run>.json``)."""

    suffix = ".json"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory, json_codec)


class FlatBuffersFileStore(FileStore):
    """A :class:`FileStore` writing compact FlatBuffers snapshots (``<run>.fbs``)."""

    suffix = ".fbs"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory, flatbuffers_codec)
