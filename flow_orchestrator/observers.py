"""Observers: hooks called when a run and its nodes change status.

Subclass :class:`Observer` and override the hooks you need; register it on an engine
(``Engine(observers=[...])``, :meth:`Engine.add_observer`, or for a while with
``with engine.observe(obs): ...``) or on one run (``engine.run(wf, observers=[...])``).

Cost
    A run with no observer passes ``None`` to the scheduler, which then pays one pointer
    test per event.  With observers, each event builds one small :class:`NodeEvent`
    (only if an observer overrides its hook, decided once per run) and calls only those
    observers: about 0.3 us an event, 0.65 us a node for an observer of every hook.

Threads
    Every hook runs synchronously on the thread where the event happened:

    ================================  ===============================================
    ``on_workflow_start/finish``      the thread that called ``Engine.run`` (or the
                                      run's own thread for ``Engine.submit``)
    ``on_node_start/success/failure`` the worker thread that ran the attempt (a
                                      dispatch or callback thread for process pools)
    ``on_node_retry``                 the worker thread, or the engine's timer thread
                                      when a timed-out attempt is retried
    ``on_node_timeout``               the engine's timer thread
    ``on_node_skip``                  the thread that recorded the failure upstream
    ``on_node_cancel``                the thread that ran the node, or the one that
                                      swept the run after it was aborted
    ================================  ===============================================

    So hooks must be thread-safe and quick; a slow hook slows the run down.

Isolation
    An observer that raises is logged (logger ``flow_orchestrator.observers``) and
    skipped for that event; it never breaks the run or the other observers.

Each event is delivered exactly once per observer.  For one node, events arrive in the
order they happened (start before success or failure, retry before the next start).

Where it sits: layer L4 (services, observation): the core calls the dispatcher through
the ``NodeEventSink`` protocol of ``_ext.pyi``; results arrive as
:class:`~flow_orchestrator.result.RunResult` s from below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import RetryRequested

if TYPE_CHECKING:
    from .result import RunResult

__all__ = ["Observer", "NodeEvent", "RunEvent", "CallbackObserver"]

_log = logging.getLogger("flow_orchestrator.observers")


class RunEvent(NamedTuple):
    """A run started or finished.  ``result`` is set on finish."""

    workflow: str
    run_id: str
    result: RunResult | None = None


class NodeEvent(NamedTuple):
    """Something happened to one node of one run (a named tuple: cheap to make).

    ``attempt`` is 0 for nodes that never ran (skip, cancel before start);
    ``duration`` is set on success (seconds of the attempt); ``error`` on failure and
    retry; ``delay`` on retry (seconds until the next attempt).
    """

    workflow: str
    run_id: str
    node: str
    node_id: int
    attempt: int = 0
    duration: float | None = None
    error: BaseException | None = None
    delay: float | None = None


class Observer:
    """Base class of observers: every hook does nothing; override the ones you need."""

    def on_workflow_start(self, event: RunEvent) -> None:
        """A run is about to start its first node."""

    def on_workflow_finish(self, event: RunEvent) -> None:
        """A run ended (completed, failed or cancelled); ``event.result`` has it all."""

    def on_node_start(self, event: NodeEvent) -> None:
        """An attempt of a node started."""

    def on_node_success(self, event: NodeEvent) -> None:
        """A node completed."""

    def on_node_failure(self, event: NodeEvent) -> None:
        """A node failed for good (retries exhausted or not retryable)."""

    def on_node_retry(self, event: NodeEvent) -> None:
        """An attempt failed or timed out and the node will run again after ``delay``."""

    def on_node_skip(self, event: NodeEvent) -> None:
        """A node will not run: one of its dependencies failed, timed out or was cancelled."""

    def on_node_cancel(self, event: NodeEvent) -> None:
        """A node was cancelled (the run was aborted or cancelled, or it raised
        :class:`~flow_orchestrator.errors.NodeCancelledError`)."""

    def on_node_timeout(self, event: NodeEvent) -> None:
        """A node's last attempt ran past its timeout."""


class CallbackObserver(Observer):
    """An observer from plain callables: ``CallbackObserver(on_node_failure=alert)``."""

    def __init__(self, **hooks: Callable[[Any], None]) -> None:
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Observer, name):
                raise TypeError(f"unknown observer hook {name!r}")
            if not callable(fn):
                raise TypeError(f"hook {name} must be callable, got {fn!r}")
            setattr(self, name, fn)


