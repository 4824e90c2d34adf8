"""The bottom of the middleware package: what every family shares.

Layer L4 (services, observation), under :mod:`flow_orchestrator.middleware`.  It imports
only :mod:`flow_orchestrator.errors` (L0) and the standard library; every family module
(``retries``, ``breaker``, ``ratelimit``, ``timeouts``, ``telemetry``, ``guards``) imports
it, and it imports none of them.

Here: the :class:`Middleware` base class and the ``Action`` type, the parameter checks
every factory runs (each raising :class:`~flow_orchestrator.errors.DefinitionError`),
the errors the built-ins raise instead of calling the action (kept together, and low,
because one family reacts to another's: :func:`~flow_orchestrator.middleware.retry`
knows :class:`CircuitOpenError`), the ``_Registry`` of named objects that circuit
breakers and token buckets are shared through, and :func:`compose`.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any

from ..errors import DefinitionError, ExecutionError, FlowError

__all__ = [
    "CircuitOpenError",
    "Middleware",
    "PermissionDeniedError",
    "RateLimitedError",
    "ValidationError",
    "compose",
]


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
