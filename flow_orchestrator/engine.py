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

Where it sits: layer L5 (the run): it composes the layers below (compiler, durability,
executors, observers) and nothing imports it back.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from . import _ext
from ._compile import compile_workflow
from ._ext import CompiledWorkflow, NodeContext
from ._timer import Timer
from .checkpoint import CheckpointSpec, DurableRun
from .context import ExternalContext, takes_context
from .data import WorkflowData
from .errors import DefinitionError, EngineClosedError
from .external import check_actions, dispatch, process_pool
from .metrics import MetricsRegistry
from .observers import Dispatcher, Observer
from .result import RunResult, count_statuses, new_run_id, run_status
from .resume import ResumePlan
from .serialization import Serializer, resume_serializer
from .state import RunState
from .status import NodeStatus, RunStatus
from .stores.base import Store
from .workflow import Workflow, check_middleware

# RunResult, ExternalContext, NodeContext, takes_context and compile_workflow live in
# the modules below the engine (result, context, _ext, _compile); they stay importable
# from here, where they used to live.
__all__ = ["Engine", "RunResult", "RunHandle", "CancellationToken", "ExternalContext", "NodeContext",
           "RunOptions", "compile_workflow", "takes_context"]

_log = logging.getLogger("flow_orchestrator.engine")
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
        return count_statuses(self.statuses())


# -- the engine -------------------------------------------------------------------------------

ExecutorSpec = cf.Executor | Literal["threads", "serial", "processes"] | None


class Engine:
    """Runs workflows.  Thread-safe: many runs, of the same or different workflows, at once.

    Args:
        max_workers: threads that execute nodes of one run at most (the calling thread
            included), or with another executor the attempts of one run in flight at
            most (and the processes of ``"processes"``); default ``os.cpu_count()``.
        executor: ``None`` (or ``"threads"``) for the engine's own thread pool, ``"serial"``,
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
        if isinstance(executor, str) and executor == "threads":
            executor = None  # the command line's name for the default
        if not (executor is None or isinstance(executor, cf.Executor)
                or (isinstance(executor, str) and executor in ("serial", "processes"))):
            raise DefinitionError("executor must be None, 'threads', 'serial', 'processes' or a "
                                  f"concurrent.futures.Executor, got {executor!r}")
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
        self._mode = ("serial" if executor == "serial" else "threads"
                      if executor is None or isinstance(executor, cf.ThreadPoolExecutor) else "external")
        # The helpers of every run on threads: at most max_workers tasks on the pool.
        self._crew = _ext.Crew(max_workers, *_helpers(self)) if self._mode == "threads" else None
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
        if self._crew is not None:
            self._crew.close()  # idle helpers return their threads now
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
            if self._closed:  # only close() waits on it
                self._idle.notify_all()
        if last:
            self._shutdown(wait=False)  # from the run's own thread: it cannot wait for itself

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def mode(self) -> str:
        """``"threads"``, ``"serial"`` or ``"external"`` (``"processes"`` too): how nodes
        are executed."""
        return self._mode

    def _pool(self) -> cf.Executor:
        """The executor nodes run on: the user's, or the engine's own (made on first use)."""
        spec = self._executor_spec
        if isinstance(spec, cf.Executor):
            return spec
        with self._lock:
            if self._own_pool is None:
                if spec == "processes":
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
            serializer: with ``store``: how outputs and data are saved (JSON by default).
                A resume goes on with the serializer the run was saved with (its
                ``RunState.serializer``); one given here must be that one
                (:class:`~flow_orchestrator.errors.SerializationError` otherwise).

        Raises :class:`WorkflowFailedError` when a node failed or timed out and
        :class:`RunCancelledError` when the run was cancelled, unless
        ``raise_on_failure`` is false; ``KeyboardInterrupt`` and ``SystemExit`` (from
        Ctrl-C or an action) cancel the run, then propagate.  With a store:
        :class:`~flow_orchestrator.stores.RunLockedError` when another process holds
        the run, and :class:`~flow_orchestrator.stores.CheckpointFailedError` when a
        save failed during the run (which was then cancelled).
        """
        run = _Run(self, workflow, RunOptions(data, run_id, continue_on_error, max_concurrency, cancel,
                                              tuple(observers) if observers else (), resume,
                                              tuple(rerun) if rerun else (), allow_new_nodes, store,
                                              checkpoint, serializer))
        result = run.drive()
        if raise_on_failure and result.status is not RunStatus.COMPLETED:
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
        run = _Run(self, workflow, RunOptions(data, run_id, continue_on_error, max_concurrency, cancel,
                                              tuple(observers), resume, tuple(rerun), allow_new_nodes, store,
                                              checkpoint, serializer))
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


