"""Retry with exponential back-off and jitter, through the engine's timer: :func:`retry`.

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only.  The middleware decides and the engine waits: a retryable failure becomes
:class:`~flow_orchestrator.errors.RetryRequested` with the delay, nothing sleeps here.
(The module is ``retries``, not ``retry``, so that it does not shadow the function of
that name that the package exports.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..errors import DefinitionError, NodeCancelledError, RetryRequested
from .base import (
    Action,
    CircuitOpenError,
    Middleware,
    _check_callable,
    _check_int,
    _check_number,
    _exception_types,
)

__all__ = ["retry"]


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
