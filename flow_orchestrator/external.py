"""Node attempts in other processes: process pools, and the protocol other executors follow.

Layer L4 (services, executors).  The engine keeps its scheduler in this process whatever
the executor; with an executor that is not a thread pool it hands the run to
:func:`dispatch`, the loop here that submits one attempt at a time.  The worker side
(:func:`run_attempt`) takes everything it needs as arguments and imports only
:mod:`flow_orchestrator.context`, never the engine.  When that executor runs attempts in *other
processes* (a :class:`concurrent.futures.ProcessPoolExecutor`, ``Engine(executor=
"processes")``, or :class:`~flow_orchestrator.dask_executor.DaskExecutor`), this module
does the pickling itself, so that whatever cannot cross the process boundary is reported
against its node instead of surfacing as a bare ``pickle`` error from the executor's
internals (or breaking the pool):

* every node's action (with its middleware, which runs around it in the worker) is
  pickled **once per compiled workflow**, before the first attempt of a run is
  submitted; an action that cannot be pickled stops the run before any node starts
  with a :class:`~flow_orchestrator.errors.DefinitionError` naming the node(s).  The
  pickled bytes are kept and reused by every attempt;
* each attempt's context (its inputs and a snapshot of the run's data) is pickled when
  the attempt is submitted; an input or data value that cannot be pickled fails the
  node with a :class:`~flow_orchestrator.errors.PicklingError` naming the node and the
  value (``input 'extract'``, ``data['conn']``);
* in the worker, the output is pickled there (an output that cannot be pickled fails
  the node, naming it), and so is an exception the action raised that could not make
  the trip back (it is replaced by a :class:`PicklingError` carrying its type and
  message, and the pool stays healthy).

Such failures count as the node's failed attempt: retries, ``continue_on_error``,
observers and metrics treat them like any other.  A ``ProcessPoolExecutor`` gets one
attempt queued beyond its processes when that is safe (:func:`queue_ahead`), so that
its processes never wait for the round trip of a result.

:func:`process_pool` makes a ``ProcessPoolExecutor`` with an explicit start method:
``"forkserver"`` on Linux (forking a process that runs threads, as the engine's does,
may deadlock the child; Python 3.12+ warns about it) and ``"spawn"`` elsewhere.  With
either, actions must be importable by module name in the workers (module-level
functions, or ``functools.partial`` of them), and a script that runs workflows must
guard its entry point with ``if __name__ == "__main__":``.  Without the guard each worker
runs the script again and dies, and the pool breaks: the nodes then fail with a
``BrokenProcessPool`` whose message leads with that hint (:data:`BROKEN_POOL_HINT`).

An executor of another kind opts into the same handling by having an ``attempt_codec``
attribute (an :class:`AttemptCodec`); any other executor (a custom in-process one) gets
the attempt's action and :class:`~flow_orchestrator.context.ExternalContext` as they are.
"""

# Pickling and unpickling can raise nearly any exception (TypeError, AttributeError,
# PicklingError, RecursionError, whatever a __reduce__ raises): the catches are broad.
# ruff: noqa: BLE001

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import pickle
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._ext import CompiledWorkflow
from .context import ExternalContext, call_external
from .data import WorkflowData
from .errors import DefinitionError, PicklingError

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = [
    "PICKLE_CODEC",
    "AttemptCodec",
    "check_actions",
    "codec_for",
    "dispatch",
    "default_mp_context",
    "process_pool",
    "queue_ahead",
    "run_attempt",
]


# -- process pools ---------------------------------------------------------------------------------


def default_mp_context() -> multiprocessing.context.BaseContext:
    """The start method for worker processes: ``"forkserver"`` on Linux, ``"spawn"`` elsewhere.

    Never ``"fork"``: forking a process that runs threads (the engine's timer, the pool's
    own threads, the caller's) copies locks that may be held at that instant, and the
    child can deadlock; Python 3.12+ emits a ``DeprecationWarning`` when it happens.
    """
    import multiprocessing  # here: ``import flow_orchestrator`` stays light

    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def process_pool(max_workers: int | None = None, *,
                 mp_context: multiprocessing.context.BaseContext | None = None,
                 **kwargs: Any) -> cf.ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``max_workers`` processes (default ``os.cpu_count()``)
    started with ``mp_context`` (default :func:`default_mp_context`).

    What ``Engine(executor="processes")`` makes for itself; use it to make a pool of your
    own to share between engines.  ``kwargs`` go to ``ProcessPoolExecutor``
    (``initializer``, ``initargs``, ``max_tasks_per_child``).
    """
    return cf.ProcessPoolExecutor(max_workers or os.cpu_count() or 1,
                                  mp_context=mp_context or default_mp_context(), **kwargs)


# -- the codec protocol ----------------------------------------------------------------------------


def pickle_dumps(obj: Any) -> bytes:
    """``pickle.dumps`` with the highest protocol: the codec of process pools."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


