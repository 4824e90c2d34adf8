"""Built-in middleware: logging, retry, circuit breaker, timeout, rate limit, metrics,
permission checks and validation.

A middleware is ``mw(action) -> action``.  The action it receives always takes one
argument, the node's context (the engine adapts actions that take none before applying
middleware), and the action it returns must take the context too.  Each factory here
(``retry(...)``, ``timeout(...)``, ...) checks its parameters at once, raising
:class:`~flow_orchestrator.errors.DefinitionError`, and returns such a middleware.

Composition order
    Middleware compose as functions do: ``logging_middleware()(retry(3)(action))`` logs
    around the retry decision, which wraps the action.  Given as a sequence, to
    ``WorkflowBuilder.add(..., middleware=(a, b))``, to a workflow or to the engine, or
    to :func:`compose`, ``(a, b)`` means ``a(b(action))``: the first is the outermost.
    A sensible stack, outermost first::

        compose(logging_middleware(), metrics_middleware(sink), permission(allowed),
                retry(5), circuit_breaker("db"), rate_limit("db", 50), timeout(2.0),
                validate(output=dict))

    so that logging and metrics see every attempt and its outcome, a refused
    permission is not retried, retry sees the breaker's and the limiter's verdicts,
    and the timeout and validation apply to the action alone.

Threads
    Factories run where you call them.  ``mw(action)`` runs once per node when an
    engine compiles the workflow, on the thread that starts the first run.  The
    wrapped action runs on whichever worker thread runs the attempt (a pool thread, or
    the thread that called :meth:`Engine.run`), so middleware state shared between
    nodes (breakers, token buckets) is guarded by locks.  Each middleware is a small
    picklable object, so with a process executor it is applied in the worker process;
    breakers and buckets are then per process (looked up by name there).

Retry reschedules, it does not sleep
    :func:`retry` decides, and the engine waits: it raises
    :class:`~flow_orchestrator.errors.RetryRequested` with the back-off delay, the
    engine puts the node back to pending and its timer thread re-queues it when the
    delay is over.  Sleeping in the middleware would hold a worker thread for the whole
    back-off: with four workers, four nodes backing off would stall the run.  The same
    goes for :func:`rate_limit`'s default mode.  A consequence: every rescheduled
    attempt counts in ``ctx.attempt`` and ``RunResult.attempts``.

No lock across a wrapped call
    Breakers and token buckets take their lock only to read or update their state,
    never while the action runs: an action may run for minutes, and a lock held across
    it would serialise every node sharing the breaker, and deadlock if the action
    itself ran a nested workflow through the same breaker.  A call's outcome is
    therefore attributed to the breaker's state when the call ends.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import (
    DefinitionError,
    ExecutionError,
    FlowError,
    NodeCancelledError,
    NodeTimeoutError,
    RetryRequested,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Middleware",
    "PermissionDeniedError",
    "RateLimitedError",
    "TokenBucket",
    "ValidationError",
    "circuit_breaker",
    "compose",
    "get_breaker",
    "get_limiter",
    "logging_middleware",
    "metrics_middleware",
    "permission",
    "rate_limit",
    "reset_breakers",
    "reset_limiters",
    "retry",
    "timeout",
    "validate",
]

_log = logging.getLogger("flow_orchestrator.middleware")

Action = Callable[[Any], Any]


# -- errors -------------------------------------------------------------------------------------


class CircuitOpenError(ExecutionError, RuntimeError):
    """A circuit breaker is open (or half-open with its trial calls taken): the action
    was not called.  ``breaker`` names it; ``retry_after`` is the seconds until it
    half-opens.  :func:`retry` does not retry it unless told to."""

    def __init__(self, message: str, breaker: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.breaker = breaker
        self.retry_after = retry_after


class RateLimitedError(ExecutionError, RuntimeError):
    """A rate limit in ``"fail"`` mode had no token: the action was not called.
    ``limiter`` names it; ``retry_after`` is the seconds until its next token."""

    def __init__(self, message: str, limiter: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.limiter = limiter
        self.retry_after = retry_after


class PermissionDeniedError(FlowError, PermissionError):
    """A :func:`permission` predicate refused to run ``node``: the action was not called."""

    def __init__(self, message: str, node: str = "") -> None:
        super().__init__(message)
        self.node = node


class ValidationError(FlowError, ValueError):
    """A node's inputs or output failed :func:`validate`; ``what`` is ``"input"`` or
    ``"output"``."""

    def __init__(self, message: str, node: str = "", what: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.what = what


# -- parameter checks ---------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _check_number(name: str, value: object, *, minimum: float = 0.0, inclusive: bool = True) -> float:
    ok = _is_real(value) and (value >= minimum if inclusive else value > minimum)  # type: ignore[operator]
    if not ok or math.isinf(value):  # type: ignore[arg-type]
        bound = f"{'>=' if inclusive else '>'} {minimum:g}"
        raise DefinitionError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DefinitionError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise DefinitionError(f"{name} must be callable, got {value!r}")


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"a {kind} name must be a non-empty str, got {name!r}")
    return name


def _exception_types(name: str, value: object) -> tuple[type[Exception], ...]:
    types_ = value if isinstance(value, tuple) else (value,)
    if not types_:
        raise DefinitionError(f"{name} must name at least one exception type")
    for t in types_:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise DefinitionError(
                f"{name} must be an Exception subclass or a tuple of them, got {t!r} "
                "(KeyboardInterrupt and SystemExit are never retried)")
    return types_  # type: ignore[return-value]


# -- the base -------------------------------------------------------------------------------------


class Middleware:
    """Base of the built-in middleware: ``mw(action)`` returns :meth:`wrap`'s function
    with the action's name and docstring (``functools.wraps``).

    Subclasses keep their validated parameters as attributes, so they pickle (for
    process executors) when those parameters do.
    """

    def __call__(self, action: Action) -> Action:
        if not callable(action):
            raise DefinitionError(f"{self!r} was given {action!r}, not a callable action")
        return functools.update_wrapper(self.wrap(action), action)

    def wrap(self, action: Action) -> Action:
        """The function that runs ``action(ctx)`` with this middleware's behaviour."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"<{type(self).__name__} {fields}>"


