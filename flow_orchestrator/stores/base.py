"""The :class:`Store` interface, its records, and helpers shared by every store.

Where it sits: layer L4 (services, durability).
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self, TypeVar

import numpy as np

from ..state import (
    BLOB_MIN,
    MAX_ATTEMPTS,
    NOT_SAVED,
    RUN_STATUSES,
    CorruptStateError,
    ErrorRecord,
    ItemRecord,
    RunState,
    blob_digest,
)
from ..status import NodeStatus
from .errors import CheckpointError, LockLostError, RunNotFoundError, StoreError

__all__ = ["CORRUPT", "CRASHED", "RecordBatch", "RunInfo", "RunLock", "Store", "Transition", "apply_batches",
           "apply_transitions", "blob_refs", "check_records", "check_run_id", "check_transitions", "copy_state",
           "kept_apart", "kept_apart_of"]

T = TypeVar("T")
_NUM_STATUSES = len(NodeStatus)
_COMPLETED = int(NodeStatus.COMPLETED)
_OUTPUT_TYPES = {bytes, type(NOT_SAVED)}  # a record's output: bytes, or NOT_SAVED (persist=False)
_MAX_RUN_ID = 200


class Transition(NamedTuple):
    """One node's new status in a checkpoint, applied on top of the last snapshot.

    ``output`` is the serialized output: required (bytes, or
    :data:`~flow_orchestrator.state.NOT_SAVED` for an output not kept) when ``status``
    is ``COMPLETED``, ``None`` otherwise.  ``error`` replaces the node's error record;
    ``None`` clears it.  ``started``/``ended`` are seconds since the run started (NaN: unset).
    ``item`` (``-1``: none) makes it the record of that item of map node ``node_id``
    (:attr:`RunState.items <flow_orchestrator.state.RunState.items>`).
    """

    node_id: int
    status: int
    attempt: int
    started: float
    ended: float
    output: bytes | None = None
    error: ErrorRecord | None = None
    item: int = -1


class RecordBatch:
    """Checkpoint records in columns: what a durable run's writer hands its store.

    The same records as a list of :class:`Transition` (iterating a batch gives them, so
    a store that only knows transitions takes a batch as it is), kept as arrays so that
    checking, encoding and applying them costs no Python per record: ``nodes``
    (``int32``), ``statuses`` (``uint8``), ``attempts`` (``int32``), ``started`` and
    ``ended`` (``float64``, seconds since the run started, NaN: unset), ``outputs`` (the
    serialized outputs of the ``COMPLETED`` records, in record order) and ``errors``
    (record index -> :class:`ErrorRecord`, for the records that carry one), and ``items``
    (``None`` when no record is a map item's, else ``int64``: the item, ``-1`` for a node).
    """

    __slots__ = ("attempts", "ended", "errors", "items", "nodes", "outputs", "started", "statuses")

    def __init__(self, nodes: np.ndarray, statuses: np.ndarray, attempts: np.ndarray, started: np.ndarray,
                 ended: np.ndarray, outputs: list[bytes], errors: dict[int, ErrorRecord] | None = None,
                 items: np.ndarray | None = None) -> None:
        self.nodes, self.statuses, self.attempts = nodes, statuses, attempts
        self.started, self.ended = started, ended
        self.outputs = outputs
        self.errors = {} if errors is None else errors
        self.items = items

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[int, int, int, float, float, object]]) -> RecordBatch:
        """A batch of ``(node, status, attempt, started, ended, value)`` rows, ``value``
        the serialized output of a completed node, else its :class:`ErrorRecord` or ``None``
        (what a durable run's workers queue; built in bulk, checked by :meth:`check`)."""
        count = len(rows)
        if not count:
            return cls(np.empty(0, np.int32), np.empty(0, np.uint8), np.empty(0, np.int32), np.empty(0, np.float64),
                       np.empty(0, np.float64), [])
        nodes, statuses, attempts, started, ended, values = zip(*rows)
        status = np.fromiter(statuses, np.uint8, count)
        batch = cls(np.fromiter(nodes, np.int32, count), status, np.fromiter(attempts, np.int32, count),
                    np.fromiter(started, np.float64, count), np.fromiter(ended, np.float64, count), list(values))
        if not bool((status == _COMPLETED).all()):  # failures among them: split outputs from errors
            done = (status == _COMPLETED).tolist()
            batch.outputs = [v for v, d in zip(values, done) if d]  # type: ignore[misc]
            batch.errors = {i: v for i, (v, d) in enumerate(zip(values, done)) if not d and v is not None}  # type: ignore[misc]
        return batch

    @classmethod
    def of_transitions(cls, records: list[Transition]) -> RecordBatch:
        """The batch of checked :class:`Transition` records."""
        batch = cls.of_rows([r[:5] + (r.output,) for r in records])  # type: ignore[misc]
        batch.errors = {i: r.error for i, r in enumerate(records) if r.error is not None}
        if any(r.item >= 0 for r in records):
            batch.items = np.fromiter((r.item for r in records), np.int64, len(records))
        return batch

    def __len__(self) -> int:
        return int(self.nodes.size)

    def __iter__(self) -> Iterator[Transition]:
        outputs, errors = iter(self.outputs), self.errors
        items = self.items.tolist() if self.items is not None else None
        for i, (node, status, attempt, started, ended) in enumerate(zip(
                self.nodes.tolist(), self.statuses.tolist(), self.attempts.tolist(), self.started.tolist(),
                self.ended.tolist())):
            yield Transition(node, status, attempt, started, ended,
                             next(outputs) if status == _COMPLETED else None, errors.get(i),
                             -1 if items is None else items[i])

    def check(self, num_nodes: int | None = None) -> RecordBatch:
        """The batch itself if its records are valid (as :func:`check_transitions` would
        find them), checked in bulk; else :class:`CheckpointError`."""
        n = self.nodes.size
        for name, dtype in (("nodes", np.int32), ("statuses", np.uint8), ("attempts", np.int32),
                            ("started", np.float64), ("ended", np.float64)):
            column = getattr(self, name)
            if type(column) is not np.ndarray or column.dtype != dtype or column.shape != (n,):
                raise CheckpointError(f"a record batch's {name} must be a 1-d {np.dtype(dtype)} array of {n}")
        items = self.items
        if items is not None and (type(items) is not np.ndarray or items.dtype != np.int64 or items.shape != (n,)
                                  or (n and int(items.min()) < -1)):
            raise CheckpointError(f"a record batch's items must be None or a 1-d int64 array of {n} values >= -1")
        if not n:
            if self.outputs or self.errors:
                raise CheckpointError("an empty record batch has outputs or errors")
            return self
        low, high = int(self.nodes.min()), int(self.nodes.max())
        if low < 0 or (num_nodes is not None and high >= num_nodes):
            raise CheckpointError(f"node id {low if low < 0 else high} is not a node of this run")
        if int(self.statuses.max()) >= _NUM_STATUSES:
            raise CheckpointError(f"unknown node status {int(self.statuses.max())}")
        if int(self.attempts.min()) < 0 or int(self.attempts.max()) >= MAX_ATTEMPTS:
            raise CheckpointError(f"attempt must be an int in 0..{MAX_ATTEMPTS - 1} (the core keeps 24 bits)")
        outputs = self.outputs
        if type(outputs) is not list or len(outputs) != int(np.count_nonzero(self.statuses == _COMPLETED)) \
                or not set(map(type, outputs)) <= _OUTPUT_TYPES:
            raise CheckpointError("an output (bytes) is required exactly when the status is completed")
        errors = self.errors
        if type(errors) is not dict or (errors and (not set(map(type, errors.values())) <= {ErrorRecord}
                                                    or not all(type(i) is int and 0 <= i < n for i in errors))):
            raise CheckpointError("a record batch's errors must map record indexes to ErrorRecord")
        return self


CRASHED = "crashed"
"""The :attr:`RunInfo.run_status` of a run saved as running whose lock nobody holds: the
process that ran it died (resume it)."""

CORRUPT = "corrupt"
"""The :attr:`RunInfo.run_status` of a run whose stored state is damaged (see
:attr:`RunInfo.reason`): it cannot be loaded or resumed, only deleted."""

_CRASHED_REASON = "saved as running, but no live process holds its lock"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What :meth:`Store.list_runs` tells about one run.

    ``run_status`` is the saved one (``running``, ``completed``, ``failed``,
    ``cancelled``), or :data:`CRASHED` or :data:`CORRUPT`, with ``reason`` saying why
    (``""`` otherwise).  A corrupt run's ``workflow`` is ``""`` when it cannot be read and
    its ``updated_at`` is what the store knows (a file's modification time).
    """

    run_id: str
    workflow: str
    run_status: str
    updated_at: float
    reason: str = ""


def listed(run_id: str, workflow: object, status: object, updated_at: object,
           held: Callable[[], bool] | bool) -> RunInfo:
    """Internal: the :class:`RunInfo` of a run from what a store read of it without loading
    it: :data:`CORRUPT` if those values are wrong, :data:`CRASHED` if it is running and
    ``held`` (or ``held()``, a probe of its lock that never blocks, called only then) says
    nobody holds it."""
    stamp = float(updated_at) if _is_time(updated_at) else math.nan  # type: ignore[arg-type]
    name = workflow if type(workflow) is str else ""
    if type(workflow) is not str:
        return corrupt_info(run_id, "its workflow name is not a string", stamp, name)
    if status not in RUN_STATUSES:
        return corrupt_info(run_id, f"unknown run status {status!r:.40}", stamp, name)
    if not _is_time(updated_at):
        return corrupt_info(run_id, f"its update time is not a number: {updated_at!r:.40}", stamp, name)
    if status == "running" and not (held if isinstance(held, bool) else held()):
        return RunInfo(run_id, name, CRASHED, stamp, _CRASHED_REASON)
    return RunInfo(run_id, name, str(status), stamp)


def wanted(info: RunInfo, workflow: str | None) -> bool:
    """Internal: whether ``list_runs(workflow)`` lists ``info`` (a corrupt run of unknown
    workflow is listed under any)."""
    return workflow is None or info.workflow == workflow or (info.run_status == CORRUPT and not info.workflow)


def corrupt_info(run_id: str, reason: str, updated_at: float = math.nan, workflow: str = "") -> RunInfo:
    """Internal: the :class:`RunInfo` of a damaged run, ``reason`` on one line (short)."""
    text = " ".join(reason.split())
    return RunInfo(run_id, workflow, CORRUPT, updated_at, text if len(text) <= 200 else text[:197] + "...")


def check_run_id(run_id: object) -> str:
    """``run_id`` if it is a safe run id, else :class:`StoreError`.

    A run id is a non-empty ``str`` of at most 200 bytes of UTF-8 (no lone surrogates),
    holding no path separator or control character, and not starting with a dot, so it
    is a valid file name that cannot leave a store's directory.
    """
    if type(run_id) is not str or not run_id:
        raise StoreError(f"a run id must be a non-empty str, got {run_id!r:.80}")
    try:
        size = len(run_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise StoreError(f"invalid run id {run_id!r:.80}: lone surrogates") from None
    if size > _MAX_RUN_ID:
        raise StoreError(f"invalid run id {run_id!r:.80}: longer than {_MAX_RUN_ID} bytes of UTF-8")
    if run_id.startswith(".") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in run_id):
        raise StoreError(f"invalid run id {run_id!r}: no path separators, control characters or leading dot")
    return run_id


def _is_time(value: object) -> bool:
    """Whether ``value`` is an int or float that converts to a float (NaN and infinities included)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _check_one(record: Transition, num_nodes: int | None) -> None:
    node, status, attempt, started, ended, output, error, item = record
    if type(item) is not int or item < -1:
        raise CheckpointError(f"item must be an int >= -1 (-1: the node itself), got {item!r}")
    if type(node) is not int or node < 0 or (num_nodes is not None and node >= num_nodes):
        raise CheckpointError(f"node id {node!r} is not a node of this run")
    if type(status) not in (int, NodeStatus) or not 0 <= status < _NUM_STATUSES:
        raise CheckpointError(f"unknown node status {status!r}")
    if type(attempt) is not int or not 0 <= attempt < MAX_ATTEMPTS:
        raise CheckpointError(f"attempt must be an int in 0..{MAX_ATTEMPTS - 1} (the core keeps 24 bits), got {attempt!r}")
    if not all(map(_is_time, (started, ended))):
        raise CheckpointError("started and ended must be numbers (NaN when unset)")
    if (output is None) == (status == NodeStatus.COMPLETED) or (
            output is not None and type(output) is not bytes and output is not NOT_SAVED):
        raise CheckpointError(f"node {node}: an output (bytes) is required exactly when the status is completed")
    if error is not None and type(error) is not ErrorRecord:
        raise CheckpointError(f"node {node}: error must be an ErrorRecord or None")


def _check_data(data: object) -> None:
    """Internal: :class:`CheckpointError` unless ``data`` is ``None`` or ``bytes``."""
    if data is not None and type(data) is not bytes:
        raise CheckpointError(f"checkpoint data must be the serialized workflow data (bytes), got {type(data).__name__}")


def check_transitions(transitions: Iterable[Sequence[object]], num_nodes: int | None = None) -> list[Transition]:
    """The records as :class:`Transition` tuples, checked; :class:`CheckpointError` if invalid."""
    try:
        records = [Transition(*t) for t in transitions]  # type: ignore[arg-type]  # checked below
    except TypeError as exc:
        raise CheckpointError(f"a checkpoint record must have 5 to 8 fields: {exc}") from None
    for record in records:
        _check_one(record, num_nodes)
    return [r._replace(status=int(r.status), started=float(r.started), ended=float(r.ended)) for r in records]


def _taken(transitions: Iterable[Sequence[object]]) -> RecordBatch | list[Sequence[object]]:
    """Internal: the records of a ``checkpoint`` call, read once (a batch kept as it is)."""
    return transitions if type(transitions) is RecordBatch else list(transitions)


def check_records(records: RecordBatch | Iterable[Sequence[object]], num_nodes: int | None = None) -> RecordBatch:
    """The records of a checkpoint as a checked :class:`RecordBatch` (a batch is checked in
    bulk, other records one by one); :class:`CheckpointError` if invalid."""
    if type(records) is RecordBatch:
        return records.check(num_nodes)
    return RecordBatch.of_transitions(check_transitions(records, num_nodes))


def _large(values: list[bytes]) -> list[int]:
    """The positions of the outputs a durable store keeps as blobs (sizes in bulk)."""
    if not values:
        return []
    sizes = np.fromiter(map(len, values), np.int64, len(values))
    return np.flatnonzero(sizes >= BLOB_MIN).tolist()


def blob_refs(outputs: Mapping[int, bytes]) -> dict[int, bytes]:
    """The sha256 of each output of a state that a durable store keeps as a blob of its own
    (at least :data:`~flow_orchestrator.state.BLOB_MIN` bytes), by node id."""
    nodes, values = list(outputs), list(outputs.values())
    return {nodes[i]: blob_digest(values[i]) for i in _large(values)}


def kept_apart(outputs: Iterable[bytes | None]) -> dict[int, tuple[bytes, bytes]]:
    """The outputs of checkpoint records that a durable store keeps as blobs, by ``id()`` of
    the output: ``(sha256, output)``; each digest computed once per output object."""
    values = [blob for blob in outputs if blob is not None]
    found: dict[int, tuple[bytes, bytes]] = {}
    for i in _large(values):
        if id(values[i]) not in found:
            found[id(values[i])] = (blob_digest(values[i]), values[i])
    return found


def kept_apart_of(batch: RecordBatch) -> tuple[dict[tuple[int, bytes], bytes], dict[int, bytes]]:
    """The outputs of checked records that a durable store keeps as blobs: the blobs to
    store, ``{(node, sha256): output}``, and the ``refs`` that
    :func:`~.journal.encode_batch` takes (empty, and found in bulk, when none is large)."""
    apart = kept_apart(batch.outputs)
    if not apart:
        return {}, {}
    blobs = {(r.node_id, apart[id(r.output)][0]): r.output for r in batch
             if r.output is not None and id(r.output) in apart}
    return blobs, {key: digest for key, (digest, _) in apart.items()}


def copy_state(state: RunState) -> RunState:
    """A deep copy of ``state`` with writable arrays and its own dicts."""
    fields = {name: getattr(state, name) for name in RunState.__dataclass_fields__}
    for name in ("succ_indptr", "succ_indices", "statuses", "attempts", "started", "ended"):
        fields[name] = np.array(fields[name], copy=True)
    fields["node_names"] = list(state.node_names)
    fields["outputs"] = dict(state.outputs)
    fields["errors"] = dict(state.errors)
    fields["items"] = {node: dict(records) for node, records in state.items.items()}
    return RunState(**fields)


def apply_transitions(state: RunState, records: list[Transition] | RecordBatch) -> None:
    """Apply checked records to ``state`` in place (its arrays must be writable).

    A node id outside the state raises :class:`CorruptStateError`; records that passed
    :func:`check_transitions` with the state's node count keep the state valid.  A
    :class:`RecordBatch` naming each node once is applied in bulk.
    """
    if type(records) is RecordBatch:
        if _apply_batch(state, records):
            return
        records = list(records)
    for node, status, attempt, started, ended, output, error, item in records:
        if node >= state.num_nodes:
            raise CorruptStateError(f"a checkpoint names node id {node}, outside this run's {state.num_nodes} nodes")
        if item >= 0:
            state.items.setdefault(node, {})[item] = ItemRecord(int(status), attempt, started, ended,
                                                                output, error)  # type: ignore[arg-type]
            continue
        state.statuses[node], state.attempts[node] = status, attempt
        state.started[node], state.ended[node] = started, ended
        _put(state.outputs, node, output)
        _put(state.errors, node, error)


def _apply_batch(state: RunState, batch: RecordBatch) -> bool:
    """Apply ``batch`` in bulk; ``False`` (nothing done) if it names a node twice (then
    the records apply one by one, in order)."""
    nodes = batch.nodes
    if not nodes.size:
        return True
    if batch.items is not None:  # records of map items: one by one
        return False
    if int(nodes.max()) >= state.num_nodes:
        raise CorruptStateError(f"a checkpoint names node id {int(nodes.max())}, outside this run's "
                                f"{state.num_nodes} nodes")
    if nodes.size > 1 and np.unique(nodes).size != nodes.size:
        return False
    state.statuses[nodes], state.attempts[nodes] = batch.statuses, batch.attempts
    state.started[nodes], state.ended[nodes] = batch.started, batch.ended
    done = batch.statuses == _COMPLETED
    ids = nodes.tolist()
    if bool(done.all()):
        state.outputs.update(zip(ids, batch.outputs))
    else:
        state.outputs.update(zip(nodes[done].tolist(), batch.outputs))
        for node in nodes[~done].tolist():
            state.outputs.pop(node, None)
    errors, new = state.errors, batch.errors
    if errors:
        for node in ids:
            errors.pop(node, None)
    errors.update((ids[i], error) for i, error in new.items())
    return True


def _put(mapping: dict, key: int, value: object) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def apply_batches(state: RunState, batches: Iterable[tuple[float, list[Transition] | RecordBatch, bytes | None]]
                  ) -> RunState:
    """``state`` with the checkpoint batches applied in order (a new state when any).

    Each batch is ``(timestamp, records, data)``; ``updated_at`` becomes the last
    batch's timestamp and ``data`` (when not ``None``) replaces the state's workflow
    data.  A batch that does not fit the state raises :class:`CorruptStateError`.
    """
    batches = list(batches)
    if not batches:
        return state
    state = copy_state(state)
    for stamp, records, data in batches:
        apply_transitions(state, records)
        if data is not None:
            state.data = data
        state.updated_at = stamp if math.isfinite(stamp) else state.updated_at
    state.validate()
    return state


class Store(abc.ABC):
    """Where run states are saved, checkpointed, loaded, listed and locked.

    Every store is safe to use from several threads.  ``load`` raises only
    :class:`~.errors.RunNotFoundError`, :class:`CorruptStateError` or (for I/O
    failures) :class:`~.errors.StoreError`, and never writes.  Stores are context
    managers that :meth:`close` on exit.

    ``lock_check_interval`` (seconds, settable per store object; ``None``: never) is how
    often a durable run checks that its lock is still held while it has nothing to write.

    Durable stores keep each output of :data:`~flow_orchestrator.state.BLOB_MIN` bytes or
    more as a blob of its own, written once (before the record or snapshot that
    references it by length and sha256), checked when loaded (missing or damaged:
    :class:`CorruptStateError`), and deleted when no snapshot of the run references it
    any more (on ``save``) or with the run (``delete``).  An output may be
    :data:`~flow_orchestrator.state.NOT_SAVED` (``persist=False``).
    """

    lock_check_interval: float | None = 1.0

    @abc.abstractmethod
    def save(self, state: RunState) -> None:
        """Save a full snapshot of ``state`` atomically, replacing the run's snapshot and checkpoints."""

    @abc.abstractmethod
    def load(self, run_id: str) -> RunState:
        """The run's last snapshot with its checkpoints replayed in order."""

    def exists(self, run_id: str) -> bool:
        """Whether the store holds a run ``run_id`` (damaged or not); never writes."""
        try:
            self.load(run_id)
        except RunNotFoundError:
            return False
        except CorruptStateError:
            return True
        return True

    @abc.abstractmethod
    def list_runs(self, workflow: str | None = None) -> list[RunInfo]:
        """The runs held (of ``workflow`` only, if given), sorted by run id, from what is
        cheap to read: a file's header, a row's columns (never a whole state).

        A run whose stored state shows damage there is listed :data:`CORRUPT` with a
        short :attr:`RunInfo.reason` (never left out, never raising: a corrupt run whose
        workflow cannot be read is listed whatever ``workflow`` is); damage further in is
        found by :meth:`load`.  A run saved as ``running`` whose lock nobody holds (its
        process died) is listed :data:`CRASHED`: the lock is probed without blocking (a
        shared lock taken and dropped at once, which no :meth:`lock` waits on), and a
        run locked by a live holder stays ``running``.
        """

    @abc.abstractmethod
    def delete(self, run_id: str) -> None:
        """Forget a run: its snapshot and checkpoints; :class:`~.errors.RunNotFoundError` if absent."""

    @abc.abstractmethod
    def checkpoint(self, run_id: str, transitions: Iterable[Sequence[object]], data: bytes | None = None) -> None:
        """Durably record a batch of :class:`Transition` records on top of the last snapshot.

        ``data``, when given, is the run's serialized workflow data, replacing the
        state's.  The batch is applied all or nothing.  :class:`~.errors.RunNotFoundError` if the
        run was never saved, :class:`~.errors.CheckpointError` for invalid records,
        :class:`CorruptStateError` if the records already stored are damaged in the middle or
        their chain is broken (they are never cut off to make room).
        """

    def _checkpoint_before_save(self, run_id: str, transitions: Iterable[Sequence[object]],
                                data: bytes | None = None) -> None:
        """Internal: :meth:`checkpoint` of a batched run's last batch, with the run's final
        snapshot (a :meth:`save`) about to follow: a store may commit it without waiting
        for it to be durable on its own, when that save makes it so (SQLite's WAL is
        written in order).  Lost only if the machine (not the process) fails before the
        save, as a batch not yet due would be."""
        self.checkpoint(run_id, transitions, data)

    @abc.abstractmethod
    def lock(self, run_id: str) -> contextlib.AbstractContextManager[RunLock]:
        """A context manager holding the run for exclusive use; it gives a :class:`RunLock`.

        Raises :class:`~.errors.RunLockedError` at once when another live process or
        another store object (or this one) holds it; a lock left by a dead process is
        taken over.  Locks are advisory: ``save`` and ``checkpoint`` do not check them;
        a durable run calls :meth:`RunLock.check` before each of its writes and every
        :attr:`lock_check_interval` seconds.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; further use raises :class:`~.errors.StoreError`."""

    def __enter__(self) -> Self:
        """The store itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the store."""
        self.close()


class RunLock:
    """A run's lock while it is held: what ``with store.lock(run_id) as lock`` gives.

    :meth:`check` raises :class:`~.errors.LockLostError` when the lock is no longer held
    (its session ended, its lock file was replaced, or it was released): another process
    may hold the run then.  A lock that cannot be lost (a :class:`MemoryStore`'s) has no
    ``probe`` and ``check_interval`` ``None``.
    """

    __slots__ = ("_lost", "_probe", "check_interval", "run_id")

    def __init__(self, run_id: str, probe: Callable[[], None] | None = None,
                 check_interval: float | None = None) -> None:
        self.run_id = run_id
        self.check_interval = check_interval if probe is not None else None
        self._probe = probe
        self._lost: LockLostError | None = None

    def check(self) -> None:
        """Return if the lock is still held; else :class:`~.errors.LockLostError` (for good)."""
        if self._lost is None and self._probe is not None:
            try:
                self._probe()
            except LockLostError as exc:
                self._lost = exc
        if self._lost is not None:
            raise LockLostError(str(self._lost))

    @property
    def alive(self) -> bool:
        """Whether :meth:`check` passes now."""
        try:
            self.check()
        except LockLostError:
            return False
        return True

    def _released(self) -> None:
        if self._lost is None:
            self._lost = LockLostError(f"the lock of run {self.run_id!r} was released")

    def __repr__(self) -> str:
        return f"<RunLock {self.run_id!r} {'lost or released' if self._lost is not None else 'held'}>"


@contextlib.contextmanager
def held(run_id: str, acquire: Callable[[], T], release: Callable[[T], object],
         probe: Callable[[T], None] | None = None, check_interval: float | None = None) -> Iterator[RunLock]:
    """Internal: a context manager calling ``acquire()`` then, on exit, ``release(token)``,
    giving a :class:`RunLock` whose check calls ``probe(token)`` (which raises
    :class:`~.errors.LockLostError` when the lock is gone)."""
    if check_interval is not None and (isinstance(check_interval, bool) or not isinstance(check_interval, (int, float))
                                       or not math.isfinite(check_interval) or check_interval <= 0):
        raise StoreError(f"lock_check_interval must be a positive number of seconds or None, got {check_interval!r}")
    token = acquire()
    handle = RunLock(run_id, None if probe is None else (lambda: probe(token)), check_interval)
    try:
        yield handle
    finally:
        handle._released()
        release(token)
