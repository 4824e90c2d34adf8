"""Circuit breakers: :class:`CircuitBreaker`, its :class:`BreakerState`, the registry
that shares a breaker by name across nodes and runs (:func:`get_breaker`,
:func:`reset_breakers`), and the :func:`circuit_breaker` middleware.

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only.  A breaker pickles as its name and parameters: in a worker process it is that
process's breaker of the same name.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import NodeCancelledError, RetryRequested
from .base import (
    Action,
    CircuitOpenError,
    Middleware,
    _check_callable,
    _check_int,
    _check_name,
    _check_number,
    _Registry,
)

__all__ = ["BreakerState", "CircuitBreaker", "circuit_breaker", "get_breaker", "reset_breakers"]


_breakers = _Registry("circuit breaker")


class BreakerState(str, enum.Enum):
    """The state of a :class:`CircuitBreaker`."""

    CLOSED = "closed"  #: calls go through; consecutive failures are counted
    OPEN = "open"  #: calls fail fast until ``reset_timeout`` has passed
    HALF_OPEN = "half-open"  #: a few trial calls decide between closed and open

    def __str__(self) -> str:
        return self.value


# The members as module constants: reading ``BreakerState.CLOSED`` goes through the enum
# class's attribute lookup (about 0.1 us on Python 3.11), twice on every guarded call.
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


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
        self._state = _CLOSED
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
        if self._state is _CLOSED:  # the common case, read without the lock
            return True
        with self._lock:
            self._refresh()
            if self._state is _CLOSED:
                return True
            if self._state is _HALF_OPEN and self._trials < self.half_open_max_calls:
                self._trials += 1
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a trial success closes the breaker."""
        if self._state is _CLOSED and not self._failures:  # nothing to change
            return
        with self._lock:
            self._refresh()
            if self._state is not _OPEN:
                self._close()

    def record_failure(self) -> None:
        """A call failed: count it while closed (opening at the threshold); a trial
        failure opens the breaker again."""
        with self._lock:
            self._refresh()
            if self._state is _CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()
            elif self._state is _HALF_OPEN:
                self._open()

    def release(self) -> None:
        """A call ended with no verdict (rescheduled, cancelled): give its trial slot back."""
        with self._lock:
            if self._state is _HALF_OPEN and self._trials:
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
        if state is _HALF_OPEN:
            detail = f"is half-open and its {self.half_open_max_calls} trial call(s) are in flight"
        else:
            detail = f"is open; it half-opens in {wait:.3f} s"
        return CircuitOpenError(f"circuit breaker {self.name!r} {detail}", self.name, wait)

    def _refresh(self) -> None:
        if self._state is _OPEN and self.clock() - self._opened_at >= self.reset_timeout:
            self._state = _HALF_OPEN
            self._trials = 0

    def _until_half_open(self) -> float:
        if self._state is not _OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self.clock())

    def _open(self) -> None:
        self._state = _OPEN
        self._opened_at = self.clock()
        self._trials = 0

    def _close(self) -> None:
        self._state = _CLOSED
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
            if breaker._state is not _CLOSED and not breaker.allow():
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
            if breaker._failures or breaker._state is not _CLOSED:
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