class RunOptions(NamedTuple):
    """Internal: the options of one run, as :meth:`Engine.run` and :meth:`Engine.submit`
    take them (their docstrings say what each means); one frozen object instead of a
    chain of arguments from the public signatures down to the run (a named tuple: a
    frozen dataclass cost 2 us a run to build)."""

    data: WorkflowData | Mapping[str, Any] | None = None
    run_id: str | None = None
    continue_on_error: bool | None = None
    max_concurrency: int | None = None
    cancel: CancellationToken | None = None
    observers: tuple[Observer, ...] = ()
    resume: RunState | str | None = None
    rerun: tuple[str, ...] = ()
    allow_new_nodes: bool = False
    store: Store | None = None
    checkpoint: CheckpointSpec = "batched"
    serializer: Serializer | None = None


class _Run:
    """One run: its arena, executor mode and options; :meth:`drive` runs it to the end."""

    __slots__ = ("engine", "workflow", "compiled", "durable", "data", "run_id", "workers", "mode",
                 "participate", "events", "metrics", "core", "generation", "cancel", "restored_attempts")

    def __init__(self, engine: Engine, workflow: Workflow, options: RunOptions) -> None:
        self.engine = engine
        self.workflow = workflow  # strong while the run lasts: compiled workflows hold it weakly
        self.compiled = engine.compile(workflow)
        self.durable: DurableRun | None = None
        self.events: Dispatcher | None = None
        if options.store is not None:
            self.durable = DurableRun.open(options.store, options.run_id, options.resume, options.checkpoint,
                                           options.serializer)
            with self.durable:  # released if the run cannot start
                if isinstance(self.durable.resume_state, RunState):  # go on with the serializer it was saved with
                    self.durable.serializer = resume_serializer(self.durable.resume_state.serializer,
                                                                options.serializer)
                plan = self.durable.plan(workflow, options.rerun, options.allow_new_nodes)
                self._setup(workflow, options, self.durable.run_id, plan)
            return
        if options.resume is None and not options.rerun:  # nothing to plan (rerun= alone is refused below)
            self._setup(workflow, options, options.run_id, None)
            return
        if isinstance(options.resume, str):
            raise DefinitionError("resume=<run id> needs store=, the store the run was saved in")
        plan = None
        if options.resume is not None or options.rerun:  # most runs resume nothing: no call at all
            serializer = options.serializer
            if isinstance(options.resume, RunState):
                serializer = resume_serializer(options.resume.serializer, serializer)
            plan = ResumePlan.build(workflow, options.resume, options.rerun, options.allow_new_nodes, serializer)
        self._setup(workflow, options, options.run_id, plan)

    def _setup(self, workflow: Workflow, options: RunOptions, run_id: str | None, resume: ResumePlan | None) -> None:
        engine = self.engine
        data = options.data
        if data is None and resume is not None:
            data = resume.data
        self.data = data if isinstance(data, WorkflowData) else WorkflowData(data)
        if run_id is None and resume is not None:
            run_id = resume.run_id
        self.run_id = run_id if run_id is not None else new_run_id()
        self.restored_attempts = int(resume.attempts[resume.completed].sum()) if resume is not None else 0
        coe = engine.continue_on_error if options.continue_on_error is None else bool(options.continue_on_error)
        self.workers = engine._workers(options.max_concurrency)
        self.mode = mode = engine._mode
        # The calling thread works too, unless it must stay free to return at a deadline.
        # A run started from inside an action of this engine always works itself: its
        # thread is one of the pool's, and waiting for another could deadlock.
        self.participate = mode == "serial" or (
            mode == "threads" and (not self.compiled.has_timeouts or _worker_state.engine is engine))
        max_helpers = 0
        if mode == "threads":
            max_helpers = self.workers - 1 if self.participate else self.workers
        observers = (*engine._observers, *options.observers) if options.observers else engine._observers
        if observers:
            for observer in observers:
                if not isinstance(observer, Observer):
                    raise DefinitionError(f"observers must be Observer instances, got {observer!r}")
            self.events = Dispatcher(workflow.name, self.run_id, self.compiled.labels, observers)
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
                check_actions(engine._pool(), self.compiled, workflow.name,
                              resume.completed if resume is not None else None)
            self.core = _ext.begin_run(self.compiled, self.data, self.run_id, engine._timer, engine._crew,
                                       max_helpers, coe, node_metrics, node_events, writer)
            if resume is not None:
                self.core.restore(resume.completed, resume.outputs, resume.attempts)
        except BaseException:
            core = getattr(self, "core", None)
            if core is not None:
                core.detach()
            engine._run_ended()
            raise
        self.generation = self.core.generation
        self.cancel = options.cancel
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
            core.start(self.participate)
            if self.mode == "external":
                dispatch(core, self.engine._pool(), self.compiled, self.workers, self.data, self.run_id,
                         self.workflow.name)
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
        completed, snapshot = core.outcome()  # one bytes copy; arrays are made on first read
        status = run_status(core.failures, core.aborted, completed, self.compiled.num_nodes)
        return RunResult._from_snapshot(self.workflow, self.run_id, status, self.compiled.num_nodes,
                                        core.t0_ns, snapshot, core.outputs, dict(core.errors), wall,
                                        core.cancel_reason, self.restored_attempts)


