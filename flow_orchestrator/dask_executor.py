"""Run node attempts on a dask.distributed cluster: :class:`DaskExecutor`.

Needs the ``dask`` extra (``pip install "flow-orchestrator[dask]"``, which brings
``dask[distributed]``); importing :mod:`flow_orchestrator` never imports dask.

.. code-block:: python

    from distributed import Client
    import flow_orchestrator as fo
    from flow_orchestrator.dask_executor import DaskExecutor

    with Client("tcp://scheduler:8786") as client, \\
            fo.Engine(64, executor=DaskExecutor(client)) as engine:
        result = engine.run(workflow)

The engine's scheduler stays in charge, in this process: it decides what runs when,
and submits each attempt of a node as one dask task (``pure=False``, so that a retry
runs again instead of reusing the failed task), at most ``max_workers`` of the engine
at once.  Retries, timeouts, ``continue_on_error``, cancellation, observers, metrics
and checkpoints work as with a process pool (:mod:`flow_orchestrator.external`): a
timed-out attempt is abandoned, not killed (it goes on running on its worker, and its
late result is discarded), and cancelling a run lets the attempts running on the
cluster finish.  Actions are serialized like dask does (pickle, or cloudpickle for
lambdas, closures and ``__main__``); one that cannot be stops the run before any node
starts with a :class:`~flow_orchestrator.errors.DefinitionError`, and an input, data
value or output that cannot fails its node with a
:class:`~flow_orchestrator.errors.PicklingError`, both naming the node.

Outputs kept on the cluster
    With ``keep_outputs_on_cluster=True``, a node's output is not brought back: it
    stays in its worker's memory, and the node's output in the engine (in
    :meth:`RunResult.output <flow_orchestrator.engine.RunResult.output>` and in the
    inputs of its dependents) is the :class:`distributed.Future` of it.  A dependent's
    attempt is submitted with those futures as task dependencies, so dask moves the
    values between workers (or not, when the dependent runs where they are) and the
    action receives the *values* in ``ctx.inputs``; only futures travel through this
    process.  Fetch values with :meth:`DaskExecutor.gather` (``executor.gather(
    result.outputs)``) or ``result.output(name).result()``.  The values live on the
    cluster for as long as something holds their futures (the run's result, a
    dependent's task); a value lost with its worker is recomputed by dask, which runs
    that node's action again.  A future is no value to save: a durable run
    (``engine.run(..., store=...)``) fails each node in this mode with the
    checkpoint's :class:`~flow_orchestrator.errors.SerializationError` (naming the
    node), so keep outputs on the cluster only for runs without a store.

Where it sits: layer L4 (services, executors): an executor the engine is given; it knows
the shipping protocol of :mod:`flow_orchestrator.external`, never the engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

try:
    import cloudpickle
    import distributed
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("flow_orchestrator.dask_executor needs dask.distributed: "
                      "pip install 'flow-orchestrator[dask]'") from exc

from .errors import DefinitionError
from .external import AttemptCodec

__all__ = ["DaskExecutor", "dask_dumps", "dask_loads"]

T = TypeVar("T")


def dask_dumps(obj: Any) -> bytes:
    """Serialize like dask: pickle, or cloudpickle (by value) for what pickle cannot
    do or would pickle by reference to ``__main__`` (which the workers do not have)."""
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything pickle refuses, cloudpickle may do
        blob = b"__main__"
    if b"__main__" not in blob:
        return blob
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dask_loads(blob: bytes) -> Any:
    """The inverse of :func:`dask_dumps` (``pickle.loads``; cloudpickle's output needs
    cloudpickle importable, as it is wherever dask is)."""
    return pickle.loads(blob)


def _is_dask_future(value: Any) -> bool:
    return isinstance(value, distributed.Future)


def _apply(fn: Callable[..., T], args: list[Any], kwargs: dict[str, Any]) -> T:
    """Call ``fn(*args, **kwargs)`` on a worker (keeps ``kwargs`` apart from ``Client.submit``'s)."""
    return fn(*args, **kwargs)


class DaskExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` that runs calls as tasks of a ``distributed.Client``.

    Give it to an engine, ``Engine(max_workers, executor=DaskExecutor(client))``: each
    attempt of a node becomes one task (see the module documentation).  It can also be
    used on its own, as any executor: :meth:`submit` returns a
    ``concurrent.futures.Future`` of the call's value.

    Args:
        client: the ``distributed.Client`` to submit to.  Not owned: :meth:`shutdown`
            (and the engine's ``close()``) leave it open.
        keep_outputs_on_cluster: leave each node's output on the worker that computed it
            and make the node's output its ``distributed.Future`` (see the module
            documentation).  Calls made with :meth:`submit` are not affected.
        submit_options: keyword arguments for every ``Client.submit`` (``resources``,
            ``workers``, ``allow_other_workers``, ``priority``...); ``pure`` is always
            false and ``key`` is chosen by dask.

    Thread-safe.
    """

    def __init__(self, client: distributed.Client, *, keep_outputs_on_cluster: bool = False,
                 submit_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(client, distributed.Client):
            raise DefinitionError(f"DaskExecutor needs a distributed.Client, got {client!r}")
        options = dict(submit_options or {})
        reserved = {"pure", "key", "actor", "actors"} & options.keys()
        if reserved:
            raise DefinitionError(f"submit_options cannot set {sorted(reserved)}")
        self._client = client
        self.keep_outputs_on_cluster = bool(keep_outputs_on_cluster)
        self._options = options
        self._lock = threading.Lock()
        self._closed = False
        self._pending: dict[cf.Future[Any], distributed.Future] = {}
        #: How the engine ships attempts (see :class:`flow_orchestrator.external.AttemptCodec`).
        self.attempt_codec = AttemptCodec(
            "dask", dask_dumps, dask_loads, keep_outputs=self.keep_outputs_on_cluster,
            is_remote=_is_dask_future, submit=self.submit_on_cluster if self.keep_outputs_on_cluster else None)

    @property
    def client(self) -> distributed.Client:
        """The client tasks are submitted to."""
        return self._client

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        """Run ``fn(*args, **kwargs)`` as a task; a ``concurrent.futures.Future`` of its value.

        ``distributed.Future`` s among the arguments (also inside lists, tuples and dicts)
        are passed to ``fn`` as their values.  Cancelling the returned future before
        the task ends cancels the task.
        """
        return self._submit(fn, args, kwargs, keep=False)

    def submit_on_cluster(self, fn: Callable[..., Any], /, *args: Any,
                          **kwargs: Any) -> cf.Future[distributed.Future]:
        """Like :meth:`submit`, but the returned future resolves, once the task is done,
        to the task's ``distributed.Future``: its value stays on the cluster."""
        return self._submit(fn, args, kwargs, keep=True)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                keep: bool) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if kwargs:
                task = self._client.submit(_apply, fn, list(args), kwargs, pure=False, **self._options)
            else:
                task = self._client.submit(fn, *args, pure=False, **self._options)
            self._pending[future] = task
        future.add_done_callback(self._cancel_task)
        task.add_done_callback(lambda done: self._settle(future, done, keep))
        return future

    def _cancel_task(self, future: cf.Future[Any]) -> None:
        with self._lock:
            task = self._pending.pop(future, None)
        if task is not None and future.cancelled():
            task.cancel()

    def _settle(self, future: cf.Future[Any], task: distributed.Future, keep: bool) -> None:
        """Complete ``future`` from its finished task (in dask's callback thread)."""
        if not future.set_running_or_notify_cancel():
            return  # cancelled meanwhile
        try:
            if task.status == "finished":
                future.set_result(task if keep else task.result())
            elif task.cancelled():
                future.set_exception(cf.CancelledError(f"dask task {task.key} was cancelled"))
            else:
                error = task.exception()
                traceback = task.traceback()  # the worker's frames, kept by the future
                future.set_exception(error.with_traceback(traceback) if traceback is not None else error)
        except BaseException as exc:  # noqa: BLE001 - fetching the value failed (lost worker, closed client...)
            if not future.done():
                future.set_exception(exc)

    def gather(self, values: Any) -> Any:
        """``values`` with every ``distributed.Future`` in it (also inside lists, tuples
        and dicts) replaced by its value, fetched from the cluster: for outputs kept on
        the cluster, ``executor.gather(result.outputs)``."""
        return self._client.gather(values)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; with ``cancel_futures`` cancel the tasks not done yet;
        with ``wait`` wait until every task submitted has ended.  The client stays open."""
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            cf.wait(pending)

    def __repr__(self) -> str:
        keep = ", keep_outputs_on_cluster=True" if self.keep_outputs_on_cluster else ""
        return f"DaskExecutor({self._client!r}{keep})"
