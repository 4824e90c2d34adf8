"""The record of a run: its id (:func:`new_run_id`) and its outcome (:class:`RunResult`).

Layer L3 (run records).  Everything that reads a run's outcome speaks this type: the
engine builds it, observers receive it, the checkpoint writer saves it, the command
line and the pictures show it.  So it sits below all of them and imports nothing that
runs a workflow: only the definition (:mod:`flow_orchestrator.workflow`), the status
codes and the drawing core (:mod:`flow_orchestrator._draw`), which knows graphs, not
the classes that hold them.

A result holds per-node numpy arrays indexed by node id, the outputs as one list, and
the exceptions of the nodes that ended with one; the arrays are made read-only so that
a result handed to observers cannot be changed under another one.  The engine hands a
result one ``bytes`` snapshot of the run's state (a single copy, made in the core); the
arrays are decoded from it on first read, so a run whose caller only checks ``ok`` or
reads a few outputs builds no array at all.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from . import _draw
from ._draw import Picture
from .errors import NodeFailedError, RunCancelledError, UnknownNodeError, WorkflowFailedError
from .status import NodeStatus, RunStatus, SkipReason, count_text
from .workflow import Workflow

__all__ = ["MapItems", "RunResult", "count_statuses", "new_run_id", "run_status"]

_run_ids = itertools.count(1)
_run_id_prefix = os.urandom(5).hex()


def _new_run_id_prefix() -> None:
    global _run_id_prefix
    _run_id_prefix = os.urandom(5).hex()


# A forked child must not hand out the ids its parent will.
os.register_at_fork(after_in_child=_new_run_id_prefix)


def new_run_id() -> str:
    """A fresh run id, unique across processes: a random per-process prefix and a
    counter (far cheaper than ``uuid4()``, and a run may take any id a store accepts)."""
    return f"{_run_id_prefix}-{next(_run_ids)}"

_COMPLETED = int(NodeStatus.COMPLETED)
_PENDING, _RUNNING, _CANCELLED = int(NodeStatus.PENDING), int(NodeStatus.RUNNING), int(NodeStatus.CANCELLED)
_LITTLE_ENDIAN = sys.byteorder == "little"


def run_status(failures: int, aborted: bool, completed: int, num_nodes: int) -> RunStatus:
    """A run's outcome from its counts: failed if a node failed or timed out, cancelled if
    it was aborted or left a node not completed, completed otherwise."""
    if failures:
        return RunStatus.FAILED
    if aborted or completed != num_nodes:
        return RunStatus.CANCELLED
    return RunStatus.COMPLETED


def _read_only(*arrays: np.ndarray) -> None:
    """Make a record's arrays read-only: one handed to observers cannot be changed under another."""
    for arr in arrays:
        arr.flags.writeable = False


class MapItems:
    """The items of one map node in one run (:meth:`RunResult.items`), in element order:
    ``statuses`` (``uint8`` :class:`~flow_orchestrator.status.NodeStatus`), ``attempts``
    (``int32``), ``started`` and ``ended`` (seconds since the run started, NaN where
    unset), ``outputs`` (``None`` where an item did not complete) and ``errors``
    (``{index: exception}``)."""

    __slots__ = ("node", "statuses", "attempts", "started", "ended", "outputs", "errors")

    def __init__(self, node: str, statuses: np.ndarray, attempts: np.ndarray, started: np.ndarray,
                 ended: np.ndarray, outputs: list[Any], errors: dict[int, BaseException]) -> None:
        self.node = node
        _read_only(statuses, attempts, started, ended)
        self.statuses, self.attempts, self.started, self.ended = statuses, attempts, started, ended
        self.outputs = outputs
        self.errors = errors

    def __len__(self) -> int:
        return len(self.statuses)

    def status(self, index: int) -> NodeStatus:
        """The status of item ``index``."""
        return NodeStatus(int(self.statuses[index]))

    def counts(self) -> dict[NodeStatus, int]:
        """How many items ended in each status."""
        return count_statuses(self.statuses)

    def failed(self) -> list[int]:
        """Indices of the items that failed or timed out."""
        return np.flatnonzero((self.statuses == NodeStatus.FAILED) | (self.statuses == NodeStatus.TIMED_OUT)).tolist()

    def __repr__(self) -> str:
        counts = ", ".join(f"{c} {s}" for s, c in self.counts().items() if c)
        return f"<MapItems {self.node!r}: {len(self)} item(s){': ' + counts if counts else ''}>"


