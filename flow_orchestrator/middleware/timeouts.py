"""A cooperative time limit on the wrapped call: :func:`timeout`, and the context proxy
that folds its deadline into ``ctx.deadline``, ``remaining()``, ``cancelled``,
``raise_if_cancelled()`` and ``wait()``.

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only.  (The module is ``timeouts``, not ``timeout``, so that it does not shadow the
function of that name that the package exports.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import NodeTimeoutError
from .base import Action, Middleware, _check_callable, _check_number

__all__ = ["timeout"]


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
