"""What an action receives, and the convention it is called by.

Layer L3 (run records).  Both sides of a call meet here: the compiler decides *once per
action* how it is called (:func:`takes_context`), the compiled core calls it with a
:class:`~flow_orchestrator._ext.NodeContext` in this process, and an attempt shipped to
another process or a Dask worker gets an :class:`ExternalContext`, a picklable
snapshot, and is called there by :func:`call_external`.  A worker-side function takes
what it needs as arguments and never imports the engine (as dask's ``execute_task``).

The convention: an action takes no argument, or one (the context); a signature Python
cannot inspect (some builtins) is called with none.  Middleware always sees the
context: an action that takes none is wrapped (:func:`with_middleware`).
"""

from __future__ import annotations

import inspect
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._ext import NodeContext
from .data import WorkflowData
from .errors import DefinitionError, UnknownNodeError

__all__ = ["ExternalContext", "NodeContext", "call_external", "takes_context", "with_middleware"]


@dataclass(frozen=True)
class ExternalContext:
    """The context an action receives when it runs in another process: a snapshot.

    ``data`` is a copy of the run's data taken when the attempt started; changes made
    to it stay in the child process.  There is no live cancellation across processes.
    ``inputs`` hold the dependencies' outputs as values (with a
    :class:`~flow_orchestrator.dask_executor.DaskExecutor` keeping outputs on the
    cluster too: dask resolves them on the worker).
    """

    node: str
    node_id: int
    attempt: int
    deadline: float | None
    inputs: dict[str, Any]
    data: WorkflowData
    run_id: str
    workflow: str = ""

    @property
    def cancelled(self) -> bool:
        """Always False: cancellation does not cross process boundaries."""
        return False

    def raise_if_cancelled(self) -> None:
        """Does nothing (see :attr:`cancelled`)."""

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None``."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; returns False (never cancelled, see :attr:`cancelled`)."""
        time.sleep(max(0.0, seconds))
        return False

    def input(self, name: str) -> Any:
        """The output of the dependency called ``name``."""
        try:
            return self.inputs[name]
        except KeyError:
            raise UnknownNodeError(f"node {self.node!r} has no dependency {name!r}") from None


def call_external(action: Callable[..., Any], takes_context: bool,
                   middleware: tuple[Callable[..., Any], ...], ctx: ExternalContext) -> Any:
    """Call ``action`` with ``ctx`` (or without, per ``takes_context``) inside its middleware.

    Runs where the executor runs the attempt: middleware is applied there, around the
    action (see also :func:`flow_orchestrator.external.run_attempt`).
    """
    if middleware:
        return with_middleware(action, takes_context, middleware)(ctx)
    return action(ctx) if takes_context else action()


def takes_context(action: Callable[..., Any]) -> bool:
    """Whether ``action`` is called with the context (it accepts a positional argument).

    Actions take no argument or one; a signature Python cannot inspect (some builtins)
    is called with none.
    """
    if type(action) is types.FunctionType:
        # Fast path for plain functions (bulk workflows have millions): read the code object.
        code = action.__code__
        n_positional = code.co_argcount
        n_defaults = len(action.__defaults__ or ())
        kw_required = code.co_kwonlyargcount - len(action.__kwdefaults__ or {})
        if n_positional - n_defaults <= 1 and kw_required == 0:
            return n_positional > 0 or bool(code.co_flags & inspect.CO_VARARGS)
    try:
        sig = inspect.signature(action)
    except (TypeError, ValueError):
        return False
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p for p in sig.parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(required) > 1 or any(p.kind is p.KEYWORD_ONLY for p in required):
        raise DefinitionError(f"action {action!r} must take no argument or one (the context), takes {sig}")
    return bool(positional)


def with_middleware(action: Callable[..., Any], accepts_ctx: bool,
                    middleware: tuple[Callable[..., Any], ...]) -> Callable[..., Any]:
    """``action`` inside ``middleware`` (outermost first), called with the context.

    An action that takes no context is wrapped so that middleware always sees one.
    """
    wrapped = action if accepts_ctx else (lambda ctx, _a=action: _a())
    for mw in reversed(middleware):
        wrapped = mw(wrapped)
        if not callable(wrapped):
            raise DefinitionError(f"middleware {mw!r} returned {wrapped!r}, not a callable")
    return wrapped