_NODE_HOOKS = ("on_node_start", "on_node_success", "on_node_failure", "on_node_retry",
               "on_node_skip", "on_node_cancel", "on_node_timeout")


def _overrides(observer: Observer, hook: str) -> bool:
    method = getattr(observer, hook, None)
    if method is None:
        return False
    return getattr(method, "__func__", method) is not getattr(Observer, hook)


def _deliver(hook: Callable[[Any], None], event: Any) -> None:
    try:
        hook(event)
    except Exception:  # an observer must never break a run
        _log.exception("observer hook %r raised on %r; ignored", hook, event)


def _send(targets: tuple[Callable[[Any], None], ...], event: NodeEvent) -> None:
    """:func:`_deliver` to each target, inlined (the per-event path)."""
    for target in targets:
        try:
            target(event)
        except Exception:  # an observer must never break a run
            _log.exception("observer hook %r raised on %r; ignored", target, event)


_event = tuple.__new__  # NodeEvent from a full tuple of fields: no keyword parsing per event


class Dispatcher:
    """Turns the scheduler's events (node ids) into observer calls (internal).

    One per run; holds, per hook, only the observers that override it, decided once
    (a hook nobody overrides costs its call from the core and one test).  Each event
    that someone wants is one :class:`NodeEvent`, made from a tuple of all its fields.
    """

    __slots__ = ("workflow", "run_id", "_labels", "_hooks", "_start", "_success", "_failure", "_retry",
                 "_skip", "_cancel", "_timeout")

    def __init__(self, workflow: str, run_id: str, labels: Sequence[str],
                 observers: Iterable[Observer]) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self._labels = labels
        observers = tuple(observers)
        self._hooks = {hook: tuple(getattr(o, hook) for o in observers if _overrides(o, hook))
                       for hook in (*_NODE_HOOKS, "on_workflow_start", "on_workflow_finish")}
        hooks = self._hooks
        self._start, self._success = hooks["on_node_start"], hooks["on_node_success"]
        self._failure, self._retry = hooks["on_node_failure"], hooks["on_node_retry"]
        self._skip, self._cancel, self._timeout = hooks["on_node_skip"], hooks["on_node_cancel"], hooks["on_node_timeout"]

    @property
    def has_node_hooks(self) -> bool:
        """Whether any observer wants node events (if not, the core need not send them)."""
        return any(self._hooks[hook] for hook in _NODE_HOOKS)

    def workflow_start(self) -> None:
        """The run starts."""
        for target in self._hooks["on_workflow_start"]:
            _deliver(target, RunEvent(self.workflow, self.run_id))

    def workflow_finish(self, result: RunResult) -> None:
        """The run ended with ``result``."""
        for target in self._hooks["on_workflow_finish"]:
            _deliver(target, RunEvent(self.workflow, self.run_id, result))

    def node_start(self, node_id: int, attempt: int) -> None:
        if self._start:
            _send(self._start, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                  attempt, None, None, None)))

    def node_success(self, node_id: int, attempt: int, seconds: float) -> None:
        if self._success:
            _send(self._success, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                    attempt, seconds, None, None)))

    def node_failure(self, node_id: int, attempt: int, error: BaseException) -> None:
        if self._failure:
            _send(self._failure, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                    attempt, None, error, None)))

    def node_retry(self, node_id: int, attempt: int, error: BaseException, delay: float) -> None:
        if self._retry:
            # A retry asked for by middleware (RetryRequested) reports the error that caused it.
            if isinstance(error, RetryRequested) and error.__cause__ is not None:
                error = error.__cause__
            _send(self._retry, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                  attempt, None, error, delay)))

    def node_skip(self, node_id: int) -> None:
        if self._skip:
            _send(self._skip, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                 0, None, None, None)))

    def node_cancel(self, node_id: int, attempt: int = 0) -> None:
        if self._cancel:
            _send(self._cancel, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                   attempt, None, None, None)))

    def node_timeout(self, node_id: int, attempt: int) -> None:
        if self._timeout:
            _send(self._timeout, _event(NodeEvent, (self.workflow, self.run_id, self._labels[node_id], node_id,
                                                    attempt, None, None, None)))
