"""Rate limits: :class:`TokenBucket`, the registry that shares a bucket by name across
nodes and runs (:func:`get_limiter`, :func:`reset_limiters`), and the
:func:`rate_limit` middleware with its three modes (reschedule, block, fail).

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only.  A bucket pickles as its name and parameters: in a worker process it is that
process's bucket of the same name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import DefinitionError, RetryRequested
from .base import (
    Action,
    Middleware,
    RateLimitedError,
    _check_callable,
    _check_int,
    _check_name,
    _check_number,
    _Registry,
)

__all__ = ["TokenBucket", "get_limiter", "rate_limit", "reset_limiters"]


_limiters = _Registry("rate limiter")


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
