"""The library's exception hierarchy.

Every error the library raises on bad input derives from :class:`FlowError`, so one
``except FlowError`` catches them all.  Where a builtin exception is the natural
category, the error also derives from it (an unknown node is a ``LookupError``, a cycle
is a ``ValueError`` and a :class:`graphlib.CycleError`), so code written against the
standard library keeps working.  The core never lets a bare ``KeyError`` or
``IndexError`` escape on bad input.

Where it sits: layer L0 (foundations): imports nothing of the package.
"""

from __future__ import annotations

import graphlib as _std_graphlib
import pickle as _pickle
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FlowError",
    "GraphError",
    "EmptyGraphError",
    "CycleError",
    "DuplicateNodeError",
    "UnknownNodeError",
    "SelfDependencyError",
    "EdgeArrayError",
    "NodeNameError",
    "DefinitionError",
    "BranchError",
    "MapItemError",
    "FrozenInternerError",
    "GraphTooLargeError",
    "ExecutionError",
    "NodeFailedError",
    "NodeTimeoutError",
    "NodeCancelledError",
    "RetryRequested",
    "WorkflowFailedError",
    "RunCancelledError",
    "InvalidTransitionError",
    "EngineClosedError",
    "UnknownWorkflowError",
    "CorruptStateError",
    "IncompatibleStateError",
    "SerializationError",
    "PicklingError",
    "SorterStateError",
    "SorterCycleError",
    "RenderError",
    "RenderTooLargeError",
    "GraphvizError",
    "GraphvizNotFoundError",
]


class FlowError(Exception):
    """Base class of every error raised by flow-orchestrator."""


class GraphError(FlowError, ValueError):
    """The shape of a graph or workflow definition is invalid."""


class EmptyGraphError(GraphError):
    """A graph or workflow with no nodes was given where at least one is required."""


def cycle_text(cycle: Sequence[Any], shown: int = 5) -> str:
    """``'a' -> 'b' -> 'a'``: the nodes of a cycle (first repeated last); a long cycle as its
    first and last ``shown`` nodes and how many are left out between, then its length."""
    labels = [_label(node) for node in (cycle if len(cycle) <= 2 * shown + 2 else
                                         [*cycle[:shown], *cycle[-shown - 1:]])]
    if len(cycle) <= 2 * shown + 2:
        return " -> ".join(labels)
    left_out = len(cycle) - 2 * shown - 1
    return (" -> ".join(labels[:shown]) + f" -> ... ({left_out:,} more) ... -> " + " -> ".join(labels[shown:])
            + f" (a cycle of {len(cycle) - 1:,} nodes)")


def _label(node: Any) -> str:
    """A node as a cycle message shows it: its repr (a name's quotes, an id's digits), cut."""
    text = repr(node)
    return text if len(text) <= 80 else text[:77] + "..."


class CycleError(GraphError, _std_graphlib.CycleError):
    """The graph has a cycle.

    ``args`` follow the standard library's convention: ``(message, cycle)`` where
    ``cycle`` is a list of nodes in which each node depends on the one before it and
    the first and last nodes are the same.  The message names the nodes: a long cycle
    by its first and last few and its length (see :func:`cycle_text`); :attr:`cycle`
    holds all of them.
    """

    def __init__(self, message: str, cycle: Sequence[Any]) -> None:
        cycle = list(cycle)
        if len(cycle) > 12 and len(message) > 2000:
            # The compiled core spells the whole cycle out: keep its words, not its length.
            full = " -> ".join(repr(node) for node in cycle)
            message = message.replace(full, cycle_text(cycle)) if full in message else \
                message[:1000] + f" ... ({len(message) - 1000:,} more characters)"
        super().__init__(message, cycle)

    @property
    def cycle(self) -> list[Any]:
        """The nodes of one cycle, first node repeated at the end."""
        return self.args[1]

    def __str__(self) -> str:
        return str(self.args[0])