class _WorkerState(threading.local):
    engine: Engine | None = None


#: Which engine the current thread is working for (as a driver or a helper), if any.
_worker_state = _WorkerState()


def _helpers(engine: Engine) -> tuple[Callable[[], object], Callable[[Any], object]]:
    """How the engine's :class:`~flow_orchestrator._ext.Crew` starts helpers: ``start()``
    submits one helper task (it serves any run of the engine) to the engine's pool, and
    ``dedicated(core)`` starts a thread of its own for one run, replacing a thread stuck
    in an abandoned (timed-out) attempt.  The engine is held weakly: its crew must not
    keep it alive."""
    ref = weakref.ref(engine)

    def serve(crew: Any) -> None:
        _worker_state.engine = ref()
        try:
            crew.serve()
        finally:
            _worker_state.engine = None

    def start() -> object:
        owner = ref()
        if owner is None:
            raise EngineClosedError("the engine is gone")
        return owner._pool().submit(serve, owner._crew)

    def helper(core: Any) -> None:
        _worker_state.engine = ref()
        try:
            core.work(False)
        finally:
            _worker_state.engine = None

    def dedicated(core: Any) -> object:
        thread = threading.Thread(target=helper, args=(core,), name="flow-orchestrator-replacement", daemon=True)
        thread.start()
        return thread
    return start, dedicated


def _attach_result(exc: BaseException, run: _Run, wall: float) -> None:
    """Give an interrupt (Ctrl-C, SystemExit) the run's state as ``exc.result``."""
    if getattr(exc, "result", None) is None:
        try:
            exc.result = run._result(wall)  # type: ignore[attr-defined]
        except Exception:  # the state is best effort here; the interrupt must propagate
            pass