@dataclass(frozen=True)
class AttemptCodec:
    """How an executor's attempts cross to the processes that run them.

    Attributes:
        name: identifies how ``dumps`` serializes (actions are pickled once per compiled
            workflow and codec name).
        dumps: object -> bytes; raises on what cannot be serialized.  Sent to the
            workers (with ``loads``) by reference, so both must be module-level functions.
        loads: bytes -> object.
        keep_outputs: outputs stay where they were computed: the attempt's future
            resolves to a handle (``submit`` below makes it), which becomes the node's
            output and is passed to the dependents' attempts in ``remote`` inputs.
        is_remote: tells such handles among a node's inputs; they are sent to the
            executor as they are (it resolves them to values in the worker) rather than
            pickled with the context.
        submit: submits an attempt instead of ``executor.submit`` (same signature).
    """

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    keep_outputs: bool = False
    is_remote: Callable[[Any], bool] | None = None
    submit: Callable[..., cf.Future[Any]] | None = None


#: The codec of ``ProcessPoolExecutor`` s: the standard pickle, highest protocol.
PICKLE_CODEC = AttemptCodec("pickle", pickle_dumps, pickle.loads)


def codec_for(executor: cf.Executor) -> AttemptCodec | None:
    """The codec of an executor that runs attempts in other processes, else ``None``.

    An executor's own ``attempt_codec`` attribute first, then :data:`PICKLE_CODEC` for
    a ``ProcessPoolExecutor`` (or subclass).
    """
    codec = getattr(executor, "attempt_codec", None)
    if codec is not None:
        if not isinstance(codec, AttemptCodec):
            raise DefinitionError(f"{type(executor).__name__}.attempt_codec must be an AttemptCodec, got {codec!r}")
        return codec
    if isinstance(executor, cf.ProcessPoolExecutor):
        return PICKLE_CODEC
    return None


# -- in the worker ------------------------------------------------------------------------------------


def run_attempt(loads: Callable[[bytes], Any], dumps: Callable[[Any], bytes], keep: bool,
                action_blob: bytes, ctx_blob: bytes, remote: Mapping[str, Any] | None = None) -> Any:
    """Run one attempt in a worker process: what the engine submits to the executor.

    Unpickles the action and its :class:`~flow_orchestrator.context.ExternalContext`
    (``remote`` inputs, resolved by the executor, are added to its inputs), calls it
    inside its middleware, and returns the output pickled (or as it is with ``keep``).
    An exception the action raises is re-raised if it survives a pickle round trip,
    else replaced by a :class:`PicklingError` with its type and message (and the
    worker's traceback as a note).  Errors raised here carry no ``__context__``, which
    some executors (dask) would try to send back too.
    """
    failure: PicklingError | None = None
    try:
        ctx = loads(ctx_blob)
    except Exception as exc:
        failure = PicklingError(f"an attempt's context could not be unpickled in the worker process "
                                f"({type(exc).__name__}: {exc})", None, "context")
    if failure is not None:
        raise failure
    try:
        action, accepts, middleware = loads(action_blob)
    except Exception as exc:
        failure = PicklingError(f"node {ctx.node!r}: its action could not be unpickled in the worker process "
                                f"({type(exc).__name__}: {exc}); it must be importable there by module name",
                                ctx.node, "action")
    if failure is not None:
        raise failure
    if remote:
        ctx = dataclasses.replace(ctx, inputs={**ctx.inputs, **remote})
    try:
        value = call_external(action, accepts, middleware, ctx)
    except Exception as exc:
        failure = _unshippable(exc, ctx.node, loads, dumps)
        if failure is None:
            raise
    if failure is not None:
        raise failure
    if keep:
        return value
    try:
        return dumps(value)
    except Exception as exc:
        failure = PicklingError(f"node {ctx.node!r}: its output ({_type(value)}) cannot be pickled "
                                f"({type(exc).__name__}: {exc})", ctx.node, "output")
    raise failure