# -- logging --------------------------------------------------------------------------------------


class _Logging(Middleware):
    def __init__(self, logger: Any, level: int) -> None:
        self.logger = logger
        self.level = level

    def wrap(self, action: Action) -> Action:
        logger = self.logger if self.logger is not None else _default_logger()
        level = self.level
        retry_level = max(level, logging.WARNING)
        failure_level = max(level, logging.ERROR)
        # A concrete bound logger answers "enabled?" in ~0.1 us, so filtered events cost
        # nothing more.  A lazy proxy (structlog.get_logger) must re-read structlog's
        # configuration on every call anyway: ask it nothing, just log.
        enabled = logger.is_enabled_for if hasattr(type(logger), "is_enabled_for") else None
        emit = functools.partial(_emit, logger)
        clock = time.perf_counter

        def logged(ctx: Any) -> Any:
            verbose = enabled is None or enabled(level)
            fields = _log_fields(ctx) if verbose else {}
            if verbose:
                emit(level, "node.start", fields)
            start = clock()
            try:
                result = action(ctx)
            except RetryRequested as exc:
                if enabled is None or enabled(retry_level):
                    emit(retry_level, "node.retry", fields or _log_fields(ctx), duration=clock() - start,
                         delay=exc.delay, exc_info=exc.__cause__ or exc)
                raise
            except BaseException as exc:
                if enabled is None or enabled(failure_level):
                    emit(failure_level, "node.failure", fields or _log_fields(ctx),
                         duration=clock() - start, exc_info=exc)
                raise
            if verbose:
                emit(level, "node.success", fields, duration=clock() - start)
            return result
        return logged


def _default_logger() -> Any:
    import structlog  # imported only when logging middleware is used

    # structlog's processors (whatever the application configured, or its defaults),
    # but the stdlib logger "flow_orchestrator.nodes" as the output: a library must not
    # print, and that logger only has the package's NullHandler until the application
    # configures logging.
    return structlog.wrap_logger(logging.getLogger("flow_orchestrator.nodes"),
                                 wrapper_class=structlog.stdlib.BoundLogger)


def _log_fields(ctx: Any) -> dict[str, Any]:
    workflow = ctx.workflow  # a Workflow, or its name in a process executor's snapshot
    return {"workflow": getattr(workflow, "name", workflow), "run": ctx.run_id,
            "node": ctx.node, "attempt": ctx.attempt}


def _emit(logger: Any, level: int, event: str, fields: dict[str, Any], **extra: Any) -> None:
    try:
        # logger.log looked up per event: a lazy proxy then follows structlog's configuration.
        logger.log(level, event, **fields, **extra)
    except Exception:  # a broken logger configuration must not change a node's outcome
        _log.exception("logging middleware could not log %r", event)


