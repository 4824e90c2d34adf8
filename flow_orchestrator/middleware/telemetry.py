"""Middleware that observe each attempt without changing its outcome:
:func:`logging_middleware` (structlog events) and :func:`metrics_middleware` (a sink
called after every call).

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only, and structlog only when a logging middleware without a logger of its own is
applied (``import flow_orchestrator`` must not load it).  A logger or sink that raises
is reported on the ``flow_orchestrator.middleware`` stdlib logger and ignored.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import DefinitionError, RetryRequested
from .base import Action, Middleware, _check_callable, _check_int

__all__ = ["logging_middleware", "metrics_middleware"]

# The package's logger (not this module's name): where a failing logger or sink is reported.
_log = logging.getLogger("flow_orchestrator.middleware")


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