def _unshippable(exc: BaseException, node: str, loads: Callable[[bytes], Any],
                 dumps: Callable[[Any], bytes]) -> PicklingError | None:
    """``None`` when ``exc`` can be sent back as it is, else the error to send instead.

    Exceptions chained to it (``__cause__``, ``__context__``) that cannot be pickled are
    cut off (the traceback, theirs included, is kept as a note on ``exc``): some
    executors send the chain too.
    """
    try:
        loads(dumps(exc))
    except Exception as why:
        failure = PicklingError(f"node {node!r} raised {type(exc).__name__}: {_text(exc)}, which cannot be "
                                f"sent back from the worker ({type(why).__name__}: {_text(why)})", node, "exception")
        failure.add_note(_traceback_note(exc))
        return failure
    chained: list[BaseException] = []
    link = exc.__cause__ or exc.__context__
    while link is not None and len(chained) < 32 and all(link is not seen for seen in chained):
        chained.append(link)
        link = link.__cause__ or link.__context__
    for link in chained:
        try:
            loads(dumps(link))
        except Exception:
            exc.add_note(_traceback_note(exc))
            exc.__cause__ = exc.__context__ = None
            break
    return None


def _traceback_note(exc: BaseException) -> str:
    return "traceback in the worker process:\n" + "".join(traceback.format_exception(exc)).rstrip()


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure
        return "<unprintable>"