def _with_item_counts(names: Callable[[], list[str]], items: Mapping[int, tuple[Any, ...] | None]
                      ) -> Callable[[], list[str]]:
    """The node names of a picture, each map node's followed by its items' counts by status."""
    if not items:
        return names

    def labelled() -> list[str]:
        out = list(names())
        for node, found in items.items():
            if found is not None:
                out[node] = f"{out[node]} [{count_text(found[0].tolist())}]"
        return out
    return labelled


def count_statuses(statuses: np.ndarray) -> dict[NodeStatus, int]:
    counts = np.bincount(statuses, minlength=len(NodeStatus))
    return {status: int(counts[status]) for status in NodeStatus}


class RunResult:
    """The outcome of a run: overall and per-node status, outputs, errors, timings.

    Per-node arrays are indexed by node id (the workflow's definition order):
    ``statuses`` (``uint8`` :class:`~flow_orchestrator.status.NodeStatus` values),
    ``attempts`` (``int32``), ``started`` and ``ended`` (``float64`` seconds since the
    run started, NaN for nodes that never ran).  A resumed run's ``attempts`` include
    those of the nodes it restored as completed; ``restored_attempts`` is their total,
    so that ``attempts.sum() - restored_attempts`` is what this run attempted.
    """

    _statuses: np.ndarray | None

    __slots__ = ("workflow", "run_id", "status", "_statuses", "_attempts", "_started", "_ended",
                 "_outputs", "_errors", "wall_seconds", "_names", "_ids", "cancel_reason",
                 "_snapshot", "_t0_ns", "_n", "restored_attempts", "_skip", "_items")

    def __init__(self, workflow: Workflow, run_id: str, status: RunStatus, statuses: np.ndarray,
                 attempts: np.ndarray, started: np.ndarray, ended: np.ndarray,
                 outputs: list[Any], errors: dict[int, BaseException], wall_seconds: float,
                 cancel_reason: str | None = None, restored_attempts: int = 0,
                 skip_reasons: np.ndarray | None = None,
                 items: dict[int, tuple[Any, ...] | None] | None = None) -> None:
        self._skip = skip_reasons
        self._items = items or {}
        self.workflow = workflow
        self.run_id = run_id
        self.status = status
        for arr in (statuses, attempts, started, ended):
            arr.flags.writeable = False
        self._statuses = statuses
        self._attempts = attempts
        self._started = started
        self._ended = ended
        self._snapshot: bytes | None = None
        self._t0_ns = 0
        self._n = len(statuses)
        self._outputs = outputs
        self._errors = errors
        self.wall_seconds = wall_seconds
        self.cancel_reason = cancel_reason
        self.restored_attempts = restored_attempts
        self._names = workflow.interner

    @classmethod
    def _from_snapshot(cls, workflow: Workflow, run_id: str, status: RunStatus, num_nodes: int, t0_ns: int,
                       snapshot: bytes, outputs: list[Any], errors: dict[int, BaseException],
                       wall_seconds: float, cancel_reason: str | None = None,
                       restored_attempts: int = 0, skip_reasons: np.ndarray | None = None,
                       items: dict[int, tuple[Any, ...] | None] | None = None) -> RunResult:
        """A result whose arrays are decoded on first read from ``snapshot``
        (``RunCore.outcome()``: start and end ``int64`` ns, then ``uint32`` status words)."""
        self = cls.__new__(cls)
        self._skip = skip_reasons
        self._items = items or {}
        self.workflow = workflow
        self.run_id = run_id
        self.status = status
        self._statuses = None
        self._snapshot = snapshot
        self._t0_ns = t0_ns
        self._n = num_nodes
        self._outputs = outputs
        self._errors = errors
        self.wall_seconds = wall_seconds
        self.cancel_reason = cancel_reason
        self.restored_attempts = restored_attempts
        self._names = workflow.interner
        return self

    def _decode(self) -> None:
        n, snapshot = self._n, self._snapshot
        assert snapshot is not None
        times = np.frombuffer(snapshot, dtype=np.int64, count=2 * n)
        words = np.frombuffer(snapshot, dtype=np.uint32, count=n, offset=16 * n)
        seconds = np.where(times != 0, (times - self._t0_ns) / 1e9, np.nan)
        statuses = (words & 0xFF).astype(np.uint8)
        # The result is final: a node still pending or running (the run was interrupted
        # before its sweep, or a helper is still in an abandoned action) ends CANCELLED,
        # here and in the final snapshot built from it; a resume runs it again.
        statuses[(statuses == _PENDING) | (statuses == _RUNNING)] = _CANCELLED
        arrays = (statuses, (words >> 8).astype(np.int32), seconds[:n], seconds[n:])
        for arr in arrays:
            arr.flags.writeable = False
        # Statuses last: another thread reading them meanwhile decodes again, harmlessly.
        self._attempts, self._started, self._ended = arrays[1:]
        self._statuses = arrays[0]

    @property
    def statuses(self) -> np.ndarray:
        """Each node's final :class:`~flow_orchestrator.status.NodeStatus` (``uint8``)."""
        if self._statuses is None:
            self._decode()
        return self._statuses  # type: ignore[return-value]

    @property
    def attempts(self) -> np.ndarray:
        """Attempts each node made (``int32``)."""
        if self._statuses is None:
            self._decode()
        return self._attempts

    @property
    def started(self) -> np.ndarray:
        """When each node's last attempt started, seconds since the run started (NaN: never)."""
        if self._statuses is None:
            self._decode()
        return self._started

    @property
    def ended(self) -> np.ndarray:
        """When each node's last attempt ended, seconds since the run started (NaN: never)."""
        if self._statuses is None:
            self._decode()
        return self._ended

    @property
    def ok(self) -> bool:
        """True when every node completed."""
        return self.status is RunStatus.COMPLETED

    def _id(self, name: str | int) -> int:
        if isinstance(name, str):
            return self._names.id(name)
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < self._n:
            return int(name)
        raise UnknownNodeError(f"workflow {self.workflow.name!r} has no node {name!r}")

    def status_of(self, name: str | int) -> NodeStatus:
        """The final status of one node."""
        return NodeStatus(int(self.statuses[self._id(name)]))

    def output(self, name: str | int, default: Any = None) -> Any:
        """The output of one node (``default`` unless it completed)."""
        node = self._id(name)
        if self._statuses is None and _LITTLE_ENDIAN:
            # Not decoded: the status is the low byte of the node's word in the snapshot.
            status = self._snapshot[16 * self._n + 4 * node]  # type: ignore[index]
        else:
            # int(): a numpy scalar compared with an IntEnum is slow.
            status = int(self.statuses[node])
        return self._outputs[node] if status == _COMPLETED else default

    def items(self, name: str | int) -> MapItems:
        """The items of map node ``name``: their statuses, attempts, times, outputs and
        errors, in element order (none if the node never expanded: its dependency did
        not complete, or the run stopped before)."""
        node = self._id(name)
        if self.workflow.kind(node) != "map":
            raise UnknownNodeError(f"node {self._names.name(node)!r} of workflow {self.workflow.name!r} is not a map")
        found = self._items.get(node)
        if found is None:
            empty = np.zeros(0, dtype=np.uint8)
            return MapItems(self._names.name(node), empty, np.zeros(0, np.int32), np.zeros(0), np.zeros(0), [], {})
        return MapItems(self._names.name(node), *found)

    @property
    def skip_reasons(self) -> np.ndarray:
        """``uint8`` per node id: why it was SKIPPED, a
        :class:`~flow_orchestrator.status.SkipReason` value (0: it was not)."""
        if self._skip is None:  # without joins and branches every skip is for a failed dependency
            self._skip = np.where(self.statuses == NodeStatus.SKIPPED, np.uint8(SkipReason.DEPENDENCY_FAILED),
                                  np.uint8(0)).astype(np.uint8)
        self._skip.flags.writeable = False
        return self._skip

    def skip_reason(self, name: str | int) -> str | None:
        """Why a SKIPPED node was: ``"branch not taken"`` or ``"dependency failed"``
        (``None`` for a node that was not skipped)."""
        reason = int(self.skip_reasons[self._id(name)])
        return str(SkipReason(reason)) if reason else None

    @property
    def outputs(self) -> dict[str, Any]:
        """``{name: output}`` of every completed node."""
        names = self._names.names()
        done = np.flatnonzero(self.statuses == NodeStatus.COMPLETED)
        return {names[i]: self._outputs[i] for i in done.tolist()}

    @property
    def errors_by_id(self) -> Mapping[int, BaseException]:
        """``{node id: exception}`` of every node that ended with one (read-only view)."""
        return MappingProxyType(self._errors)

    def error(self, name: str | int) -> BaseException | None:
        """The exception that ended a node (failed, timed out or cancelled), if any."""
        return self._errors.get(self._id(name))

    @property
    def errors(self) -> dict[str, BaseException]:
        """``{name: exception}`` of every node that ended with one."""
        return {self._names.name(i): exc for i, exc in sorted(self._errors.items())}

    def nodes(self, status: NodeStatus | int) -> list[str]:
        """Names of the nodes that ended in ``status``."""
        return self._names.names(np.flatnonzero(self.statuses == int(status)).astype(np.int32))

    def counts(self) -> dict[NodeStatus, int]:
        """How many nodes ended in each status."""
        return count_statuses(self.statuses)

    def durations(self) -> np.ndarray:
        """Seconds each node's last attempt took (NaN for nodes that never ran)."""
        return self.ended - self.started

    def failures(self) -> list[NodeFailedError]:
        """One :class:`NodeFailedError` per failed or timed-out node, in id order."""
        bad = np.flatnonzero((self.statuses == NodeStatus.FAILED) | (self.statuses == NodeStatus.TIMED_OUT))
        return [NodeFailedError(self._names.name(i), str(NodeStatus(int(self.statuses[i]))),
                                int(self.attempts[i]), self._errors.get(i)) for i in bad.tolist()]

    def raise_for_status(self) -> None:
        """Raise :class:`WorkflowFailedError` or :class:`RunCancelledError` unless ok."""
        if self.status is RunStatus.FAILED:
            failures = self.failures()
            raise WorkflowFailedError(
                f"workflow {self.workflow.name!r} run {self.run_id}: {len(failures)} node(s) failed",
                failures, self)
        if self.status is RunStatus.CANCELLED:
            raise RunCancelledError(
                f"workflow {self.workflow.name!r} run {self.run_id} was cancelled: {self.cancel_reason}", self)

    def summary(self) -> str:
        """A readable multi-line summary: totals, timings, and each failure (the attempts
        counted are this run's: not those of nodes a resume restored)."""
        counts = {s: c for s, c in self.counts().items() if c}
        ran = np.isfinite(self.started)
        busy = float(np.nansum(self.durations())) if ran.any() else 0.0
        lines = [
            f"workflow {self.workflow.name!r} run {self.run_id}: {self.status} in {self.wall_seconds:.3f} s",
            "  " + ", ".join(f"{c} {s}" for s, c in counts.items()),
            f"  {int(ran.sum())} node(s) ran, {int(self.attempts.sum()) - self.restored_attempts} attempt(s), "
            f"{busy:.3f} s of node time",
        ]
        for failure in self.failures()[:20]:
            lines.append(f"  ✗ {failure}")
        if self.cancel_reason:
            lines.append(f"  cancelled: {self.cancel_reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<RunResult {self.workflow.name!r} {self.run_id} {self.status}>"

    def _picture(self) -> Picture:
        """What a drawing of this run shows (see :mod:`flow_orchestrator._draw`)."""
        workflow = self.workflow
        return Picture(_with_item_counts(workflow.interner.names, self._items), len(self.statuses), workflow.graph.succ_indptr, workflow.graph.succ_indices, self.statuses,
                       f"{workflow.name} run {self.run_id} ({self.status})",
                       f"run {self.run_id} of workflow {workflow.name!r}")

    def to_dot(self, **options: Any) -> str:
        """This run as Graphviz DOT, coloured by status (:func:`flow_orchestrator.render.to_dot`)."""
        return _draw.to_dot(self, **options)

    def to_mermaid(self, **options: Any) -> str:
        """This run as a Mermaid flowchart, coloured by status (:func:`flow_orchestrator.render.to_mermaid`)."""
        return _draw.to_mermaid(self, **options)