class SorterCycleError(CycleError):
    """The cycle error of :mod:`flow_orchestrator.graphlib`, a drop-in for :mod:`graphlib`.

    ``args`` are the standard library's, ``("nodes are in a cycle", cycle)``, and so is
    ``str()``: the default rendering of those args, not :class:`CycleError`'s message.
    """

    __str__ = BaseException.__str__


class DuplicateNodeError(GraphError):
    """Two nodes were given the same name."""


class UnknownNodeError(GraphError, LookupError):
    """A node name or id that the graph does not contain."""


class SelfDependencyError(GraphError):
    """A node depends on itself."""


class EdgeArrayError(GraphError, TypeError):
    """Edge arrays given in bulk are malformed: wrong dtype, shape, length or ids out of range."""


class NodeNameError(GraphError, TypeError):
    """A node name is not a non-empty ``str``."""


class SorterStateError(FlowError, ValueError):
    """A :mod:`flow_orchestrator.graphlib` sorter was used out of order, or given a node
    it cannot take at that point (not added, not ready, already done).

    A ``ValueError`` with the standard library's message, so code written against
    :mod:`graphlib` catches it unchanged.
    """


class FrozenInternerError(GraphError):
    """A name was added to an interner that belongs to a built (immutable) graph."""


class GraphTooLargeError(GraphError):
    """A graph exceeds the core's limits (2**31 - 1 nodes)."""


class DefinitionError(FlowError, ValueError):
    """A node's options or a workflow definition are invalid (bad retries, timeout, ...)."""


def _safe_str(error: BaseException) -> str:
    """``str(error)``, even for an exception whose ``__str__`` itself raises."""
    try:
        return str(error)
    except Exception:  # a broken __str__ must not hide the failure being reported
        return f"<unprintable {type(error).__name__}>"


class ExecutionError(FlowError):
    """Base class of the errors about running a workflow."""


class NodeFailedError(ExecutionError):
    """One node of a run ended in failure.

    ``__cause__`` is the exception the action raised (or a :class:`NodeTimeoutError`).
    """

    def __init__(self, node: str, status: str, attempts: int, error: BaseException | None) -> None:
        what = f"{type(error).__name__}: {_safe_str(error)}" if error is not None else status
        super().__init__(f"node {node!r} {status} after {attempts} attempt(s): {what}")
        self.node = node
        self.status = status
        self.attempts = attempts
        self.error = error
        self.__cause__ = error


class NodeTimeoutError(ExecutionError, TimeoutError):
    """An attempt of a node ran past its timeout (the thread itself cannot be killed)."""


class NodeCancelledError(ExecutionError):
    """Raised inside an action (by ``ctx.raise_if_cancelled()``) when its run or attempt
    was cancelled; a node whose action raises it ends ``cancelled``."""


class RetryRequested(ExecutionError):
    """Raised by an action (or a retry middleware) to ask the engine for another attempt
    after ``delay`` seconds, whatever the node's ``retries`` option says.

    The wait is the engine timer's: no worker thread is held.  Raise it ``from`` the
    error that caused it, which is reported if the run is aborted meanwhile.
    """

    def __init__(self, delay: float = 0.0, message: str = "retry requested") -> None:
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not delay >= 0:
            raise DefinitionError(f"retry delay must be a number of seconds >= 0, got {delay!r}")
        super().__init__(message)
        self.delay = float(delay)


class BranchError(ExecutionError, ValueError):
    """A branch node's action returned something other than the name, or a list of
    names, of its direct successors: the node fails with it."""


class MapItemError(ExecutionError):
    """Items of a map node failed or timed out: the node fails with it (its
    ``__cause__`` is the first item's error; ``RunResult.items()`` has them all)."""


def _one_line(text: str, limit: int) -> str:
    """The first line of ``text``, at most ``limit`` characters, marked when cut."""
    first, _, rest = text.strip().partition("\n")
    first = first.rstrip()
    if len(first) > limit:
        return first[:limit - 3].rstrip() + "..."
    return first + " ..." if rest.strip() else first