def _type(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# -- in the engine's process ------------------------------------------------------------------------

#: Pickled actions per compiled workflow and codec name: ``{name: (blobs, errors)}``.
_shipped: weakref.WeakKeyDictionary[CompiledWorkflow, dict[str, tuple[list[bytes], dict[int, BaseException]]]] = \
    weakref.WeakKeyDictionary()
_shipped_lock = threading.Lock()


def _pickle_actions(compiled: CompiledWorkflow, codec: AttemptCodec) -> tuple[list[bytes], dict[int, BaseException]]:
    """Every node's ``(action, call plan, middleware)`` pickled, identical ones once;
    the nodes whose action (or middleware) cannot be pickled, with the error."""
    by_key: dict[tuple[Any, ...], bytes | BaseException] = {}
    blobs: list[bytes] = []
    errors: dict[int, BaseException] = {}
    empty = b""
    for node, triple in enumerate(compiled.external_actions):
        action, accepts, middleware = triple
        key = (id(action), accepts, *map(id, middleware))
        blob = by_key.get(key)
        if blob is None:
            try:
                blob = codec.dumps(triple)
            except Exception as exc:
                blob = exc
            by_key[key] = blob
        if isinstance(blob, BaseException):
            errors[node] = blob
            blobs.append(empty)
        else:
            blobs.append(blob)
    return blobs, errors


def _action_error(compiled: CompiledWorkflow, codec: AttemptCodec, node: int, exc: BaseException) -> str:
    """Which of a node's action or middleware cannot be pickled, for the message."""
    action, _, middleware = compiled.external_actions[node]
    culprit: Any = action
    what = "its action"
    try:
        codec.dumps(action)
    except Exception as err:
        exc = err
    else:
        for mw in middleware:
            try:
                codec.dumps(mw)
            except Exception as err:
                culprit, what, exc = mw, "its middleware", err
                break
    text = repr(culprit)
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"node {compiled.labels[node]!r}: {what} {text} ({type(exc).__name__}: {exc})"


class Shipper:
    """One run's side of :func:`run_attempt`: submits attempts and decodes their outputs.

    Made by :func:`shipper`, used by the engine's dispatcher (``submit``) and by the
    attempts' done callbacks (``output``).
    """

    __slots__ = ("_keep", "_submit", "blobs", "codec", "executor", "labels")

    def __init__(self, executor: cf.Executor, codec: AttemptCodec, blobs: list[bytes], labels: list[str]) -> None:
        self.executor = executor
        self.codec = codec
        self.blobs = blobs
        self.labels = labels
        self._submit = codec.submit if codec.submit is not None else executor.submit
        self._keep = codec.keep_outputs

    def submit(self, node: int, ctx: Any) -> cf.Future[Any]:
        """Pickle ``ctx`` (:class:`PicklingError` naming what cannot be) and submit the attempt."""
        codec = self.codec
        remote = None
        if codec.is_remote is not None and ctx.inputs:
            is_remote = codec.is_remote
            remote = {k: v for k, v in ctx.inputs.items() if is_remote(v)}
            if remote:
                ctx = dataclasses.replace(ctx, inputs={k: v for k, v in ctx.inputs.items() if k not in remote})
            else:
                remote = None
        try:
            ctx_blob = codec.dumps(ctx)
        except Exception as exc:
            raise _context_error(codec, ctx, exc) from None
        return self._submit(run_attempt, codec.loads, codec.dumps, self._keep, self.blobs[node], ctx_blob, remote)

    def output(self, node: int, value: Any) -> Any:
        """The node's output from what its attempt's future resolved to."""
        if self._keep:
            return value
        try:
            return self.codec.loads(value)
        except Exception as exc:
            name = self.labels[node]
            raise PicklingError(f"node {name!r}: its output could not be unpickled in this process "
                                f"({type(exc).__name__}: {exc})", name, "output") from None


def _context_error(codec: AttemptCodec, ctx: Any, exc: BaseException) -> PicklingError:
    """Name the input or data value of ``ctx`` that cannot be pickled."""
    for name, value in ctx.inputs.items():
        try:
            codec.dumps(value)
        except Exception as err:
            return PicklingError(f"node {ctx.node!r}: input {name!r} ({_type(value)}) cannot be pickled "
                                 f"({type(err).__name__}: {err})", ctx.node, f"input {name!r}")
    for key, value in ctx.data.items():
        try:
            codec.dumps(value)
        except Exception as err:
            return PicklingError(f"node {ctx.node!r}: the run's data[{key!r}] ({_type(value)}) cannot be pickled "
                                 f"({type(err).__name__}: {err})", ctx.node, f"data[{key!r}]")
    return PicklingError(f"node {ctx.node!r}: its context cannot be pickled ({type(exc).__name__}: {exc})",
                         ctx.node, "context")


def queue_ahead(executor: cf.Executor, workers: int, compiled: CompiledWorkflow) -> int:
    """How many attempts to submit beyond ``workers``: one for a ``ProcessPoolExecutor``
    of at most ``workers`` processes, else none.

    With exactly one attempt per process in flight, a process is idle from the moment
    it finishes until its result has reached this process and the next attempt has
    travelled back (about 0.2 ms, or milliseconds in a busy VM); one more queued in the
    pool hides that, as the pool itself does for its own queue.  It never makes more
    actions run at once than the pool has processes (so never more than ``workers``),
    and it is not done for workflows with timeouts: a queued attempt's deadline would
    run while it waits.
    """
    size = getattr(executor, "_max_workers", None)
    if (isinstance(executor, cf.ProcessPoolExecutor) and isinstance(size, int) and size <= workers
            and not compiled.has_timeouts):
        return 1
    return 0


def _pickled_actions(compiled: CompiledWorkflow, codec: AttemptCodec) -> tuple[list[bytes], dict[int, BaseException]]:
    """:func:`_pickle_actions`, once per compiled workflow and codec."""
    with _shipped_lock:
        per_codec = _shipped.get(compiled)
        found = per_codec.get(codec.name) if per_codec is not None else None
    if found is None:
        found = _pickle_actions(compiled, codec)
        with _shipped_lock:
            found = _shipped.setdefault(compiled, {}).setdefault(codec.name, found)
    return found


def check_actions(executor: cf.Executor, compiled: CompiledWorkflow, workflow: str = "",
                  completed: np.ndarray | None = None) -> None:
    """Raise :class:`DefinitionError` naming the nodes whose action (or middleware) cannot
    be pickled for ``executor``; nothing for an executor that runs attempts in this process.

    Pickles every action once per compiled workflow (the bytes are kept for the runs);
    later calls cost a dictionary lookup.  Nodes true in ``completed`` (a boolean array
    over node ids: those a resumed run restores) are not reported: they never run.
    """
    codec = codec_for(executor)
    if codec is None:
        return
    _, errors = _pickled_actions(compiled, codec)
    bad = [node for node in errors if completed is None or not completed[node]]
    if bad:
        shown = "; ".join(_action_error(compiled, codec, node, errors[node]) for node in bad[:3])
        more = f" (and {len(bad) - 3} more node(s))" if len(bad) > 3 else ""
        hint = ("Actions run in other processes must be importable module-level functions (or "
                "functools.partial of them), and so must their middleware" if codec.name == "pickle" else
                "Actions run in other processes, and their middleware, must be serializable")
        raise DefinitionError(f"workflow {workflow!r}: {len(bad)} node(s) cannot run on {type(executor).__name__}, "
                              f"their action cannot be pickled: {shown}{more}. {hint}")


def shipper(executor: cf.Executor, codec: AttemptCodec, compiled: CompiledWorkflow) -> Shipper:
    """A :class:`Shipper` for one run of ``compiled``, whose actions passed
    :func:`check_actions` (the engine checks them before the run starts)."""
    blobs, _ = _pickled_actions(compiled, codec)
    return Shipper(executor, codec, blobs, compiled.labels)


# -- the dispatch loop ------------------------------------------------------------------------------


def dispatch(core: Any, executor: cf.Executor, compiled: CompiledWorkflow, workers: int,
             data: WorkflowData, run_id: str, workflow_name: str) -> None:
    """Drive one run's attempts on ``executor`` until the run is over: what the engine
    does instead of working itself when the executor is not a thread pool.

    One attempt at a time, up to ``workers`` in flight (one more queued in a process
    pool: :func:`queue_ahead`).  ``core`` is the run's ``RunCore``: this loop pops ready
    nodes from it, begins each attempt there, and a done callback finishes it there, so
    retries, timeouts, cancellation, observers and metrics behave as with threads.  For
    an executor that runs attempts in other processes (see :func:`codec_for`) the
    actions were checked to pickle before the run started (:func:`check_actions`), and
    each attempt goes through a :class:`Shipper`, which names what cannot be pickled.
    """
    codec = codec_for(executor)
    ship = shipper(executor, codec, compiled) if codec is not None else None
    slots = threading.BoundedSemaphore(workers + queue_ahead(executor, workers, compiled))
    actions = compiled.external_actions
    while core.accepting:  # after a fail-fast abort, all_done nodes still start
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
                future = ship.submit(node, ExternalContext(name, node, attempt, deadline, inputs, data,
                                                           run_id, workflow_name))
            else:
                ctx = ExternalContext(name, node, attempt, deadline, inputs, WorkflowData(data.snapshot()),
                                      run_id, workflow_name)
                action, accepts, middleware = actions[node]
                future = executor.submit(call_external, action, accepts, middleware, ctx)
        except Exception as exc:  # data or a context that cannot be copied or pickled; a shut-down executor
            slots.release()
            core.finish_attempt(node, word, False, _explain(exc))
            continue
        future.add_done_callback(_attempt_done(core, node, word, slots, ship))


def _attempt_done(core: Any, node: int, word: int, slots: threading.BoundedSemaphore,
                  ship: Shipper | None = None) -> Callable[[cf.Future[Any]], None]:
    """The done callback of an attempt's future: record its outcome (decoded by ``ship``
    when the attempt was shipped)."""
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
            core.finish_attempt(node, word, False, _explain(exc))
    return done


BROKEN_POOL_HINT = ("a worker process died: guard the script's entry point with "
                    "`if __name__ == \"__main__\":` (workers import the main module), or was one killed?")


def _explain(exc: BaseException) -> BaseException:
    """A broken process pool's error, led by a one-line hint at its usual causes (same type)."""
    process = sys.modules.get("concurrent.futures.process")  # never imported here: it imports multiprocessing
    broken = getattr(process, "BrokenProcessPool", None)
    if broken is not None and isinstance(exc, broken) and BROKEN_POOL_HINT not in str(exc):
        explained = type(exc)(f"{BROKEN_POOL_HINT} ({exc})")
        explained.__cause__ = exc
        return explained
    return exc
