"""The execution engine: runs a :class:`~flow_orchestrator.workflow.Workflow` on threads.

The scheduling itself lives in the compiled core (see the design notes of
``cext/_engine.pxi``): per-node atomic dependency counters, a shared ready FIFO, and
worker loops that take ready nodes themselves.  This module chooses the executor,
prepares workflows once (:meth:`Engine.compile`), drives runs, and turns the core's
arrays into a :class:`RunResult`.

Executors
    * ``None`` (default): the engine's own ``ThreadPoolExecutor`` of ``max_workers``
      threads, created on first use.  The calling thread works too.
    * a ``concurrent.futures.ThreadPoolExecutor`` of yours: helpers run on it.
    * ``"serial"``: every node runs in the calling thread, in a topological order; for
      debugging.
    * ``"processes"`` (for pure-Python CPU-bound actions): the engine's own
      ``ProcessPoolExecutor`` of ``max_workers`` processes, started with
      ``"forkserver"`` on Linux and ``"spawn"`` elsewhere (never ``fork``: see
      :func:`flow_orchestrator.external.process_pool`), created on first use and shut
      down by :meth:`Engine.close`.
    * any other ``concurrent.futures.Executor`` (a ``ProcessPoolExecutor`` of yours, a
      :class:`~flow_orchestrator.dask_executor.DaskExecutor`): the scheduler stays in
      this process and submits one attempt at a time, up to ``max_workers`` in flight;
      retries, timeouts, cancellation, observers and metrics work as with threads.  The
      context an action receives is a snapshot (:class:`ExternalContext`).  For
      executors that run attempts in other processes, actions, their inputs, the run's
      data and outputs must be picklable, and :mod:`flow_orchestrator.external` checks
      it: an action that cannot be pickled stops the run before any node starts with a
      :class:`~flow_orchestrator.errors.DefinitionError`, anything else fails its node
      with a :class:`~flow_orchestrator.errors.PicklingError`, both naming the node.

Actions
    An action takes no argument, or one: the :class:`~flow_orchestrator._ext.NodeContext`
    (its node, the run's data, its dependencies' outputs as ``ctx.inputs``, a
    cancellation token, its deadline and attempt number).  Its return value is the
    node's output.

Failures
    Fail-fast by default: after a node fails for good nothing new starts, running nodes
    finish, dependents are SKIPPED and the rest CANCELLED, and :meth:`Engine.run`
    raises :class:`~flow_orchestrator.errors.WorkflowFailedError`, an ``ExceptionGroup``
    of one :class:`~flow_orchestrator.errors.NodeFailedError` per failure (the original
    exception as its ``__cause__``), carrying the :class:`RunResult`.  With
    ``continue_on_error`` (per node or per run) only the failed node's descendants are
    skipped.  Timeouts are cooperative: Python threads cannot be killed, so at the
    deadline the node is marked TIMED_OUT, its token is cancelled and the run moves on
    while the thread finishes in the background; its late result is discarded.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import itertools
import logging
import os
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _ext
from ._ext import CompiledWorkflow, NodeContext
from ._timer import Timer
from .data import WorkflowData
from .metrics import MetricsRegistry
from .observers import Dispatcher, Observer
from .errors import (
    DefinitionError,
    EngineClosedError,
    IncompatibleStateError,
    NodeFailedError,
    RunCancelledError,
    UnknownNodeError,
    WorkflowFailedError,
)
from .checkpoint import CheckpointPolicy, CheckpointSpec, DurableRun
from .serialization import Serializer
from .state import RunState, diff_workflow
from .stores.base import Store, check_run_id
from .status import NodeStatus, RunStatus
from .workflow import NodeOptions, Workflow, check_middleware

__all__ = ["Engine", "RunResult", "RunHandle", "CancellationToken", "ExternalContext", "NodeContext"]

_log = logging.getLogger("flow_orchestrator.engine")
_run_ids = itertools.count(1)
_run_id_prefix = os.urandom(5).hex()


def _new_run_id_prefix() -> None:
    global _run_id_prefix
    _run_id_prefix = os.urandom(5).hex()


# A forked child must not hand out the ids its parent will.
os.register_at_fork(after_in_child=_new_run_id_prefix)


class CancellationToken:
    """Cancel runs from another thread: ``token.cancel()``; pass it as ``cancel=token``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._reason = "cancelled"
        self._callbacks: list[Callable[[str], None]] = []

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel every run this token was given to (idempotent)."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled, self._reason = True, reason
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reason)

    def _subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._unsubscribe(callback)
        callback(self._reason)
        return lambda: None

    def _unsubscribe(self, callback: Callable[[str], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


@dataclass(frozen=True)
class ExternalContext:
    """The context an action receives when it runs in another process: a snapshot.

    ``data`` is a copy of the run's data taken when the attempt started; changes made
    to it stay in the child process.  There is no live cancellation across processes.
    ``inputs`` hold the dependencies' outputs as values (with a
    :class:`~flow_orchestrator.dask_executor.DaskExecutor` keeping outputs on the
    cluster too: dask resolves them on the worker).
    """

    node: str
    node_id: int
    attempt: int
    deadline: float | None
    inputs: dict[str, Any]
    data: WorkflowData
    run_id: str
    workflow: str = ""

    @property
    def cancelled(self) -> bool:
        """Always False: cancellation does not cross process boundaries."""
        return False

    def raise_if_cancelled(self) -> None:
        """Does nothing (see :attr:`cancelled`)."""

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None``."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; returns False (never cancelled, see :attr:`cancelled`)."""
        time.sleep(max(0.0, seconds))
        return False

    def input(self, name: str) -> Any:
        """The output of the dependency called ``name``."""
        try:
            return self.inputs[name]
        except KeyError:
            raise UnknownNodeError(f"node {self.node!r} has no dependency {name!r}") from None


def _call_external(action: Callable[..., Any], takes_context: bool,
                   middleware: tuple[Callable[..., Any], ...], ctx: ExternalContext) -> Any:
    """Call ``action`` with ``ctx`` (or without, per ``takes_context``) inside its middleware.

    Runs where the executor runs the attempt: middleware is applied there, around the
    action (see also :func:`flow_orchestrator.external.run_attempt`).
    """
    if middleware:
        return _with_middleware(action, takes_context, middleware)(ctx)
    return action(ctx) if takes_context else action()


# -- results --------------------------------------------------------------------------------

_COMPLETED = int(NodeStatus.COMPLETED)


def _count_statuses(statuses: np.ndarray) -> dict[NodeStatus, int]:
    counts = np.bincount(statuses, minlength=len(NodeStatus))
    return {status: int(counts[status]) for status in NodeStatus}


class RunResult:
    """The outcome of a run: overall and per-node status, outputs, errors, timings.

    Per-node arrays are indexed by node id (the workflow's definition order):
    ``statuses`` (``uint8`` :class:`~flow_orchestrator.status.NodeStatus` values),
    ``attempts`` (``int32``), ``started`` and ``ended`` (``float64`` seconds since the
    run started, NaN for nodes that never ran).
    """

    __slots__ = ("workflow", "run_id", "status", "statuses", "attempts", "started", "ended",
                 "_outputs", "_errors", "wall_seconds", "_names", "_ids", "cancel_reason")

    def __init__(self, workflow: Workflow, run_id: str, status: RunStatus, statuses: np.ndarray,
                 attempts: np.ndarray, started: np.ndarray, ended: np.ndarray,
                 outputs: list[Any], errors: dict[int, BaseException], wall_seconds: float,
                 cancel_reason: str | None = None) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.status = status
        for arr in (statuses, attempts, started, ended):
            arr.flags.writeable = False
        self.statuses = statuses
        self.attempts = attempts
        self.started = started
        self.ended = ended
        self._outputs = outputs
        self._errors = errors
        self.wall_seconds = wall_seconds
        self.cancel_reason = cancel_reason
        self._names = workflow.interner

    @property
    def ok(self) -> bool:
        """True when every node completed."""
        return self.status is RunStatus.COMPLETED

    def _id(self, name: str | int) -> int:
        if isinstance(name, str):
            return self._names.id(name)
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < len(self.statuses):
            return int(name)
        raise UnknownNodeError(f"workflow {self.workflow.name!r} has no node {name!r}")

    def status_of(self, name: str | int) -> NodeStatus:
        """The final status of one node."""
        return NodeStatus(int(self.statuses[self._id(name)]))

    def output(self, name: str | int, default: Any = None) -> Any:
        """The output of one node (``default`` unless it completed)."""
        node = self._id(name)
        # int() both sides: a numpy scalar compared with an IntEnum is slow.
        return self._outputs[node] if int(self.statuses[node]) == _COMPLETED else default

    @property
    def outputs(self) -> dict[str, Any]:
        """``{name: output}`` of every completed node."""
        names = self._names.names()
        done = np.flatnonzero(self.statuses == NodeStatus.COMPLETED)
        return {names[i]: self._outputs[i] for i in done.tolist()}

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
        return _count_statuses(self.statuses)

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
        """A readable multi-line summary: totals, timings, and each failure."""
        counts = {s: c for s, c in self.counts().items() if c}
        ran = np.isfinite(self.started)
        busy = float(np.nansum(self.durations())) if ran.any() else 0.0
        lines = [
            f"workflow {self.workflow.name!r} run {self.run_id}: {self.status} in {self.wall_seconds:.3f} s",
            "  " + ", ".join(f"{c} {s}" for s, c in counts.items()),
            f"  {int(ran.sum())} node(s) ran, {int(self.attempts.sum())} attempt(s), "
            f"{busy:.3f} s of node time",
        ]
        for failure in self.failures()[:20]:
            lines.append(f"  ✗ {failure}")
        if self.cancel_reason:
            lines.append(f"  cancelled: {self.cancel_reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<RunResult {self.workflow.name!r} {self.run_id} {self.status}>"

    def to_dot(self, **options: Any) -> str:
        """This run as Graphviz DOT, coloured by status (:func:`flow_orchestrator.render.to_dot`)."""
        from .render import to_dot
        return to_dot(self, **options)

    def to_mermaid(self, **options: Any) -> str:
        """This run as a Mermaid flowchart, coloured by status (:func:`flow_orchestrator.render.to_mermaid`)."""
        from .render import to_mermaid
        return to_mermaid(self, **options)


# -- handles ----------------------------------------------------------------------------------


class RunHandle:
    """A run started by :meth:`Engine.submit`: poll, cancel, or wait for its result."""

    def __init__(self, run: _Run, future: cf.Future[RunResult]) -> None:
        self.run_id = run.run_id
        self._run = run
        self._future = future

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: nothing new starts; running nodes finish.  No effect once it ended."""
        self._run.core.cancel(reason, self._run.generation)

    def done(self) -> bool:
        """Whether the run is over and its result available."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> RunResult:
        """Wait for the run's :class:`RunResult` (raises as :meth:`Engine.run` would)."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the run; the exception it raised, if any."""
        return self._future.exception(timeout)

    def statuses(self) -> np.ndarray:
        """Every node's status now (``uint8``), while the run goes on or after."""
        if not self._future.done():
            snapshot = self._run.core.statuses()
            if self._run.core.generation == self._run.generation:
                return snapshot
        # Finished: the arena may already serve another run; read the result instead.
        exc = self._future.exception()
        result = self._future.result() if exc is None else getattr(exc, "result", None)
        if result is None:
            raise exc  # type: ignore[misc]
        return result.statuses

    def progress(self) -> dict[NodeStatus, int]:
        """How many nodes are in each status now."""
        return _count_statuses(self.statuses())


# -- the engine -------------------------------------------------------------------------------

ExecutorSpec = cf.Executor | Literal["serial", "processes"] | None


class Engine:
    """Runs workflows.  Thread-safe: many runs, of the same or different workflows, at once.

    Args:
        max_workers: threads that execute nodes of one run at most (the calling thread
            included), or with another executor the attempts of one run in flight at
            most (and the processes of ``"processes"``); default ``os.cpu_count()``.
        executor: ``None`` for the engine's own thread pool, ``"serial"``,
            ``"processes"`` for the engine's own process pool, or any
            ``concurrent.futures.Executor`` (see the module documentation).
        continue_on_error: the default for runs: keep running independent branches
            after a failure instead of failing fast.
        middleware: wraps every node of every workflow run on this engine, outermost:
            a node runs as ``engine_mw(workflow_mw(node_mw(action)))``, and within each
            level ``(a, b)`` runs as ``a(b(...))``.
        observers: :class:`~flow_orchestrator.observers.Observer` s notified of every run.
        metrics: ``True`` for a new :class:`~flow_orchestrator.metrics.MetricsRegistry`,
            or one to share between engines; ``None`` (default) for no metrics.

    Use it as a context manager, or call :meth:`close`, to stop its threads.
    """

    def __init__(self, max_workers: int | None = None, executor: ExecutorSpec = None, *,
                 continue_on_error: bool = False, middleware: Sequence[Callable[..., Any]] = (),
                 observers: Iterable[Observer] = (), metrics: MetricsRegistry | bool | None = None) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise DefinitionError(f"max_workers must be an int >= 1, got {max_workers!r}")
        if not (executor is None or isinstance(executor, cf.Executor)
                or (isinstance(executor, str) and executor in ("serial", "processes"))):
            raise DefinitionError("executor must be None, 'serial', 'processes' or a concurrent.futures.Executor, "
                                  f"got {executor!r}")
        self.max_workers = max_workers
        self.continue_on_error = bool(continue_on_error)
        self._executor_spec = executor
        self._own_pool: cf.Executor | None = None
        self._lock = threading.Lock()
        self._compiled: weakref.WeakKeyDictionary[Workflow, CompiledWorkflow] = weakref.WeakKeyDictionary()
        self._timer = Timer()
        self._closed = False
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self.middleware = check_middleware(middleware)
        self._observers: tuple[Observer, ...] = ()
        for observer in observers:
            self.add_observer(observer)
        if metrics is True:
            metrics = MetricsRegistry()
        if metrics is not None and metrics is not False and not isinstance(metrics, MetricsRegistry):
            raise DefinitionError(f"metrics must be True, None or a MetricsRegistry, got {metrics!r}")
        self.metrics: MetricsRegistry | None = metrics or None

    # -- observers ----------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Notify ``observer`` of every run started from now on."""
        if not isinstance(observer, Observer):
            raise DefinitionError(f"observers must be Observer instances, got {observer!r}")
        with self._lock:
            self._observers = (*self._observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop notifying ``observer`` (runs already going on keep it)."""
        with self._lock:
            self._observers = tuple(o for o in self._observers if o is not observer)

    @contextlib.contextmanager
    def observe(self, observer: Observer) -> Iterator[Observer]:
        """``with engine.observe(obs): ...``: ``obs`` sees the runs started inside the block."""
        self.add_observer(observer)
        try:
            yield observer
        finally:
            self.remove_observer(observer)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new runs, let the runs going on finish, then stop the engine's threads.

        Called from inside one of this engine's actions, it does not wait for that run
        (it could not finish): the threads stop when the last run ends.
        """
        with self._lock:
            self._closed = True
            if _worker_state.engine is not self:
                while self._active:
                    self._idle.wait()
            if self._active:
                return
        # Waits for the pool's threads, including any still inside an abandoned
        # (timed-out) attempt, unless called from one of them.
        self._shutdown(wait=_worker_state.engine is not self)

    def _shutdown(self, wait: bool) -> None:
        with self._lock:
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            # Attempts still queued in the engine's own process pool belong to runs that
            # are over (they timed out): dropped rather than run.
            pool.shutdown(wait=wait, cancel_futures=isinstance(pool, cf.ProcessPoolExecutor))
        self._timer.close()

    def _run_started(self) -> None:
        with self._lock:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            self._active += 1

    def _run_ended(self) -> None:
        with self._lock:
            self._active -= 1
            last = self._closed and self._active == 0
            self._idle.notify_all()
        if last:
            self._shutdown(wait=False)  # from the run's own thread: it cannot wait for itself

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def mode(self) -> str:
        """``"threads"``, ``"serial"`` or ``"external"``: how nodes are executed."""
        spec = self._executor_spec
        if spec == "serial":
            return "serial"
        if spec is None or isinstance(spec, cf.ThreadPoolExecutor):
            return "threads"
        return "external"  # "processes" too

    def _pool(self) -> cf.Executor:
        """The executor nodes run on: the user's, or the engine's own (made on first use)."""
        spec = self._executor_spec
        if isinstance(spec, cf.Executor):
            return spec
        with self._lock:
            if self._own_pool is None:
                if spec == "processes":
                    from .external import process_pool

                    self._own_pool = process_pool(self.max_workers)
                else:
                    self._own_pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="flow-orchestrator")
            return self._own_pool

    # -- compiling ------------------------------------------------------------------------

    def compile(self, workflow: Workflow) -> CompiledWorkflow:
        """Prepare ``workflow`` for running (done once per workflow, then cached)."""
        if not isinstance(workflow, Workflow):
            raise DefinitionError(f"expected a Workflow, got {type(workflow).__name__}")
        compiled = self._compiled.get(workflow)
        if compiled is None:
            compiled = compile_workflow(workflow, self.middleware)
            with self._lock:
                compiled = self._compiled.setdefault(workflow, compiled)
        return compiled

    # -- running --------------------------------------------------------------------------

    def run(self, workflow: Workflow, *, data: WorkflowData | Mapping[str, Any] | None = None,
            run_id: str | None = None, continue_on_error: bool | None = None,
            max_concurrency: int | None = None, cancel: CancellationToken | None = None,
            raise_on_failure: bool = True, observers: Iterable[Observer] = (),
            resume: RunState | str | None = None, rerun: Iterable[str] = (),
            allow_new_nodes: bool = False, store: Store | None = None,
            checkpoint: CheckpointSpec = "batched", serializer: Serializer | None = None) -> RunResult:
        """Run ``workflow`` to the end in the calling thread (with helpers); return its result.

        Args:
            data: the run's initial :class:`WorkflowData` (or a mapping to copy).
            run_id: an id for the run (generated when omitted).
            continue_on_error: override the engine's default for this run.
            max_concurrency: at most this many nodes of the run at once.
            cancel: a :class:`CancellationToken` to cancel the run from elsewhere.
            raise_on_failure: raise instead of returning a failed or cancelled result.
            observers: observers of this run only, besides the engine's.
            resume: a saved :class:`~flow_orchestrator.state.RunState` to continue, or
                with ``store`` the id of a run saved there: its completed nodes are not
                run again (their outputs are restored, and so are its data and run id
                unless given); every other node runs, including those that were
                running when it was saved (at least once semantics).
            rerun: with ``resume``, names of nodes to run again anyway, with everything
                that depends on them.
            allow_new_nodes: with ``resume``, accept a workflow with nodes the state does
                not know (they run); any other difference raises
                :class:`~flow_orchestrator.errors.IncompatibleStateError`.
            store: make the run durable: saved to this
                :class:`~flow_orchestrator.stores.Store` under its run id while it runs
                and when it ends, and locked there for the run's duration (see
                :mod:`flow_orchestrator.checkpoint`).  A new run's id must not exist in
                the store yet (:class:`~flow_orchestrator.stores.RunExistsError`).
            checkpoint: with ``store``: ``"strict"``, ``"batched"`` (default), ``"end"``
                or a :class:`~flow_orchestrator.checkpoint.CheckpointPolicy`.
            serializer: with ``store``: how outputs and data are saved (JSON by default;
                must be the one the resumed run was saved with).

        Raises :class:`WorkflowFailedError` when a node failed or timed out and
        :class:`RunCancelledError` when the run was cancelled, unless
        ``raise_on_failure`` is false; ``KeyboardInterrupt`` and ``SystemExit`` (from
        Ctrl-C or an action) cancel the run, then propagate.  With a store:
        :class:`~flow_orchestrator.stores.RunLockedError` when another process holds
        the run, and :class:`~flow_orchestrator.stores.CheckpointFailedError` when a
        save failed during the run (which was then cancelled).
        """
        run = _Run(self, workflow, data, run_id, continue_on_error, max_concurrency, cancel, observers,
                   resume, rerun, allow_new_nodes, store, checkpoint, serializer)
        result = run.drive()
        if raise_on_failure:
            result.raise_for_status()
        return result

    def submit(self, workflow: Workflow, *, data: WorkflowData | Mapping[str, Any] | None = None,
               run_id: str | None = None, continue_on_error: bool | None = None,
               max_concurrency: int | None = None, cancel: CancellationToken | None = None,
               raise_on_failure: bool = True, observers: Iterable[Observer] = (),
               resume: RunState | str | None = None, rerun: Iterable[str] = (),
               allow_new_nodes: bool = False, store: Store | None = None,
               checkpoint: CheckpointSpec = "batched", serializer: Serializer | None = None) -> RunHandle:
        """Start ``workflow`` in the background and return a :class:`RunHandle` at once.

        Takes the options of :meth:`run`.  The run is driven by a thread of its own, so
        a busy pool never delays its start.
        """
        run = _Run(self, workflow, data, run_id, continue_on_error, max_concurrency, cancel, observers,
                   resume, rerun, allow_new_nodes, store, checkpoint, serializer)
        future: cf.Future[RunResult] = cf.Future()
        future.set_running_or_notify_cancel()

        def drive() -> None:
            try:
                result = run.drive()
                if raise_on_failure:
                    result.raise_for_status()
            except BaseException as exc:  # delivered through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=drive, name=f"flow-orchestrator-{run.run_id}", daemon=True).start()
        return RunHandle(run, future)

    def resume(self, workflow: Workflow, run_id: str, *, store: Store, **options: Any) -> RunResult:
        """Continue the run ``run_id`` saved in ``store``: ``run(workflow, store=store,
        resume=run_id, **options)`` (every option of :meth:`run` applies)."""
        return self.run(workflow, store=store, resume=run_id, **options)

    def _workers(self, max_concurrency: int | None) -> int:
        if max_concurrency is None:
            return self.max_workers
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise DefinitionError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        return min(max_concurrency, self.max_workers)


def _new_run_id() -> str:
    # A random per-process prefix and a counter: unique, and far cheaper than uuid4().
    return f"{_run_id_prefix}-{next(_run_ids)}"


class _Run:
    """One run: its arena, executor mode and options; :meth:`drive` runs it to the end."""

    def __init__(self, engine: Engine, workflow: Workflow, data: WorkflowData | Mapping[str, Any] | None,
                 run_id: str | None, continue_on_error: bool | None, max_concurrency: int | None,
                 cancel: CancellationToken | None, observers: Iterable[Observer] = (),
                 resume: RunState | str | None = None, rerun: Iterable[str] = (), allow_new_nodes: bool = False,
                 store: Store | None = None, checkpoint: CheckpointSpec = "batched",
                 serializer: Serializer | None = None) -> None:
        self.engine = engine
        self.workflow = workflow  # strong while the run lasts: compiled workflows hold it weakly
        self.compiled = engine.compile(workflow)
        self.durable: DurableRun | None = None
        if store is not None:
            self.durable, run_id, resume = _open_durable(store, run_id, resume, checkpoint, serializer)
        elif isinstance(resume, str):
            raise DefinitionError("resume=<run id> needs store=, the store the run was saved in")
        try:
            self._setup(workflow, data, run_id, continue_on_error, max_concurrency, cancel, observers,
                        _Resume.of(workflow, resume, rerun, allow_new_nodes,
                                   self.durable.serializer if self.durable is not None else serializer))
        except BaseException:
            if self.durable is not None:
                self.durable.release()
            raise

    def _setup(self, workflow: Workflow, data: WorkflowData | Mapping[str, Any] | None,
               run_id: str | None, continue_on_error: bool | None, max_concurrency: int | None,
               cancel: CancellationToken | None, observers: Iterable[Observer],
               resume: _Resume | None) -> None:
        engine = self.engine
        if data is None and resume is not None:
            data = resume.data
        self.data = data if isinstance(data, WorkflowData) else WorkflowData(data or {})
        if run_id is None and resume is not None:
            run_id = resume.run_id
        self.run_id = run_id if run_id is not None else _new_run_id()
        coe = engine.continue_on_error if continue_on_error is None else bool(continue_on_error)
        self.workers = engine._workers(max_concurrency)
        self.mode = engine.mode
        # The calling thread works too, unless it must stay free to return at a deadline.
        # A run started from inside an action of this engine always works itself: its
        # thread is one of the pool's, and waiting for another could deadlock.
        nested = _worker_state.engine is engine
        self.participate = self.mode == "serial" or (
            self.mode == "threads" and (nested or not self.compiled.has_timeouts))
        spawn = None
        max_helpers = 0
        if self.mode == "threads":
            max_helpers = self.workers - 1 if self.participate else self.workers
            spawn = _spawner(engine)
        observers = (*engine._observers, *observers)
        for observer in observers:
            if not isinstance(observer, Observer):
                raise DefinitionError(f"observers must be Observer instances, got {observer!r}")
        self.events = (Dispatcher(workflow.name, self.run_id, self.compiled.labels, observers)
                       if observers else None)
        self.metrics = engine.metrics
        node_metrics = self.metrics.node_metrics(self.compiled) if self.metrics is not None else None
        node_events = self.events if self.events is not None and self.events.has_node_hooks else None
        writer = None
        if self.durable is not None:  # before the run counts as started: it may refuse the data
            writer = self.durable.prepare(workflow, self.data, self._save_failed, resume)
        engine._run_started()  # raises when the engine is closed
        try:
            if self.mode == "external":
                # Refuse actions another process cannot receive before anything starts.
                from .external import check_actions
                check_actions(engine._pool(), self.compiled, workflow.name,
                              resume.completed if resume is not None else None)
            self.core = _ext.begin_run(self.compiled, self.data, self.run_id, engine._timer, spawn,
                                       max_helpers, coe, node_metrics, node_events, writer)
            if resume is not None:
                self.core.restore(resume.completed, resume.outputs, resume.attempts)
        except BaseException:
            if hasattr(self, "core"):
                self.core.detach()
            engine._run_ended()
            raise
        self.generation = self.core.generation
        self.cancel = cancel
        if self.durable is not None:
            self.durable.start()

    def _save_failed(self, reason: str) -> None:
        """The writer could not save: stop the run (it ends with CheckpointFailedError)."""
        self.core.cancel(reason, self.generation)

    def drive(self) -> RunResult:
        core = self.core
        generation = self.generation
        unsubscribe = (self.cancel._subscribe(lambda reason: core.cancel(reason, generation))
                       if self.cancel is not None else (lambda: None))
        start = time.perf_counter()
        previous = _worker_state.engine
        _worker_state.engine = self.engine
        try:
            if self.events is not None:
                self.events.workflow_start()
            core.start()
            if self.mode == "external":
                _dispatch_external(self, core)
            elif self.participate:
                core.work(True)
            core.wait()
            if core.interrupt is not None:
                raise core.interrupt
            result = self._result(time.perf_counter() - start)
            if self.durable is not None:
                self.durable.finish(result, self.data)
            self._finished(result)
            return result
        except BaseException as exc:
            core.cancel("interrupted", generation)
            _attach_result(exc, self, time.perf_counter() - start)
            attached = getattr(exc, "result", None)
            if self.durable is not None:
                self.durable.finish_quietly(attached if isinstance(attached, RunResult) else None, self.data)
            if isinstance(attached, RunResult):
                self._finished(attached)
            raise
        finally:
            _worker_state.engine = previous
            unsubscribe()
            core.detach()
            self.engine._run_ended()

    def _finished(self, result: RunResult) -> None:
        """Count the run and tell the observers, whatever way it ended."""
        if self.metrics is not None:
            self.metrics.record_run(self.compiled, result.status.value, result.wall_seconds)
        if self.events is not None:
            self.events.workflow_finish(result)

    def _result(self, wall: float) -> RunResult:
        core = self.core
        statuses = core.statuses()
        started, ended = core.times()
        if core.failures:
            status = RunStatus.FAILED
        elif core.aborted or (statuses != NodeStatus.COMPLETED).any():
            status = RunStatus.CANCELLED
        else:
            status = RunStatus.COMPLETED
        return RunResult(self.workflow, self.run_id, status, statuses, core.attempts(),
                         started, ended, core.outputs, dict(core.errors), wall, core.cancel_reason)


class _Resume:
    """What a saved state contributes to a run, mapped onto the workflow's node ids."""

    __slots__ = ("completed", "outputs", "attempts", "data", "run_id", "state", "ids")

    def __init__(self, completed: np.ndarray, outputs: list[Any], attempts: np.ndarray,
                 data: dict[str, Any], run_id: str, state: RunState, ids: np.ndarray) -> None:
        self.completed = completed
        self.outputs = outputs
        self.attempts = attempts
        self.data = data
        self.run_id = run_id
        self.state = state
        self.ids = ids  # the state's node ids -> the workflow's

    @classmethod
    def of(cls, workflow: Workflow, state: RunState | None, rerun: Iterable[str],
           allow_new_nodes: bool, serializer: Serializer | None = None) -> _Resume | None:
        if state is None:
            if tuple(rerun):
                raise DefinitionError("rerun= needs resume=, the state to re-run nodes of")
            return None
        if not isinstance(state, RunState):
            raise DefinitionError(f"resume= takes a RunState, got {type(state).__name__}")
        problems = diff_workflow(state, workflow, allow_new_nodes=allow_new_nodes)
        if problems:
            raise IncompatibleStateError(
                f"run {state.run_id} cannot resume on workflow {workflow.name!r}: " + "; ".join(problems))
        n = len(workflow)
        ids = workflow.interner.ids(state.node_names)  # matched by name: ids may differ
        completed = np.zeros(n, dtype=bool)
        attempts = np.zeros(n, dtype=np.int32)
        done = np.flatnonzero(state.statuses == _COMPLETED)
        completed[ids[done]] = True
        attempts[ids] = state.attempts
        again = list(rerun)
        if again:
            completed[workflow.graph.descendants(workflow.interner.ids(again), include_self=True)] = False
        outputs: list[Any] = [None] * n
        for old, value in state.load_outputs(serializer).items():
            if completed[ids[old]]:
                outputs[ids[old]] = value
        return cls(completed, outputs, attempts, state.load_data(serializer), state.run_id, state, ids)


def _open_durable(store: Store, run_id: str | None, resume: RunState | str | None, checkpoint: CheckpointSpec,
                  serializer: Serializer | None) -> tuple[DurableRun, str, RunState | None]:
    """Lock the run in ``store`` (and load it when resuming by id): the durable run, its
    id and the state to resume (if any)."""
    policy = CheckpointPolicy.of(checkpoint)
    if isinstance(resume, str):
        if run_id is not None and run_id != resume:
            raise DefinitionError(f"run_id={run_id!r} differs from the run to resume, {resume!r}")
        run_id = resume
    elif isinstance(resume, RunState) and run_id is None:
        run_id = resume.run_id
    run_id = check_run_id(run_id) if run_id is not None else _new_run_id()
    durable = DurableRun(store, run_id, policy, serializer)  # takes the lock
    try:
        if isinstance(resume, str):
            resume = durable.load()
        elif resume is None:
            durable.check_new()
    except BaseException:
        durable.release()
        raise
    return durable, run_id, resume


class _WorkerState(threading.local):
    engine: Engine | None = None


#: Which engine the current thread is working for (as a driver or a helper), if any.
_worker_state = _WorkerState()


def _spawner(engine: Engine) -> Callable[[Any, bool], None]:
    """How a run starts a helper: on the engine's pool, or on a thread of its own when it
    replaces a thread stuck in an abandoned (timed-out) attempt."""
    def helper(core: Any) -> None:
        _worker_state.engine = engine
        try:
            core.work(False)
        finally:
            _worker_state.engine = None

    def spawn(core: Any, dedicated: bool) -> None:
        if dedicated:
            threading.Thread(target=helper, args=(core,), name="flow-orchestrator-replacement",
                             daemon=True).start()
        else:
            engine._pool().submit(helper, core)
    return spawn


def _attach_result(exc: BaseException, run: _Run, wall: float) -> None:
    """Give an interrupt (Ctrl-C, SystemExit) the run's state as ``exc.result``."""
    if getattr(exc, "result", None) is None:
        try:
            exc.result = run._result(wall)  # type: ignore[attr-defined]
        except Exception:  # the state is best effort here; the interrupt must propagate
            pass


def _dispatch_external(run: _Run, core: Any) -> None:
    """One attempt at a time to a non-thread executor, up to ``run.workers`` in flight
    (one more queued in a process pool: :func:`flow_orchestrator.external.queue_ahead`).

    For an executor that runs attempts in other processes (see
    :func:`flow_orchestrator.external.codec_for`) the actions were checked to pickle
    before the run started (``_Run._setup``), and each attempt goes through
    :class:`flow_orchestrator.external.Shipper`, which names what cannot be pickled.
    """
    from .external import codec_for, queue_ahead, shipper

    executor = run.engine._pool()
    codec = codec_for(executor)
    ship = shipper(executor, codec, run.compiled) if codec is not None else None
    slots = threading.BoundedSemaphore(run.workers + queue_ahead(executor, run.workers, run.compiled))
    actions = run.compiled.external_actions
    while not core.is_over and not core.aborted:
        if not slots.acquire(timeout=0.05):
            continue
        node = core.pop_ready(0.05)
        if node < 0:
            slots.release()
            continue
        word = core.begin_attempt(node)
        if not word:
            slots.release()
            continue
        inputs, name, attempt, deadline = core.external_context(node, word)
        try:
            if ship is not None:
                # Pickling the run's data is the snapshot: WorkflowData pickles a copy
                # taken under its lock.
                future = ship.submit(node, ExternalContext(name, node, attempt, deadline, inputs, run.data,
                                                           run.run_id, run.workflow.name))
            else:
                ctx = ExternalContext(name, node, attempt, deadline, inputs, WorkflowData(run.data.snapshot()),
                                      run.run_id, run.workflow.name)
                action, accepts, middleware = actions[node]
                future = executor.submit(_call_external, action, accepts, middleware, ctx)
        except Exception as exc:  # data or a context that cannot be copied or pickled; a shut-down executor
            slots.release()
            core.finish_attempt(node, word, False, exc)
            continue
        future.add_done_callback(_external_done(core, node, word, slots, ship))


def _external_done(core: Any, node: int, word: int, slots: threading.BoundedSemaphore,
                   ship: Any = None) -> Callable[[cf.Future[Any]], None]:
    """The done callback of an attempt's future: record its outcome (decoded by ``ship``,
    a :class:`flow_orchestrator.external.Shipper`, when the attempt was shipped)."""
    def done(future: cf.Future[Any]) -> None:
        slots.release()
        try:
            exc = future.exception()
        except cf.CancelledError as cancelled:
            exc = cancelled
        if exc is None:
            value = future.result()
            if ship is not None:
                try:
                    value = ship.output(node, value)
                except Exception as error:  # noqa: BLE001 - an output that cannot be unpickled here
                    core.finish_attempt(node, word, False, error)
                    return
            core.finish_attempt(node, word, True, value)
        else:
            core.finish_attempt(node, word, False, exc)
    return done


# -- compiling a workflow -------------------------------------------------------------------------


def takes_context(action: Callable[..., Any]) -> bool:
    """Whether ``action`` is called with the context (it accepts a positional argument).

    Actions take no argument or one; a signature Python cannot inspect (some builtins)
    is called with none.
    """
    if type(action) is types.FunctionType:
        # Fast path for plain functions (bulk workflows have millions): read the code object.
        code = action.__code__
        n_positional = code.co_argcount
        n_defaults = len(action.__defaults__ or ())
        kw_required = code.co_kwonlyargcount - len(action.__kwdefaults__ or {})
        if n_positional - n_defaults <= 1 and kw_required == 0:
            return n_positional > 0 or bool(code.co_flags & inspect.CO_VARARGS)
    try:
        sig = inspect.signature(action)
    except (TypeError, ValueError):
        return False
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p for p in sig.parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(required) > 1 or any(p.kind is p.KEYWORD_ONLY for p in required):
        raise DefinitionError(f"action {action!r} must take no argument or one (the context), takes {sig}")
    return bool(positional)


def _with_middleware(action: Callable[..., Any], accepts_ctx: bool,
                     middleware: tuple[Callable[..., Any], ...]) -> Callable[..., Any]:
    wrapped = action if accepts_ctx else (lambda ctx, _a=action: _a())
    for mw in reversed(middleware):
        wrapped = mw(wrapped)
        if not callable(wrapped):
            raise DefinitionError(f"middleware {mw!r} returned {wrapped!r}, not a callable")
    return wrapped


class _Compiler:
    """Turns a Workflow into the arrays of a CompiledWorkflow (see compile_workflow)."""

    def __init__(self, workflow: Workflow, outer: tuple[Callable[..., Any], ...] = ()) -> None:
        self.workflow = workflow
        # Engine middleware, then the workflow's: applied outside each node's own.
        self.outer = (*outer, *workflow.middleware)
        self.table: tuple[NodeOptions, ...] = workflow.option_table
        self._takes: dict[int, bool] = {}

    def takes(self, action: Callable[..., Any]) -> bool:
        key = id(action)
        found = self._takes.get(key)
        if found is None:
            found = self._takes[key] = takes_context(action)
        return found

    def compile(self) -> CompiledWorkflow:
        wf = self.workflow
        option_flags = np.array([(2 if o.timeout else 0) | (4 if o.continue_on_error else 0)
                                 for o in self.table], dtype=np.uint8)
        flags = option_flags[wf.option_index]
        actions: list[Callable[..., Any]] = []
        raw: list[tuple[Callable[..., Any], bool, tuple[Callable[..., Any], ...]]] = []
        for node, action in enumerate(wf.actions):
            try:
                accepts = self.takes(action)
            except DefinitionError as exc:
                raise DefinitionError(f"node {wf.interner.name(node)!r}: {exc}") from None
            middleware = (*self.outer, *self.table[int(wf.option_index[node])].middleware)
            raw.append((action, accepts, middleware))
            if middleware:
                actions.append(_with_middleware(action, accepts, middleware))
                flags[node] |= 1
            else:
                actions.append(action)
                flags[node] |= 1 if accepts else 0
        max_attempts = np.array([1 + o.retries for o in self.table], dtype=np.int32)
        timeouts = np.array([o.timeout or 0.0 for o in self.table], dtype=np.float64)
        table = self.table
        compiled = CompiledWorkflow(wf, wf.graph, tuple(actions), flags, wf.option_index,
                                    max_attempts, timeouts,
                                    lambda slot, retry: table[slot].retry_delay_for(retry))
        compiled.external_actions = raw
        return compiled


def compile_workflow(workflow: Workflow, middleware: Sequence[Callable[..., Any]] = ()) -> CompiledWorkflow:
    """Prepare a workflow for the scheduler: per-node flags, limits and final actions
    (wrapped in ``middleware``, then the workflow's, then each node's own)."""
    return _Compiler(workflow, tuple(middleware)).compile()
