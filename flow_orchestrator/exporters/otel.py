"""OpenTelemetry spans for runs and node attempts, through ``opentelemetry-api``.

:class:`OpenTelemetryObserver` is an :class:`~flow_orchestrator.observers.Observer`::

    from flow_orchestrator.exporters.otel import OpenTelemetryObserver

    engine = Engine(observers=[OpenTelemetryObserver()])

Each run makes one span named after the workflow, from its start to its finish; each
attempt of a node makes one child span of it named after the node, from the attempt's
start to its success, failure, retry, timeout or cancellation.  Nodes that never ran
(skipped, cancelled before starting) make no span; the run span counts them.

Attributes (:data:`WORKFLOW`, :data:`RUN_ID`, :data:`NODE`, :data:`ATTEMPT`,
:data:`STATUS`, :data:`RETRY_DELAY`) are namespaced ``flow_orchestrator.*``.  A failed
attempt (one that will be retried included) or a timed-out one records its exception
and has status ERROR; so has the span of a failed run.  Successful spans keep status
UNSET, as OpenTelemetry recommends for instrumentation libraries.

Spans are started and ended by the threads that call the hooks (see
:mod:`flow_orchestrator.observers`); they are not made current in the action's thread.
The observer keeps the spans still open, per run, under a lock.  Run ids must be unique
among the concurrent runs of a workflow (generated ones are).

Requires ``opentelemetry-api`` (``pip install flow-orchestrator[otel]``) and, to export
anything, an SDK configured by the application.

Where it sits: layer L6 (interfaces): an observer of runs, for OpenTelemetry.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode, Tracer
except ImportError as exc:
    raise ImportError(
        "flow_orchestrator.exporters.otel needs opentelemetry-api: "
        "pip install 'flow-orchestrator[otel]'") from exc

from .._version import __version__
from ..observers import NodeEvent, Observer, RunEvent
from ..status import NodeStatus, RunStatus

if TYPE_CHECKING:
    from ..result import RunResult

__all__ = ["OpenTelemetryObserver", "WORKFLOW", "RUN_ID", "NODE", "ATTEMPT", "STATUS", "RETRY_DELAY",
           "NODE_COUNT_PREFIX"]

WORKFLOW = "flow_orchestrator.workflow"  #: the workflow's name (run and node spans)
RUN_ID = "flow_orchestrator.run_id"  #: the run's id (run and node spans)
NODE = "flow_orchestrator.node"  #: the node's name (node spans)
ATTEMPT = "flow_orchestrator.attempt"  #: 1 for the first attempt (node spans)
#: How the attempt ended: completed, failed, retrying, timed_out or cancelled; or how the
#: run did: completed, failed or cancelled.
STATUS = "flow_orchestrator.status"
RETRY_DELAY = "flow_orchestrator.retry_delay"  #: seconds before the next attempt (retrying spans)
#: Prefix of the run span's per-status node counts, e.g. ``flow_orchestrator.nodes.skipped``.
NODE_COUNT_PREFIX = "flow_orchestrator.nodes."

_RETRYING = "retrying"


class _OpenRun:
    """The span of one run and the spans of its attempts still going on."""

    __slots__ = ("span", "context", "nodes")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.context: Context = trace.set_span_in_context(span)
        self.nodes: dict[int, Span] = {}


class OpenTelemetryObserver(Observer):
    """Makes a span per run and a child span per node attempt.

    Args:
        tracer: the tracer to use; by default ``trace.get_tracer("flow_orchestrator")``
            of the global tracer provider.
    """

    def __init__(self, tracer: Tracer | None = None) -> None:
        self._tracer = tracer if tracer is not None else trace.get_tracer("flow_orchestrator", __version__)
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], _OpenRun] = {}

    def on_workflow_start(self, event: RunEvent) -> None:
        """Start the run's span."""
        span = self._tracer.start_span(event.workflow, attributes={WORKFLOW: event.workflow,
                                                                  RUN_ID: event.run_id})
        with self._lock:
            self._runs[(event.workflow, event.run_id)] = _OpenRun(span)

    def on_workflow_finish(self, event: RunEvent) -> None:
        """End the run's span, with its outcome and per-status node counts."""
        with self._lock:
            run = self._runs.pop((event.workflow, event.run_id), None)
        if run is None:
            return
        if event.result is not None:
            _describe_run(run.span, event.result)
        run.span.end()

    def on_node_start(self, event: NodeEvent) -> None:
        """Start the attempt's span, a child of the run's."""
        with self._lock:
            run = self._runs.get((event.workflow, event.run_id))
        if run is None:  # the run's span could not be started
            return
        span = self._tracer.start_span(event.node, context=run.context, attributes={
            WORKFLOW: event.workflow, RUN_ID: event.run_id, NODE: event.node, ATTEMPT: event.attempt})
        with self._lock:
            run.nodes[event.node_id] = span

    def on_node_success(self, event: NodeEvent) -> None:
        """End the attempt's span."""
        self._end(event, str(NodeStatus.COMPLETED))

    def on_node_failure(self, event: NodeEvent) -> None:
        """End the attempt's span with its exception and status ERROR."""
        self._end(event, str(NodeStatus.FAILED), error=True)

    def on_node_retry(self, event: NodeEvent) -> None:
        """End the failed attempt's span with its exception, status ERROR and the delay."""
        self._end(event, _RETRYING, error=True, extra={RETRY_DELAY: event.delay or 0.0})

    def on_node_timeout(self, event: NodeEvent) -> None:
        """End the attempt's span with status ERROR."""
        self._end(event, str(NodeStatus.TIMED_OUT), error=True)

    def on_node_cancel(self, event: NodeEvent) -> None:
        """End the attempt's span, if the node was running."""
        self._end(event, str(NodeStatus.CANCELLED))

    def _end(self, event: NodeEvent, status: str, error: bool = False,
             extra: dict[str, Any] | None = None) -> None:
        with self._lock:
            run = self._runs.get((event.workflow, event.run_id))
            span = run.nodes.pop(event.node_id, None) if run is not None else None
        if span is None:
            return
        span.set_attributes({STATUS: status, **(extra or {})})
        if error:
            if event.error is not None:
                span.record_exception(event.error)
            span.set_status(Status(StatusCode.ERROR, _describe(event, status)))
        span.end()


def _describe_run(span: Span, result: RunResult) -> None:
    counts = result.counts()
    span.set_attribute(STATUS, str(result.status))
    span.set_attributes({NODE_COUNT_PREFIX + str(status): count for status, count in counts.items() if count})
    if result.status is RunStatus.FAILED:
        failed = counts[NodeStatus.FAILED] + counts[NodeStatus.TIMED_OUT]
        span.set_status(Status(StatusCode.ERROR, f"{failed} node(s) failed or timed out"))


def _describe(event: NodeEvent, status: str) -> str:
    if event.error is None:
        return f"node {event.node!r} attempt {event.attempt}: {status}"
    return f"{type(event.error).__name__}: {event.error}"