def logging_middleware(logger: Any = None, level: int | str = logging.INFO) -> Middleware:
    """Log every attempt as structlog events: ``node.start``, ``node.success`` (with
    ``duration`` in seconds), ``node.retry`` (a :class:`RetryRequested` passing
    through, with ``delay`` and the cause as ``exc_info``) and ``node.failure`` (with
    ``exc_info``), each with ``workflow``, ``run``, ``node`` and ``attempt``.

    Args:
        logger: a structlog logger; by default structlog's configured processors
            writing to the stdlib logger ``flow_orchestrator.nodes``.  The library
            configures nothing: nothing is shown until the application configures
            :mod:`logging` (or passes a logger of its own).
        level: the level of start and success events (an int or a name such as
            ``"DEBUG"``); retries are logged at least at WARNING, failures at least at
            ERROR.

    A concrete bound logger whose level filters the events out costs a fraction of a
    microsecond per node: pass ``structlog.get_logger(...).bind()`` once structlog is
    configured.  The default lazy proxy re-reads structlog's configuration at every
    event (a few microseconds each), so that configuration changes apply at once.  A
    logger that raises is reported on the ``flow_orchestrator.middleware`` stdlib
    logger and ignored.

    Example::

        builder.add("load", load, middleware=logging_middleware(level="DEBUG"))
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise DefinitionError(f"level must be a logging level or its name, got {level!r}")
        level = resolved
    _check_int("level", level, minimum=0)
    if isinstance(logger, logging.Logger):
        raise DefinitionError(
            "logger must be a structlog logger; wrap a stdlib one with "
            "structlog.wrap_logger(logger, wrapper_class=structlog.stdlib.BoundLogger)")
    if logger is not None and not callable(getattr(logger, "log", None)):
        raise DefinitionError(f"logger must be a structlog logger (with a .log method), got {logger!r}")
    return _Logging(logger, level)


# -- retry ------------------------------------------------------------------------------------------

_JITTERS = ("full", "equal", "none")
# Never retried whatever retry_on says: the engine's own verdicts, passed through.
_NOT_RETRIED: tuple[type[BaseException], ...] = (RetryRequested, NodeCancelledError)


class _Retry(Middleware):
    def __init__(self, max_attempts: int, base_delay: float, max_delay: float, multiplier: float,
                 jitter: str, retry_on: tuple[type[Exception], ...],
                 predicate: Callable[[BaseException], bool] | None, rng: Any) -> None:
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.multiplier = multiplier
        self.jitter = jitter
        self.retry_on = retry_on
        self.predicate = predicate
        self.rng = rng
        # An open breaker must not be hammered: retried only when asked for by name.
        explicit = any(issubclass(t, CircuitOpenError) for t in retry_on)
        self._excluded = _NOT_RETRIED if explicit else (*_NOT_RETRIED, CircuitOpenError)

    def backoff(self, attempt: int) -> float:
        """The delay before the attempt after ``attempt``, before jitter: exponential,
        capped at ``max_delay``."""
        try:
            delay = self.base_delay * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.max_delay if self.base_delay else 0.0
        return min(delay, self.max_delay)

    def delay_after(self, attempt: int) -> float:
        """The delay before the attempt after ``attempt``, jitter included."""
        capped = self.backoff(attempt)
        if self.jitter == "full":  # AWS "full jitter": spreads retries of many nodes evenly
            return self.rng.uniform(0.0, capped)
        if self.jitter == "equal":
            return capped / 2 + self.rng.uniform(0.0, capped / 2)
        return capped

    def retryable(self, exc: Exception) -> bool:
        """Whether ``exc`` is one to retry (attempts left aside)."""
        if isinstance(exc, self._excluded) or not isinstance(exc, self.retry_on):
            return False
        return self.predicate is None or bool(self.predicate(exc))

    def wrap(self, action: Action) -> Action:
        max_attempts = self.max_attempts

        def retried(ctx: Any) -> Any:
            try:
                return action(ctx)
            except Exception as exc:
                attempt = ctx.attempt
                if attempt < max_attempts and self.retryable(exc):
                    raise RetryRequested(self.delay_after(attempt),
                                         f"retry {attempt}/{max_attempts - 1} after {type(exc).__name__}") from exc
                raise
        return retried


def retry(max_attempts: int = 3, base_delay: float = 0.1, max_delay: float = 30.0, multiplier: float = 2.0,
          jitter: str = "full", retry_on: type[Exception] | tuple[type[Exception], ...] = (Exception,),
          predicate: Callable[[BaseException], bool] | None = None, rng: Any = None) -> Middleware:
    """Retry a failed attempt with exponential back-off, through the engine's timer.

    On an exception from the action, when it is retryable and ``ctx.attempt <
    max_attempts``, raise :class:`~flow_orchestrator.errors.RetryRequested` ``from`` it
    with a delay of ``min(base_delay * multiplier ** (attempt - 1), max_delay)``,
    jittered: ``"full"`` draws it uniformly in ``[0, delay]``, ``"equal"`` in
    ``[delay / 2, delay]``, ``"none"`` keeps it.  The engine re-runs the node after
    the delay without holding a thread.  Otherwise the original exception propagates,
    and the engine's own ``retries`` option, if any, still applies to it: leave it at 0
    with this middleware.

    Args:
        max_attempts: attempts in all, counting the first (``ctx.attempt`` starts at 1;
            rescheduled attempts of a rate limit inside this middleware count too).
        retry_on: exception types to retry.
        predicate: ``predicate(exc) -> bool``, checked as well as ``retry_on``.
        rng: an object with ``uniform(a, b)`` for the jitter (default a new
            ``random.Random()``); inject a seeded one for reproducible delays.

    Never retried: :class:`CircuitOpenError` unless named in ``retry_on`` (an open
    breaker must not be hammered), ``NodeCancelledError``, a ``RetryRequested`` from
    further in (passed through as is), and ``KeyboardInterrupt``/``SystemExit``.

    Example::

        builder.add("fetch", fetch, middleware=retry(5, base_delay=0.5, retry_on=(IOError,)))
    """
    _check_int("max_attempts", max_attempts)
    base_delay = _check_number("base_delay", base_delay)
    max_delay = _check_number("max_delay", max_delay)
    multiplier = _check_number("multiplier", multiplier, minimum=1.0)
    if jitter not in _JITTERS:
        raise DefinitionError(f"jitter must be one of {', '.join(map(repr, _JITTERS))}, got {jitter!r}")
    retry_types = _exception_types("retry_on", retry_on)
    if predicate is not None:
        _check_callable("predicate", predicate)
    if rng is None:
        rng = random.Random()
    elif not callable(getattr(rng, "uniform", None)):
        raise DefinitionError(f"rng must have a uniform(a, b) method (like random.Random), got {rng!r}")
    return _Retry(max_attempts, base_delay, max_delay, multiplier, jitter, retry_types, predicate, rng)


# -- shared, named state -----------------------------------------------------------------------------


class _Registry:
    """Named objects shared across nodes and runs; creating one twice with other
    parameters is an error rather than a silent surprise."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get_or_create(self, name: str, config: tuple[Any, ...], create: Callable[[], Any]) -> Any:
        with self._lock:
            item = self._items.get(name)
            if item is None:
                item = self._items[name] = create()
            elif item.config != config:
                raise DefinitionError(
                    f"{self._kind} {name!r} already exists with other parameters "
                    f"{item.config!r}, not {config!r}")
            return item

    def get(self, name: str) -> Any:
        with self._lock:
            return self._items.get(name)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_breakers = _Registry("circuit breaker")
