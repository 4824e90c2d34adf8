"""Durable runs: checkpoint policies, and the whole lifecycle of a run saved while it goes on.

Layer L4 (services, durability).  The engine enters one :class:`DurableRun` per durable
run (lock, resume plan, writer, final snapshot); everything a store sees of a run goes
through it.  It knows stores, run states and results, never the engine.

How a durable run is saved
==========================

``engine.run(workflow, store=store, checkpoint=...)`` makes a run durable.  Before the
first node starts, the run takes the store's lock on its run id (another process
resuming the same run gets :class:`~flow_orchestrator.stores.RunLockedError` at once).
Then a *writer thread* owned by the run does every write, in order:

1. the initial snapshot: every node pending, or, when resuming, the completed nodes of
   the saved state with their outputs (a full snapshot, so that the store's state is
   the new workflow's even when it gained nodes or nodes are re-run);
2. checkpoint batches: one record (a :class:`~flow_orchestrator.stores.Transition`) per
   node that completed (with its serialized output), failed, timed out or was cancelled
   by its own action, handed to the store as one ``RecordBatch`` (columns, checked,
   packed and applied in bulk), plus the workflow data whenever it changed since the last
   batch, appended on top of the snapshot;
3. the final snapshot when the run ends, whatever way it ends (success, failure,
   cancellation, Ctrl-C), which replaces the snapshot and its checkpoints.

Workers never write.  A node's output is serialized by the worker that ran it, before
the node counts as completed, so an output the serializer refuses fails its node with a
:class:`~flow_orchestrator.serialization.SerializationError` naming it, instead of
surfacing later in a save.  The record then goes to the writer's queue:

* ``strict``: the worker waits until the writer has made the record durable before the
  node's dependents are released.  So no node ever starts before the completions it
  depends on are on disk: after a crash, a completed node is either saved or re-run,
  never the cause of a dependent that ran on an output that was lost.  The writer takes
  everything queued at once into one transaction (group commit), so with many workers
  one fsync covers many completions.
* ``batched``: workers go on at once; the writer commits every ``every`` records or
  ``interval`` seconds after the oldest unsaved record, whichever comes first.  When
  ``max_pending`` records wait, workers wait too (back-pressure), so a slow store
  bounds the memory of the queue instead of the queue growing without limit.
* ``end``: only the initial and final snapshots.

Resuming (``engine.run(workflow, store=store, resume=run_id)`` or
:meth:`~flow_orchestrator.engine.Engine.resume`) loads the saved state under the lock:
completed nodes are not run again; every other node runs, including those that were
running at the crash.  Execution is *at least once*: a node that completed but whose
record was not yet durable (batched, end) runs again, so actions with side effects
should be idempotent.

A write that fails (a full disk, a lost database) cancels the run: nothing new starts,
the run ends with :class:`~flow_orchestrator.stores.CheckpointFailedError`, and the
store keeps the last state it accepted.  So does a lost lock: the writer checks the
run's :class:`~flow_orchestrator.stores.RunLock` before every write and, while idle,
every ``store.lock_check_interval`` seconds; once it is lost (the error's cause is a
:class:`~flow_orchestrator.stores.LockLostError`) nothing more is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .data import WorkflowData
from .errors import DefinitionError
from .result import RunResult, new_run_id
from .resume import ResumePlan
from .serialization import (
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    Serializer,
)
from .state import (
    NOT_SAVED,
    CorruptStateError,
    ErrorRecord,
    ItemRecord,
    RunState,
    canonical_graph,
    dump_data,
    fingerprint,
    unsaved_nodes,
)
from .status import NodeStatus, RunStatus
from .stores.base import RecordBatch, RunLock, Store, Transition, check_run_id
from .stores.errors import CheckpointFailedError, LockLostError, RunExistsError
from .workflow import Workflow

__all__ = ["CheckpointPolicy", "CheckpointSpec", "DurableRun"]

_log = logging.getLogger("flow_orchestrator.checkpoint")
_COMPLETED = int(NodeStatus.COMPLETED)
_MEMO_SERIALIZERS = (JsonSerializer, PickleSerializer)  # deterministic: equal scalars, equal bytes
_MEMO_INTS = 1024

Mode = Literal["strict", "batched", "end"]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When a durable run's progress is written to its store (see the module docs).

    Args:
        mode: ``"strict"`` (each completion durable before its dependents start),
            ``"batched"`` (group commits every ``every`` records or ``interval``
            seconds) or ``"end"`` (snapshots at the start and the end only).
        every: batched: commit once this many records wait.
        interval: batched: commit at the latest this many seconds after the oldest
            unsaved record.
        max_pending: batched: workers wait while this many records are unsaved.
    """

    mode: Mode = "batched"
    every: int = 1000
    interval: float = 1.0
    max_pending: int = 100_000

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "batched", "end"):
            raise DefinitionError(f"checkpoint mode must be 'strict', 'batched' or 'end', got {self.mode!r}")
        for name in ("every", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DefinitionError(f"checkpoint {name} must be an int >= 1, got {value!r}")
        if isinstance(self.interval, bool) or not isinstance(self.interval, (int, float)) \
                or not math.isfinite(self.interval) or self.interval <= 0:
            raise DefinitionError(f"checkpoint interval must be a positive number of seconds, got {self.interval!r}")
        if self.max_pending < self.every:
            raise DefinitionError(f"checkpoint max_pending ({self.max_pending}) must be >= every ({self.every})")

    @classmethod
    def strict(cls) -> CheckpointPolicy:
        """Every completion durable before any dependent starts."""
        return cls("strict")

    @classmethod
    def batched(cls, every: int = 1000, interval: float = 1.0, max_pending: int = 100_000) -> CheckpointPolicy:
        """Group commits every ``every`` records or ``interval`` seconds."""
        return cls("batched", every, interval, max_pending)

    @classmethod
    def at_end(cls) -> CheckpointPolicy:
        """A snapshot when the run starts and one when it ends, nothing between."""
        return cls("end")

    @classmethod
    def of(cls, spec: CheckpointSpec) -> CheckpointPolicy:
        """A policy from a policy or its mode's name."""
        if isinstance(spec, CheckpointPolicy):
            return spec
        if spec in ("strict", "batched", "end"):
            return cls(spec)
        raise DefinitionError(f"checkpoint must be 'strict', 'batched', 'end' or a CheckpointPolicy, got {spec!r}")


CheckpointSpec = CheckpointPolicy | Literal["strict", "batched", "end"]


class RunWriter:
    """Internal: the checkpointer a durable run's core calls, and its writer thread.

    The core calls :meth:`encode` and :meth:`node_ended` from worker threads (see
    ``_ext.begin_run``); every store write happens on the writer thread, in order.
    With the run's ``lock``, the writer checks it before every write and, while it has
    nothing to write, every ``lock.check_interval`` seconds: a lost lock fails the run
    as a failed write does, and nothing is written after it.
    """

    def __init__(self, store: Store, run_id: str, policy: CheckpointPolicy, serializer: Serializer,
                 data: WorkflowData, names: list[str], on_failure: Callable[[str], None],
                 lock: RunLock | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.policy = policy
        self.serializer = serializer
        self.data = data
        self.names = names
        self._on_failure = on_failure
        self._lock = lock
        self._check_every = lock.check_interval if lock is not None else None
        self._next_check = math.inf             # monotonic time of the next idle lock check
        self._strict = policy.mode == "strict"
        self._journal = policy.mode != "end"
        self.outputs: dict[int, bytes] = {}     # node id -> serialized output, completed nodes
        self.unsaved: frozenset[int] = frozenset()  # nodes whose outputs are not kept (persist=False)
        self.errors: dict[int, ErrorRecord] = {}
        self.items: dict[int, dict[int, ItemRecord]] = {}  # map node -> item -> its record
        self._with_items = False                # some queued record is a map item's
        self.failure: BaseException | None = None
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        # (node, status, attempt, started, ended, output bytes or ErrorRecord): the writer
        # takes them all at once and hands its store one RecordBatch (columns, in bulk).
        self._pending: list[tuple[int, int, int, float, float, Any]] = []
        self._every, self._max_pending = policy.every, policy.max_pending
        # How many records may wait for node_ended's fast path to queue one more: 0 sends
        # every record the slow way (strict, after a failure, closing).  Under ``end``
        # nothing is written until the final snapshot: records wait, without limit, for
        # close() to note their outputs and errors.
        self._fast_limit = (policy.max_pending if self._journal else sys.maxsize) if not self._strict else 0
        self._memo: dict[Any, bytes] | None = {} if type(serializer) in _MEMO_SERIALIZERS else None
        self._oldest = 0.0                      # monotonic time the oldest pending record came
        self._taken = 0                         # records the writer ever took from the queue
        self._durable = 0                       # records ever made durable
        self._snapshot: RunState | None = None  # a snapshot to write before any batch
        self._data_version = -1
        self._closing = False
        self._before_save = False               # close(): the final snapshot follows
        self._thread: threading.Thread | None = None
        self.batches = 0                        # commits made (for tests and benchmarks)

    # -- called by the core, on worker threads ----------------------------------------------

    def encode(self, node: int, value: Any) -> bytes:
        """``value`` serialized; :class:`SerializationError` naming the node if it cannot be
        (:data:`~flow_orchestrator.state.NOT_SAVED` for a node with ``persist=False``).

        With a built-in serializer, the bytes of ``None``, ``True``, ``False`` and small
        ints are made once per run and reused (what no-op and flag nodes return)."""
        if node in self.unsaved:
            return NOT_SAVED
        memo = self._memo
        if memo is not None and (value is None or type(value) is bool
                                 or (type(value) is int and -_MEMO_INTS <= value <= _MEMO_INTS)):
            key = (value,) if type(value) is bool else value  # True == 1, but not its bytes
            blob = memo.get(key)
            if blob is None:
                blob = memo[key] = self.serializer.dumps(value)
            return blob
        try:
            return self.serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"the output of node {self.names[node]!r} cannot be saved: {exc}", "") from exc
        except Exception as exc:  # a user serializer's own failure
            raise SerializationError(f"the output of node {self.names[node]!r} cannot be saved: "
                                     f"{type(exc).__name__}: {exc}", "") from exc

    def node_ended(self, node: int, status: int, attempt: int, started: float, ended: float, value: Any) -> None:
        """Record a terminal node; under the strict policy, return once a completion is durable.

        The usual call (batched, nothing holding it back) only appends a tuple under a
        lock: the writer takes the records all at once, turns them into columns and
        keeps their outputs and errors (:meth:`_took`)."""
        if status != _COMPLETED:
            value = ErrorRecord.from_exception(value)
        with self._mutex:
            pending = self._pending
            count = len(pending)
            if count < self._fast_limit:
                pending.append((node, status, attempt, started, ended, value))
                # The writer sleeps with no deadline while nothing is pending: the first
                # record starts its ``interval`` clock, the ``every``-th makes it commit
                # (it checks the count itself before it sleeps again).
                if not count:
                    self._oldest = time.monotonic()
                    self._cond.notify()
                elif count + 1 == self._every:
                    self._cond.notify()
                return
            self._queue_slowly((node, status, attempt, started, ended, value))

    def item_ended(self, node: int, item: int, status: int, attempt: int, started: float, ended: float,
                   value: Any) -> None:
        """Record a terminal item of map node ``node``, as :meth:`node_ended` does a node
        (the items of a map whose outputs are not saved, ``persist=False``, are not)."""
        if node in self.unsaved:
            return
        done = status == _COMPLETED
        if not done:
            value = ErrorRecord.from_exception(value)
        with self._mutex:
            self.items.setdefault(node, {})[item] = ItemRecord(status, attempt, started, ended,
                                                               value if done else None, None if done else value)
            self._with_items = True
            self._queue_slowly((node, status, attempt, started, ended, value, item))

    def _queue_slowly(self, record: tuple[Any, ...]) -> None:
        """:meth:`node_ended` held back (``max_pending``), strict, ``end``, after a failure
        or once closing (with the mutex held)."""
        cond = self._cond
        if self._journal:
            while len(self._pending) >= self._max_pending and self.failure is None:
                cond.wait()  # back-pressure: the store is slower than the workers
        if not self._journal or self.failure is not None or self._closing:
            self._keep([record])  # for the final snapshot only
            return
        first = not self._pending
        if first:
            self._oldest = time.monotonic()
        self._pending.append(record)
        ticket = self._taken + len(self._pending)
        if first or self._strict or len(self._pending) >= self._every:
            cond.notify_all()
        if self._strict and record[1] == _COMPLETED:
            while self._durable < ticket and self.failure is None:
                cond.wait()

    def _keep(self, records: list[tuple[int, int, int, float, float, Any]]) -> None:
        """Note the outputs and errors of terminal nodes (for the final snapshot)."""
        outputs, errors = self.outputs, self.errors
        for row in records:
            if len(row) == 7:  # a map item's: kept in self.items
                continue
            node, status, value = row[0], row[1], row[5]
            if status == _COMPLETED:
                outputs[node] = value
            else:
                errors[node] = value

    def _took(self, rows: list[tuple[int, int, int, float, float, Any]]) -> RecordBatch:
        """The batch of records taken from the queue, their outputs and errors noted."""
        if self._with_items and any(len(row) == 7 for row in rows):
            self._keep(rows)
            return RecordBatch.of_transitions([
                Transition(*row[:5], row[5] if row[1] == _COMPLETED else None,  # type: ignore[misc]
                           None if row[1] == _COMPLETED else row[5], row[6] if len(row) == 7 else -1)
                for row in rows])
        batch = RecordBatch.of_rows(rows)
        nodes = batch.nodes.tolist()
        if len(batch.outputs) == len(nodes):
            self.outputs.update(zip(nodes, batch.outputs))
        else:
            self._keep(rows)
        return batch

    # -- the writer thread ------------------------------------------------------------------------

    def start(self, snapshot: RunState | None) -> None:
        """Start the writer; its first write is ``snapshot`` (if any)."""
        self._snapshot = snapshot
        self._data_version = self.data.version
        self._thread = threading.Thread(target=self._loop, name=f"flow-orchestrator-writer-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            snapshot, self._snapshot = self._snapshot, None
            if snapshot is not None:
                _check_made(snapshot)  # made unchecked on the run's critical path: checked here
            self._check_lock()
            if snapshot is not None:
                self.store.save(snapshot)
            while True:
                batch, ticket, last = self._next_batch()
                if batch is None:
                    return
                self._check_lock()
                if not batch:  # only a lock check was due
                    continue
                # The last batch of a batched run whose final snapshot follows needs no
                # durability of its own: that snapshot's commit gives it (see Store).
                append = self.store._checkpoint_before_save if self._before_save and last else self.store.checkpoint
                append(self.run_id, self._took(batch), self._changed_data())
                with self._cond:
                    self._durable = ticket
                    self.batches += 1
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported through the run
            self._fail(exc)

    def _check_lock(self) -> None:
        """:class:`LockLostError` if the run's lock is gone; the next idle check is due in
        ``check_interval`` seconds."""
        if self._lock is not None:
            self._lock.check()
            if self._check_every is not None:
                self._next_check = time.monotonic() + self._check_every

    def _next_batch(self) -> tuple[list[tuple[int, int, int, float, float, Any]] | None, int, bool]:
        """Wait for the next group commit's records (``None``: closing and nothing left;
        ``[]``: nothing to write, but the lock is due for a check), with the ticket they
        make durable and whether the run is closing (no record comes after them)."""
        policy, cond = self.policy, self._cond
        with cond:
            while True:
                if self.failure is not None:
                    return None, 0, False
                count = len(self._pending) if self._journal else 0
                if count and (self._strict or self._closing or count >= policy.every):
                    break
                if self._closing:
                    return None, 0, False
                now = time.monotonic()
                wait = self._oldest + policy.interval - now if count else math.inf
                if wait <= 0:
                    break
                if self._next_check <= now:
                    return [], 0, False
                wait = min(wait, self._next_check - now)
                cond.wait(None if wait == math.inf else wait)
            batch, self._pending = self._pending, []
            self._taken += len(batch)
            cond.notify_all()  # workers held back by max_pending
            return batch, self._taken, self._closing

    def _changed_data(self) -> bytes | None:
        version = self.data.version
        if version == self._data_version:
            return None
        blob = dump_data(self.data, self.serializer)
        self._data_version = version
        return blob

    def _fail(self, exc: BaseException) -> None:
        _log.error("run %s: saving to %r failed: %s: %s", self.run_id, self.store, type(exc).__name__, exc)
        # Cancel first: workers waiting for this write must find the run aborted when
        # they wake, so that no dependent of an unsaved completion starts.
        what = "the run's lock was lost" if isinstance(exc, LockLostError) else "saving the run failed"
        try:
            self._on_failure(f"{what}: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                if self.failure is None:
                    self.failure = exc
                self._fast_limit = 0
                self._cond.notify_all()

    def close(self, before_save: bool = False) -> None:
        """Write what is queued, then stop the writer (waits for it).

        ``before_save``: the run's final snapshot follows at once; under ``batched``, what
        is left goes to ``Store._checkpoint_before_save`` (no fsync of its own on SQLite)."""
        with self._cond:
            self._before_save = before_save and not self._strict
            self._closing = True
            self._fast_limit = 0
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:  # left behind by a failed writer (or one never started)
            left, self._pending = self._pending, []
        self._keep(left)


def _check_made(state: RunState, ids: np.ndarray | None = None) -> None:
    """:meth:`RunState.validate` of a state made here, less what cannot be wrong in it: its
    names and graph are a built workflow's, and its fingerprint was computed from them (a
    full validation costs 0.2 us a node, most of it in those).  What the run and the
    serializer gave is checked: outputs (bytes, exactly the completed nodes'), statuses,
    attempts, progress, errors and the data."""
    outputs = state.outputs
    if not set(map(type, outputs.values())) <= {bytes, type(NOT_SAVED)}:
        raise CorruptStateError("outputs must be bytes (or NOT_SAVED)")
    ids = np.sort(np.fromiter(outputs, np.int64, len(outputs)) if ids is None else ids)  # the outputs' keys
    state._validate_header()
    state._validate_nodes(len(state.node_names))
    state._validate_progress()
    state._validate_outputs(ids)
    if not set(map(type, state.errors.values())) <= {ErrorRecord}:
        raise CorruptStateError("errors must be ErrorRecord values")
    if type(state.data) is not bytes:
        raise CorruptStateError(f"data must be bytes, got {type(state.data).__name__}")


def _merged_items(restored: dict[int, dict[int, ItemRecord]], recorded: dict[int, dict[int, ItemRecord]]
                  ) -> dict[int, dict[int, ItemRecord]]:
    """The items a final snapshot keeps: those a resume restored, then what this run
    recorded (a map that did not expand again keeps its saved items)."""
    items = {node: dict(records) for node, records in restored.items()}
    for node, records in recorded.items():
        items.setdefault(node, {}).update(records)
    return items


class DurableRun:
    """Internal: the whole store side of one durable run, from lock to final snapshot.

    The engine goes through it in this order, once per durable run:

    1. :meth:`open`: take the store's lock on the run id (and load the state when
       resuming by id, or check that a new id is free);
    2. :meth:`plan`: the :class:`~flow_orchestrator.resume.ResumePlan` of the state to
       resume, if any, with the serializer the run saves with;
    3. :meth:`prepare`: the writer the core calls, with the initial snapshot ready
       (none when the run appends to the stored journal as it is);
    4. :meth:`start` once the core exists, then :meth:`finish` (or
       :meth:`finish_quietly` on the way out of an interrupt) when the run ends.

    It is a context manager: leaving the ``with`` block by an exception before
    :meth:`finish` releases the lock without a final save, so a run that could not start
    never leaves its run id locked.
    """

    def __init__(self, store: Store, run_id: str, policy: CheckpointPolicy,
                 serializer: Serializer | None) -> None:
        if not isinstance(store, Store):
            raise DefinitionError(f"store must be a Store, got {type(store).__name__}")
        self.store = store
        self.run_id = run_id
        self.policy = policy
        self.serializer = serializer or JsonSerializer()
        self.writer: RunWriter | None = None
        self._exit = contextlib.ExitStack()
        handle = self._exit.enter_context(store.lock(run_id))
        self.lock = handle if isinstance(handle, RunLock) else None  # a store of our own gives one
        self._started_at = time.time()
        self._restored: dict[int, bytes] = {}
        self._restored_items: dict[int, dict[int, ItemRecord]] = {}  # completed items a resume restores
        self._restored_times: tuple[np.ndarray, np.ndarray] | None = None
        self._initial: RunState | None = None
        self._graph: tuple[Workflow, str, np.ndarray, np.ndarray] | None = None  # fingerprint and CSR, once
        self._loaded: RunState | None = None
        self.resume_state: RunState | None = None  # the state this run continues, if any
        self._done = False

    @classmethod
    def open(cls, store: Store, run_id: str | None, resume: RunState | str | None, checkpoint: CheckpointSpec,
             serializer: Serializer | None) -> DurableRun:
        """Lock the run in ``store``; ``resume`` is a run id to load from ``store``, a
        :class:`RunState` to continue, or ``None`` for a new run (whose id must be free).

        The run id is ``run_id``, else the id of the run to resume, else a new one.
        """
        policy = CheckpointPolicy.of(checkpoint)
        if isinstance(resume, str):
            if run_id is not None and run_id != resume:
                raise DefinitionError(f"run_id={run_id!r} differs from the run to resume, {resume!r}")
            run_id = resume
        elif isinstance(resume, RunState) and run_id is None:
            run_id = resume.run_id
        run_id = check_run_id(run_id) if run_id is not None else new_run_id()
        durable = cls(store, run_id, policy, serializer)  # takes the lock
        with durable:
            if isinstance(resume, str):
                durable.resume_state = durable.load()
            elif resume is None:
                durable.check_new()
            else:
                durable.resume_state = resume
        return durable

    def __enter__(self) -> DurableRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and not self._done:
            self.release()

    def plan(self, workflow: Workflow, rerun: Any = (), allow_new_nodes: bool = False) -> ResumePlan | None:
        """The plan for resuming the state this run continues (``None`` for a new run)."""
        return ResumePlan.build(workflow, self.resume_state, rerun, allow_new_nodes, self.serializer)

    def load(self) -> RunState:
        """The saved state of the run (under the lock)."""
        self._loaded = self.store.load(self.run_id)
        return self._loaded

    def check_new(self) -> None:
        """:class:`RunExistsError` if the store already holds this run id."""
        if self.store.exists(self.run_id):
            raise RunExistsError(f"the store already holds a run {self.run_id!r}: resume it "
                                 "(resume=run_id) or delete it first")

    def prepare(self, workflow: Workflow, data: WorkflowData, on_failure: Callable[[str], None],
                resume: ResumePlan | None = None) -> RunWriter:
        """The checkpointer for the run's core, with the run's initial snapshot ready.

        ``resume`` is the plan of a resumed run (see :meth:`plan`).  Call :meth:`start`
        once the core exists.
        """
        state: RunState | None = None
        if resume is not None and self._loaded is not None and resume.continues(self._loaded):
            # The stored snapshot and journal already say what this run starts from:
            # append to them (no snapshot to write before the first checkpoint).
            saved = resume.state
            done = np.flatnonzero(resume.completed).tolist()
            self._restored = {node: saved.outputs[node] for node in done}
            self._restored_times = (saved.started, saved.ended)
            self._started_at = saved.started_at
        else:
            state = RunState.initial(workflow, self.run_id, serializer=self.serializer, data=data,
                                     started_at=self._started_at, check=False)
            if resume is not None:
                self._carry_over(state, resume.state, resume.completed, resume.ids)
                self._started_at = state.started_at = resume.state.started_at
                state.items = {node: dict(records) for node, records in resume.item_records.items()}
        if resume is not None:
            self._restored_items = resume.item_records
        writer = RunWriter(self.store, self.run_id, self.policy, self.serializer, data, workflow.names, on_failure,
                           self.lock)
        writer.outputs.update(self._restored)
        writer.unsaved = unsaved_nodes(workflow)
        self._initial = state
        if state is not None:
            self._graph = (workflow, state.fingerprint, state.succ_indptr, state.succ_indices)
        self.writer = writer
        return writer

    def start(self) -> None:
        """Start the writer: it saves the initial snapshot (if any) first."""
        assert self.writer is not None
        self.writer.start(self._initial)
        self._initial = None

    def _carry_over(self, state: RunState, saved: RunState, completed: np.ndarray, old_ids: np.ndarray) -> None:
        """Copy the restored nodes' status, attempts, times and outputs into ``state``."""
        old = np.flatnonzero(completed[old_ids])  # saved ids of nodes that stay completed
        new = old_ids[old]
        state.statuses[new] = _COMPLETED
        state.attempts[new] = saved.attempts[old]
        state.started[new] = saved.started[old]
        state.ended[new] = saved.ended[old]
        outputs = saved.outputs
        self._restored = {int(n): outputs[int(o)] for o, n in zip(old.tolist(), new.tolist())}
        state.outputs = dict(self._restored)
        self._restored_times = (state.started.copy(), state.ended.copy())

    def finish(self, result: RunResult | None, data: WorkflowData) -> None:
        """Flush the writer, save the final snapshot (of ``result``, if any), release the lock.

        Raises :class:`CheckpointFailedError` (with ``result``) if any write failed.
        Idempotent.
        """
        if self._done:
            return
        self._done = True
        writer = self.writer
        try:
            if writer is not None:
                writer.close(before_save=result is not None)
                if writer.failure is None and result is not None:
                    final = self._final_state(result, data, writer)
                    if self.lock is not None:
                        self.lock.check()
                    self.store.save(final)
        except BaseException as exc:  # noqa: BLE001 - reported below
            if writer is not None and writer.failure is None:
                writer.failure = exc
        finally:
            self.release()
            if writer is not None:  # the serialized outputs go now, not when a GC cycle does
                writer.outputs = {}
                writer.items = {}
            self._restored = {}
            self._restored_items = {}
        failure = writer.failure if writer is not None else None
        if failure is not None:
            what = ("stopped: its lock in the store was lost, and nothing was saved after that"
                    if isinstance(failure, LockLostError) else "saving its state to the store failed")
            error = CheckpointFailedError(f"run {self.run_id}: {what}: {type(failure).__name__}: {failure}")
            error.result = result
            raise error from failure

    def finish_quietly(self, result: RunResult | None, data: WorkflowData) -> None:
        """:meth:`finish` on the way out of an interrupt: a failed save is logged, the
        interrupt goes on."""
        try:
            self.finish(result, data)
        except CheckpointFailedError as exc:
            _log.error("run %s: %s", self.run_id, exc)

    def _final_state(self, result: RunResult, data: WorkflowData, writer: RunWriter) -> RunState:
        statuses = np.array(result.statuses)
        saved_outputs, saved_errors = dict(writer.outputs), dict(writer.errors)  # late nodes may add more
        ids = np.fromiter(saved_outputs, np.int64, len(saved_outputs))
        has_output = np.zeros(len(statuses), dtype=bool)
        has_output[ids] = True
        # A node that completed but whose output was not recorded yet is saved as cancelled
        # when the run was (a cancelled run leaves no node pending), else as pending:
        # either way it runs again on resume (at least once).
        unrecorded = NodeStatus.CANCELLED if result.status == RunStatus.CANCELLED else NodeStatus.PENDING
        statuses[(statuses == _COMPLETED) & ~has_output] = unrecorded
        done = statuses == _COMPLETED
        if int(np.count_nonzero(done)) == len(saved_outputs):  # every recorded output is kept
            outputs = saved_outputs
        else:
            keep = done.tolist()
            outputs = {node: blob for node, blob in saved_outputs.items() if keep[node]}
            ids = ids[done[ids]]
        ended_with = result.errors_by_id
        failed = set(ended_with)
        errors = {node: record for node, record in saved_errors.items() if node in failed}
        for node in failed - errors.keys():
            errors[node] = ErrorRecord.from_exception(ended_with[node])
        started, ended = np.array(result.started), np.array(result.ended)
        if self._restored_times is not None:
            keep = np.isnan(started) & ~np.isnan(self._restored_times[0])
            started[keep], ended[keep] = self._restored_times[0][keep], self._restored_times[1][keep]
        workflow = result.workflow
        graph = self._graph if self._graph is not None and self._graph[0] is workflow else None
        _, digest, indptr, indices = graph or (workflow, fingerprint(workflow), *canonical_graph(workflow))
        state = RunState._unchecked(workflow=workflow.name, fingerprint=digest, run_id=self.run_id,
                                    run_status=str(result.status), node_names=workflow.names,
                                    succ_indptr=indptr, succ_indices=indices,
                                    statuses=statuses, attempts=np.array(result.attempts), started=started,
                                    ended=ended, started_at=self._started_at, updated_at=time.time(),
                                    outputs=outputs, errors=errors, data=dump_data(data, self.serializer),
                                    serializer=self.serializer.name,
                                    items=_merged_items(self._restored_items, writer.items))
        _check_made(state, ids)
        return state

    def release(self) -> None:
        """Stop the writer (if any) and release the lock (without a final save); idempotent."""
        if self.writer is not None:
            self.writer.close()
        self._exit.close()