def _failure_line(exc: BaseException) -> str:
    """One line naming a failed node and its error (type and message, trimmed)."""
    if isinstance(exc, NodeFailedError):
        error = exc.error
        what = f"{type(error).__name__}: {_one_line(_safe_str(error), 200)}" if error is not None else exc.status
        return f"node {_one_line(repr(exc.node), 80)} {exc.status} after {exc.attempts} attempt(s): {what}"
    return f"{type(exc).__name__}: {_one_line(_safe_str(exc), 200)}"


class WorkflowFailedError(FlowError, ExceptionGroup):  # type: ignore[misc]
    """A run failed: holds one :class:`NodeFailedError` per failed or timed-out node.

    ``result`` is the run's :class:`~flow_orchestrator.engine.RunResult`, with every
    node's status, the outputs of the nodes that completed, and timings.  ``str()``
    names the first :attr:`SHOWN` failed nodes and their errors, one line each (loggers
    print only ``str()``), then how many more failed.
    """

    SHOWN = 5
    """How many failed nodes ``str()`` names."""

    result: Any

    def __new__(cls, message: str, failures: Sequence[NodeFailedError], result: Any = None):
        self = super().__new__(cls, message, list(failures))
        self.result = result
        return self

    def __init__(self, message: str, failures: Sequence[NodeFailedError], result: Any = None) -> None:
        super().__init__(message, list(failures))

    def derive(self, excs):  # keep the subclass and the result through split()/subgroup()
        return WorkflowFailedError(self.message, excs, self.result)

    def __str__(self) -> str:
        failures = self.exceptions
        lines = [f"{self.message}:"] + [f"  {_failure_line(exc)}" for exc in failures[:self.SHOWN]]
        if len(failures) > self.SHOWN:
            lines.append(f"  and {len(failures) - self.SHOWN} more")
        return "\n".join(lines)


class RunCancelledError(ExecutionError):
    """A run was cancelled before it finished; ``result`` holds its state at the end."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class InvalidTransitionError(FlowError, RuntimeError):
    """A node status change not allowed by :data:`flow_orchestrator.status.TRANSITIONS`
    (an internal error: please report it)."""


class EngineClosedError(FlowError, RuntimeError):
    """The engine was closed and cannot start runs."""


class UnknownWorkflowError(FlowError, LookupError):
    """No workflow of that name is known (to a metrics registry, a store...)."""


class CorruptStateError(FlowError, ValueError):
    """A saved run state is damaged, truncated, inconsistent or of an unknown format."""


class SerializationError(FlowError, ValueError):
    """A value cannot be serialized exactly, or bytes cannot be read back as a value.

    ``path`` is where inside the value the problem is (``"value['a'][2]"``), when known.
    """

    def __init__(self, message: str, path: str = "value") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class IncompatibleStateError(FlowError, ValueError):
    """A saved run cannot resume on this workflow: the message names each difference."""


class RenderError(FlowError):
    """A workflow or run cannot be drawn (base class of the :mod:`flow_orchestrator.render` errors)."""


class RenderTooLargeError(RenderError, GraphTooLargeError):
    """A graph has more nodes than a drawing allows (``max_nodes``); pass a larger
    ``max_nodes`` (or ``None``) to draw it anyway."""


class GraphvizError(RenderError, RuntimeError):
    """Graphviz's ``dot`` failed (or timed out) while rendering a drawing.

    ``returncode`` is its exit status (``None`` when it did not exit) and ``stderr``
    what it wrote on its standard error.
    """

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` program is not installed (or not on ``PATH``)."""


class PicklingError(SerializationError, _pickle.PicklingError):
    """What a node needs in another process, or what it returns from there, cannot be
    pickled or unpickled (an executor running attempts elsewhere: a process pool, dask).

    The message names the node and the value: its ``"action"``, an ``"input 'name'"``,
    ``"data['key']"`` of the run, its ``"output"``, the ``"exception"`` it raised, or
    its ``"context"``; ``node`` and ``what`` (also ``path``) hold them.  Also a
    :class:`pickle.PicklingError`.
    """

    def __init__(self, message: str, node: str | None = None, what: str = "") -> None:
        super().__init__(message, "")
        self.node = node
        self.what = what
        self.path = what