_limiters = _Registry("rate limiter")


# -- circuit breaker ----------------------------------------------------------------------------------


class BreakerState(str, enum.Enum):
    """The state of a :class:`CircuitBreaker`."""

    CLOSED = "closed"  #: calls go through; consecutive failures are counted
    OPEN = "open"  #: calls fail fast until ``reset_timeout`` has passed
    HALF_OPEN = "half-open"  #: a few trial calls decide between closed and open

    def __str__(self) -> str:
        return self.value


class CircuitBreaker:
    """A circuit breaker: closed -> open after ``failure_threshold`` consecutive
    failures -> half-open once ``reset_timeout`` seconds passed (up to
    ``half_open_max_calls`` trial calls at once) -> closed on a success, open again on
    a failure.

    Thread-safe; the lock is only held to read or change the state.  Use it directly
    (``if breaker.allow(): ...`` then :meth:`record_success` or
    :meth:`record_failure`), or through :func:`circuit_breaker`.  Outcomes count
    against the state the breaker is in when they are recorded.

    Example::

        breaker = CircuitBreaker("db", failure_threshold=3, reset_timeout=10.0)
        if not breaker.allow():
            raise breaker.open_error()
    """

    def __init__(self, name: str, failure_threshold: int = 5, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, half_open_max_calls: int = 1) -> None:
        self.name = _check_name("circuit breaker", name)
        self.failure_threshold = _check_int("failure_threshold", failure_threshold)
        self.reset_timeout = _check_number("reset_timeout", reset_timeout)
        _check_callable("clock", clock)
        self.clock = clock
        self.half_open_max_calls = _check_int("half_open_max_calls", half_open_max_calls)
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0

    @property
    def config(self) -> tuple[Any, ...]:
        """The parameters, compared when the same name is asked for again."""
        return (self.failure_threshold, self.reset_timeout, self.clock, self.half_open_max_calls)

    def __reduce__(self) -> tuple[Any, ...]:
        # In another process the breaker of this name there stands for this one.
        return (_shared_breaker, (self.name, *self.config))

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose timeout passed reads half-open)."""
        with self._lock:
            self._refresh()
            return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an open breaker half-opens (0 unless open)."""
        with self._lock:
            self._refresh()
            return self._until_half_open()

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open, this takes a trial slot that
        :meth:`record_success`, :meth:`record_failure` or :meth:`release` gives back."""
        if self._state is BreakerState.CLOSED:  # the common case, read without the lock
            return True
        with self._lock:
            self._refresh()
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN and self._trials < self.half_open_max_calls:
                self._trials += 1
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a trial success closes the breaker."""
        if self._state is BreakerState.CLOSED and not self._failures:  # nothing to change
            return
        with self._lock:
            self._refresh()
            if self._state is not BreakerState.OPEN:
                self._close()

    def record_failure(self) -> None:
        """A call failed: count it while closed (opening at the threshold); a trial
        failure opens the breaker again."""
        with self._lock:
            self._refresh()
            if self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()
            elif self._state is BreakerState.HALF_OPEN:
                self._open()

    def release(self) -> None:
        """A call ended with no verdict (rescheduled, cancelled): give its trial slot back."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN and self._trials:
                self._trials -= 1

    def reset(self) -> None:
        """Close the breaker and forget its failures."""
        with self._lock:
            self._close()

    def open_error(self) -> CircuitOpenError:
        """The error to raise for a call that :meth:`allow` refused."""
        with self._lock:
            self._refresh()
            wait = self._until_half_open()
            state = self._state
        if state is BreakerState.HALF_OPEN:
            detail = f"is half-open and its {self.half_open_max_calls} trial call(s) are in flight"
        else:
            detail = f"is open; it half-opens in {wait:.3f} s"
        return CircuitOpenError(f"circuit breaker {self.name!r} {detail}", self.name, wait)

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.reset_timeout:
            self._state = BreakerState.HALF_OPEN
            self._trials = 0

    def _until_half_open(self) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self.clock())

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self.clock()
        self._trials = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trials = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state} failures={self._failures}>"


def _shared_breaker(name: str, failure_threshold: int, reset_timeout: float,
                    clock: Callable[[], float], half_open_max_calls: int) -> CircuitBreaker:
    return _breakers.get_or_create(
        name, (failure_threshold, reset_timeout, clock, half_open_max_calls),
        lambda: CircuitBreaker(name, failure_threshold, reset_timeout, clock, half_open_max_calls))


def get_breaker(name: str) -> CircuitBreaker | None:
    """The shared breaker called ``name``, or ``None`` if none was created."""
    return _breakers.get(name)


def reset_breakers() -> None:
    """Forget every shared breaker (middleware already built keep theirs); for tests."""
    _breakers.clear()


# Outcomes that say nothing about the protected resource: neither success nor failure.
_NO_VERDICT: tuple[type[BaseException], ...] = (RetryRequested, NodeCancelledError)


class _Breaker(Middleware):
    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def wrap(self, action: Action) -> Action:
        breaker = self.breaker

        def guarded(ctx: Any) -> Any:
            # allow() and record_success() read a closed breaker without the lock; the
            # same reads are inlined here to spare two calls on every node's path.
            if breaker._state is not BreakerState.CLOSED and not breaker.allow():
                raise breaker.open_error()
            try:
                result = action(ctx)
            except _NO_VERDICT:
                breaker.release()
                raise
            except Exception:
                breaker.record_failure()
                raise
            except BaseException:  # Ctrl-C: no verdict either
                breaker.release()
                raise
            if breaker._failures or breaker._state is not BreakerState.CLOSED:
                breaker.record_success()
            return result
        return guarded


def circuit_breaker(name: str, failure_threshold: int = 5, reset_timeout: float = 30.0,
                    clock: Callable[[], float] = time.monotonic, half_open_max_calls: int = 1) -> Middleware:
    """Fail fast while a shared resource keeps failing.

    The :class:`CircuitBreaker` called ``name`` is shared by every node and run that
    use the name (asking for it again with other parameters raises
    ``DefinitionError``).  While it is open the action is not called and
    :class:`CircuitOpenError` is raised, naming the breaker and the seconds until it
    half-opens.  An exception from the action counts as a failure, except
    ``RetryRequested`` and ``NodeCancelledError``, which say nothing about the resource.

    Put it inside :func:`retry` (``retry(...)(circuit_breaker(...)(action))``) so that
    each retry goes through the breaker; retry does not retry ``CircuitOpenError``.

    Example::

        builder.add("query", query, middleware=(retry(3), circuit_breaker("db", 5, 30.0)))
    """
    # Build one to validate the parameters before the registry is consulted.
    CircuitBreaker(name, failure_threshold, reset_timeout, clock, half_open_max_calls)
    return _Breaker(_shared_breaker(name, failure_threshold, reset_timeout, clock, half_open_max_calls))


# -- timeout -------------------------------------------------------------------------------------------


class _DeadlineContext:
    """The node's context, with this middleware's deadline folded into ``deadline``,
    ``remaining()``, ``cancelled``, ``raise_if_cancelled()`` and ``wait()``; every other
    attribute is the real context's."""

    __slots__ = ("_clock", "_ctx", "_deadline", "_seconds")

    def __init__(self, ctx: Any, deadline: float, clock: Callable[[], float], seconds: float) -> None:
        self._ctx = ctx
        self._deadline = deadline
        self._clock = clock
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    @property
    def deadline(self) -> float:
        """The earlier of this deadline and the node's, on this middleware's clock."""
        outer = self._ctx.remaining()
        return self._deadline if outer is None else min(self._deadline, self._clock() + outer)

    def remaining(self) -> float:
        """Seconds left before the earlier deadline."""
        own = max(0.0, self._deadline - self._clock())
        outer = self._ctx.remaining()
        return own if outer is None else min(own, outer)

    @property
    def cancelled(self) -> bool:
        """True once the attempt is cancelled or this deadline has passed."""
        return self._ctx.cancelled or self._clock() >= self._deadline

    def raise_if_cancelled(self) -> None:
        """Raise ``NodeCancelledError`` if cancelled, ``NodeTimeoutError`` past this deadline."""
        self._ctx.raise_if_cancelled()
        if self._clock() >= self._deadline:
            raise self._timeout_error()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking at cancellation or this deadline; True if either."""
        return self._ctx.wait(min(seconds, self.remaining())) or self.cancelled

    def _timeout_error(self) -> NodeTimeoutError:
        return NodeTimeoutError(f"node {self._ctx.node!r} ran past its {self._seconds:g} s timeout "
                                "(timeout middleware)")

    def __repr__(self) -> str:
        return f"<deadline context of {self._ctx!r}>"


class _Timeout(Middleware):
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.clock = clock

    def wrap(self, action: Action) -> Action:
        seconds, clock = self.seconds, self.clock

        def timed(ctx: Any) -> Any:
            proxy = _DeadlineContext(ctx, clock() + seconds, clock, seconds)
            result = action(proxy)
            if clock() >= proxy._deadline:
                raise proxy._timeout_error()  # the late result is discarded
            return result
        return timed


def timeout(seconds: float, clock: Callable[[], float] = time.monotonic) -> Middleware:
    """A cooperative time limit on the wrapped call (threads cannot be killed).

    The action receives a context whose ``deadline``, ``remaining()``, ``cancelled``,
    ``raise_if_cancelled()`` and ``wait()`` also reflect this limit (``deadline`` on
    ``clock``'s time base); a call that returns after it has its result discarded and
    :class:`~flow_orchestrator.errors.NodeTimeoutError` raised instead.  Unlike the
    node's ``timeout`` option, the node is not abandoned at the deadline: it ends
    FAILED (or is retried by an outer :func:`retry`) when the call returns.

    Example::

        @flow.node(middleware=timeout(5.0))
        def crawl(ctx):
            while not ctx.cancelled:
                ...
    """
    seconds = _check_number("seconds", seconds, inclusive=False)
    _check_callable("clock", clock)
    return _Timeout(seconds, clock)


# -- rate limit ----------------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket: holds up to ``burst`` tokens (full at first), refilled at
    ``rate`` tokens a second; each call takes one.  Thread-safe.

    Example::

        bucket = TokenBucket("api", rate=10.0, burst=5)
        if not bucket.try_acquire():
            wait = bucket.time_until_token()
    """

    def __init__(self, name: str, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = _check_name("rate limiter", name)
        self.rate = _check_number("rate", rate, inclusive=False)
        self.burst = _check_int("burst", burst)
        _check_callable("clock", clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._capacity = float(burst)
        self._tokens = self._capacity
        self._updated = clock()

    @property
    def config(self) -> tuple[Any, ...]:
        """The parameters, compared when the same name is asked for again."""
        return (self.rate, self.burst, self.clock)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_shared_bucket, (self.name, *self.config))

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional while refilling)."""
        with self._lock:
            return self._refill()

    def try_acquire(self) -> bool:
        """Take a token if there is one."""
        # On every node's path, so _refill() is inlined, and an explicit acquire/release
        # costs half a ``with`` block.
        self._lock.acquire()
        try:
            now = self.clock()
            elapsed = now - self._updated
            self._updated = now
            tokens = self._tokens
            if elapsed > 0.0:
                tokens = min(self._capacity, tokens + elapsed * self.rate)
            if tokens >= 1.0:
                self._tokens = tokens - 1.0
                return True
            self._tokens = tokens
            return False
        finally:
            self._lock.release()

    def time_until_token(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        with self._lock:
            return max(0.0, (1.0 - self._refill()) / self.rate)

    def _refill(self) -> float:
        now = self.clock()
        elapsed = now - self._updated
        self._updated = now
        if elapsed > 0.0:  # a clock stepping back adds nothing
            self._tokens = min(self._capacity, self._tokens + elapsed * self.rate)
        return self._tokens

    def __repr__(self) -> str:
        return f"<TokenBucket {self.name!r} rate={self.rate:g}/s burst={self.burst}>"


def _shared_bucket(name: str, rate: float, burst: int, clock: Callable[[], float]) -> TokenBucket:
    return _limiters.get_or_create(name, (rate, burst, clock), lambda: TokenBucket(name, rate, burst, clock))


def get_limiter(name: str) -> TokenBucket | None:
    """The shared token bucket called ``name``, or ``None`` if none was created."""
    return _limiters.get(name)


def reset_limiters() -> None:
    """Forget every shared token bucket (middleware already built keep theirs); for tests."""
    _limiters.clear()


_MODES = ("reschedule", "block", "fail")


class _RateLimit(Middleware):
    def __init__(self, bucket: TokenBucket, mode: str, sleep: Callable[[float], Any]) -> None:
        self.bucket = bucket
        self.mode = mode
        self.sleep = sleep

    def wrap(self, action: Action) -> Action:
        return _LIMITED[self.mode](action, self.bucket, self.sleep)


def _rescheduling(action: Action, bucket: TokenBucket, sleep: Callable[[float], Any]) -> Action:
    def limited(ctx: Any) -> Any:
        if not bucket.try_acquire():
            raise RetryRequested(bucket.time_until_token(), f"rate limit {bucket.name!r}: no token")
        return action(ctx)
    return limited


def _blocking(action: Action, bucket: TokenBucket, sleep: Callable[[float], Any]) -> Action:
    def limited(ctx: Any) -> Any:
        while not bucket.try_acquire():
            ctx.raise_if_cancelled()
            sleep(bucket.time_until_token())
        return action(ctx)
    return limited


def _failing(action: Action, bucket: TokenBucket, sleep: Callable[[float], Any]) -> Action:
    def limited(ctx: Any) -> Any:
        if not bucket.try_acquire():
            wait = bucket.time_until_token()
            raise RateLimitedError(f"node {ctx.node!r}: rate limit {bucket.name!r} has no token; "
                                   f"next in {wait:.3f} s", bucket.name, wait)
        return action(ctx)
    return limited


_LIMITED = {"reschedule": _rescheduling, "block": _blocking, "fail": _failing}


def rate_limit(name: str, rate: float, burst: int = 1, mode: str = "reschedule",
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] = time.sleep) -> Middleware:
    """At most ``rate`` calls a second (bursts of ``burst``) across every node and run
    using the token bucket called ``name`` (asking for it again with another rate,
    burst or clock raises ``DefinitionError``).

    Without a token:

    * ``"reschedule"`` (default): raise ``RetryRequested`` for when the next token is
      due; the engine re-runs the node then, holding no thread (the attempt count
      grows).  Nodes that come back together compete again, in no particular order.
    * ``"block"``: ``sleep`` until a token is available, **holding the worker thread**
      (checking for cancellation between sleeps).
    * ``"fail"``: raise :class:`RateLimitedError`.

    Example::

        api = rate_limit("github", rate=5.0, burst=10)
        for repo in repos:
            builder.add(repo, fetch(repo), middleware=(retry(3), api))
    """
    if mode not in _MODES:
        raise DefinitionError(f"mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
    _check_callable("sleep", sleep)
    TokenBucket(name, rate, burst, clock)  # validates the parameters before the registry is consulted
    return _RateLimit(_shared_bucket(name, rate, burst, clock), mode, sleep)


# -- metrics ---------------------------------------------------------------------------------------------


class _Metrics(Middleware):
    def __init__(self, sink: Callable[[str, int, float, BaseException | None], Any]) -> None:
        self.sink = sink

    def wrap(self, action: Action) -> Action:
        sink, clock = self.sink, time.perf_counter

        def measured(ctx: Any) -> Any:
            start = clock()
            try:
                result = action(ctx)
            except BaseException as exc:
                _report(sink, ctx, clock() - start, exc)
                raise
            _report(sink, ctx, clock() - start, None)
            return result
        return measured


def _report(sink: Callable[..., Any], ctx: Any, seconds: float, error: BaseException | None) -> None:
    try:
        sink(ctx.node, ctx.attempt, seconds, error)
    except Exception:  # a failing sink must not change the node's outcome
        _log.exception("metrics sink %r failed", sink)


def metrics_middleware(sink: Callable[[str, int, float, BaseException | None], Any]) -> Middleware:
    """Call ``sink(node, attempt, seconds, error_or_None)`` after every call of the action,
    on the worker thread (keep it quick).  A ``RetryRequested`` from further in is
    reported as the error; a sink that raises is logged and ignored.

    The engine already keeps per-node counters and latency histograms
    (``Engine(metrics=True)``, in the compiled core, much cheaper); this is for custom
    sinks (a StatsD client, a test's list).

    Example::

        timings = []
        builder.add("score", score, middleware=metrics_middleware(
            lambda node, attempt, seconds, error: timings.append((node, seconds))))
    """
    _check_callable("sink", sink)
    return _Metrics(sink)


# -- permission -------------------------------------------------------------------------------------------


class _Permission(Middleware):
    def __init__(self, predicate: Callable[[Any], bool], message: str | None) -> None:
        self.predicate = predicate
        self.message = message

    def wrap(self, action: Action) -> Action:
        predicate, message = self.predicate, self.message

        def checked(ctx: Any) -> Any:
            if not predicate(ctx):
                node = ctx.node
                raise PermissionDeniedError(f"node {node!r}: {message or 'permission denied'}", node)
            return action(ctx)
        return checked


def permission(predicate: Callable[[Any], bool], message: str | None = None) -> Middleware:
    """Run the action only if ``predicate(ctx)`` is true; otherwise raise
    :class:`PermissionDeniedError` naming the node (and ``message``, if given).

    The predicate sees the whole context: ``ctx.node``, ``ctx.data``, ``ctx.inputs``...

    Example::

        admins_only = permission(lambda ctx: ctx.data["user"] in ADMINS, "admins only")
        builder.add("drop_table", drop_table, middleware=admins_only)
    """
    _check_callable("predicate", predicate)
    if message is not None and not isinstance(message, str):
        raise DefinitionError(f"message must be a str or None, got {message!r}")
    return _Permission(predicate, message)


# -- validation --------------------------------------------------------------------------------------------

# A check returns None when the value is valid, else a description of what is wrong.
Check = Callable[[Any], "str | None"]


def _is_type_spec(spec: object) -> bool:
    return isinstance(spec, type) or (isinstance(spec, tuple) and bool(spec)
                                      and all(isinstance(t, type) for t in spec))


def _type_names(spec: type | tuple[type, ...]) -> str:
    types_ = spec if isinstance(spec, tuple) else (spec,)
    return " or ".join(t.__name__ for t in types_)


def _instance_check(spec: type | tuple[type, ...], label: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, spec):
            return None
        return f"{label} is {type(value).__name__}, expected {_type_names(spec)}"
    return check


def _mapping_check(schema: Mapping[str, Any], label: str) -> Check:
    items = tuple(schema.items())

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"{label} is {type(value).__name__}, expected a mapping with keys {sorted(schema)}"
        for key, spec in items:
            if key not in value:
                return f"{label} {key!r} is missing"
            if not isinstance(value[key], spec):
                return f"{label} {key!r} is {type(value[key]).__name__}, expected {_type_names(spec)}"
        return None
    return check


def _callable_check(fn: Callable[[Any], Any], label: str) -> Check:
    name = getattr(fn, "__qualname__", None) or repr(fn)

    def check(value: Any) -> str | None:
        verdict = fn(value)
        # None passes: validators that only raise return nothing.
        return None if verdict is None or verdict else f"{label} rejected by {name}"
    return check


def _each_check(spec: type | tuple[type, ...], label: str) -> Check:
    def check(mapping: Mapping[str, Any]) -> str | None:
        for key, value in mapping.items():
            if not isinstance(value, spec):
                return f"{label} {key!r} is {type(value).__name__}, expected {_type_names(spec)}"
        return None
    return check


def _compile_spec(spec: Any, label: str, *, each: bool) -> Check:
    """A check for ``spec``; with ``each``, a type spec applies to every value of a mapping."""
    if _is_type_spec(spec):
        return _each_check(spec, label) if each else _instance_check(spec, label)
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if not isinstance(key, str) or not _is_type_spec(value):
                raise DefinitionError(
                    f"a {label} schema maps str keys to a type or a tuple of types, got {key!r}: {value!r}")
        return _mapping_check(spec, label)
    if callable(spec):
        return _callable_check(spec, label)
    raise DefinitionError(f"{label} must be a callable, a type, a tuple of types or a dict schema, got {spec!r}")


class _Validate(Middleware):
    def __init__(self, inputs: Any, output: Any) -> None:
        self.inputs = inputs
        self.output = output

    def checks(self) -> tuple[Check | None, Check | None]:
        """The input and output checks (``None`` for no check); raises ``DefinitionError``
        for a malformed spec."""
        return (None if self.inputs is None else _compile_spec(self.inputs, "input", each=True),
                None if self.output is None else _compile_spec(self.output, "output", each=False))

    def wrap(self, action: Action) -> Action:
        check_inputs, check_output = self.checks()

        def validated(ctx: Any) -> Any:
            if check_inputs is not None:
                _enforce(check_inputs, ctx.inputs, ctx, "input")
            result = action(ctx)
            if check_output is not None:
                _enforce(check_output, result, ctx, "output")
            return result
        return validated


def _enforce(check: Check, value: Any, ctx: Any, what: str) -> None:
    try:
        problem = check(value)
    except Exception as exc:
        node = ctx.node
        raise ValidationError(f"node {node!r}: {what} validation raised {type(exc).__name__}: {exc}",
                              node, what) from exc
    if problem is not None:
        node = ctx.node
        raise ValidationError(f"node {node!r}: {problem}", node, what)


def validate(inputs: Any = None, output: Any = None) -> Middleware:
    """Check a node's inputs before the call and its output after it; raise
    :class:`ValidationError` naming the node and what failed.

    Each of ``inputs`` and ``output`` is one of:

    * a callable, given ``ctx.inputs`` (the dict of dependency outputs) or the output,
      that returns a false value (other than ``None``) or raises to reject it;
    * a type or a tuple of types: every input value, or the output, must be an instance;
    * a dict ``{key: type or tuple of types}``: ``ctx.inputs``, or the output (which must
      be a mapping), must have those keys with values of those types (other keys pass).

    Example::

        builder.add("report", report, depends_on=["totals"],
                    middleware=validate(inputs={"totals": dict}, output=str))
    """
    if inputs is None and output is None:
        raise DefinitionError("validate() needs inputs=..., output=... or both")
    middleware = _Validate(inputs, output)
    middleware.checks()  # malformed specs are reported now, not when a workflow is compiled
    return middleware


# -- composition --------------------------------------------------------------------------------------------


class _Composed(Middleware):
    def __init__(self, middleware: tuple[Callable[[Action], Action], ...]) -> None:
        self.middleware = middleware

    def __call__(self, action: Action) -> Action:
        # No wraps of its own: each layer already carries the action's metadata.
        for mw in reversed(self.middleware):
            action = mw(action)
            if not callable(action):
                raise DefinitionError(f"middleware {mw!r} returned {action!r}, not a callable")
        return action


def compose(*middleware: Callable[[Action], Action]) -> Middleware:
    """One middleware applying several: ``compose(a, b)(action)`` is ``a(b(action))``,
    the same order as a node's ``middleware=(a, b)``.  ``compose()`` changes nothing.

    Example::

        resilient = compose(logging_middleware(), retry(5), circuit_breaker("api"))
        builder.add("call", call_api, middleware=resilient)
    """
    for mw in middleware:
        _check_callable("middleware", mw)
    return _Composed(middleware)
