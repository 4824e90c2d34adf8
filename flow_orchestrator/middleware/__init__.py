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

Where things live
    This package is layer L4 (services, observation): the engine applies middleware,
    and nothing here imports the engine, a workflow or a context; an action's context
    is only ever an argument.  One module per family, each importing ``base`` and
    :mod:`flow_orchestrator.errors` only, and this ``__init__`` importing the families
    to re-export their public names (import them from here)::

        base        Middleware, the parameter checks, the errors the built-ins raise
                    (CircuitOpenError, RateLimitedError, PermissionDeniedError,
                    ValidationError), the registry of named shared objects, compose
        retries     retry
        breaker     CircuitBreaker, BreakerState, circuit_breaker, get_breaker,
                    reset_breakers
        ratelimit   TokenBucket, rate_limit, get_limiter, reset_limiters
        timeouts    timeout (and the context proxy carrying its deadline)
        telemetry   logging_middleware, metrics_middleware
        guards      permission, validate

    A new built-in joins the family it belongs to, or starts one; an error that
    another family must recognise (as :func:`retry` recognises
    :class:`CircuitOpenError`) goes in ``base``.  Middleware classes stay at module
    level with their parameters as attributes: a process executor pickles them by
    their qualified name.
"""

from __future__ import annotations

from .base import (
    CircuitOpenError,
    Middleware,
    PermissionDeniedError,
    RateLimitedError,
    ValidationError,
    compose,
)
from .breaker import BreakerState, CircuitBreaker, circuit_breaker, get_breaker, reset_breakers
from .guards import permission, validate
from .ratelimit import TokenBucket, get_limiter, rate_limit, reset_limiters
from .retries import retry
from .telemetry import logging_middleware, metrics_middleware
from .timeouts import timeout

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
