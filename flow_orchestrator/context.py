"""What an action receives, and the convention it is called by.

Layer L3 (run records).  Both sides of a call meet here: the compiler decides *once per
action* how it is called (:func:`takes_context`), the compiled core calls it with a
:class:`~flow_orchestrator._ext.NodeContext` in this process, and an attempt shipped to
another process or a Dask worker gets an :class:`ExternalContext`, a picklable
snapshot, and is called there by :func:`call_external`.  A worker-side function takes
what it needs as arguments and never imports the engine (as dask's ``execute_task``).

The convention (:func:`plan_call`; the full rules are in :mod:`flow_orchestrator._calling`):
a parameter named after a dependency receives its output, one named ``ctx`` (or
annotated ``NodeContext``) the context, one with a default nothing; an action whose
only required parameter matches none of these receives the context, as before.  It is
decided once per action when the workflow is built, never per call.  Middleware always
sees the context: an action is adapted to take it alone (:func:`adapt`,
:func:`with_middleware`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ._calling import CONTEXT, CONTEXT_ONLY, NOTHING, CallPlan, bind, signature_of
from ._ext import NodeContext
from .data import WorkflowData
from .errors import DefinitionError, UnknownNodeError

__all__ = ["CONTEXT", "CallPlan", "ExternalContext", "NodeContext", "adapt", "adapt_item", "call_external",
           "plan_call", "takes_context", "with_middleware"]


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


Plan = CallPlan | bool
"""How an action is called: a :class:`CallPlan`, or (the older form) whether it takes
the context alone."""


def _plan(plan: Plan) -> CallPlan:
    if plan is True:
        return CONTEXT_ONLY
    if plan is False:
        return NOTHING
    return plan  # type: ignore[return-value]


def call_external(action: Callable[..., Any], plan: Plan,
                  middleware: tuple[Callable[..., Any], ...], ctx: ExternalContext) -> Any:
    """Call ``action`` as ``plan`` says, with ``ctx`` supplying the context and inputs,
    inside its middleware.

    Runs where the executor runs the attempt: middleware is applied there, around the
    action (see also :func:`flow_orchestrator.external.run_attempt`).
    """
    if middleware:
        return with_middleware(action, plan, middleware)(ctx)
    return adapt(action, _plan(plan))(ctx)


def takes_context(action: Callable[..., Any]) -> bool:
    """Whether ``action`` is called with the context alone when it has no dependencies.

    The full convention, with inputs by parameter name, is :func:`plan_call`'s.  A
    parameter with a default is never given the context; a signature Python cannot
    inspect (some builtins) is called with nothing.  Raises
    :class:`~flow_orchestrator.errors.DefinitionError` for a signature no node without
    dependencies could satisfy.
    """
    return plan_call(action).context_only


def plan_call(action: Callable[..., Any], dependencies: Collection[str] = (), node: str = "",
              nodes: Collection[str] = ()) -> CallPlan:
    """The :class:`CallPlan` of ``action`` on a node with ``dependencies`` (names) in a
    workflow of ``nodes``: which parameters receive the context, which the outputs of
    which dependencies (the rules are in :mod:`flow_orchestrator._calling`).

    >>> plan_call(lambda extract, ctx: None, ["extract"])
    CallPlan(positional=('extract', None), keywords=())
    >>> plan_call(lambda i=3: i).nothing
    True
    """
    return bind(signature_of(action), dependencies, node, nodes)


def adapt(action: Callable[..., Any], plan: CallPlan) -> Callable[[Any], Any]:
    """``action`` as a callable of the context alone, feeding its parameters as ``plan``
    says (the action itself when it already takes the context alone)."""
    if plan.context_only:
        return action
    if plan.nothing:
        def call_bare(ctx: Any, _a: Callable[..., Any] = action) -> Any:
            return _a()
        return call_bare
    positional, keywords = plan.positional, plan.keywords
    if len(positional) == 1 and positional[0] is not None and not keywords:
        def call_one(ctx: Any, _a: Callable[..., Any] = action, _n: str = positional[0]) -> Any:
            return _a(ctx.inputs[_n])
        return call_one

    def call(ctx: Any, _a: Callable[..., Any] = action) -> Any:
        inputs = ctx.inputs
        args = [ctx if n is None else inputs[n] for n in positional]
        if keywords:
            return _a(*args, **{k: ctx if n is None else inputs[n] for k, n in keywords})
        return _a(*args)
    return call


def with_middleware(action: Callable[..., Any], plan: Plan,
                    middleware: tuple[Callable[..., Any], ...]) -> Callable[..., Any]:
    """``action`` inside ``middleware`` (outermost first), called with the context.

    The action is first adapted to take the context alone (:func:`adapt`), so that
    middleware always sees one.
    """
    wrapped = adapt(action, _plan(plan))
    for mw in reversed(middleware):
        wrapped = mw(wrapped)
        if not callable(wrapped):
            raise DefinitionError(f"middleware {mw!r} returned {wrapped!r}, not a callable")
    return wrapped


def adapt_item(action: Callable[..., Any], plan: CallPlan,
               middleware: tuple[Callable[..., Any], ...] = ()) -> tuple[Callable[..., Any], bool]:
    """What the core calls for each item of a map node, and whether it passes the context:
    ``(action, False)`` when the action takes the element alone (called
    ``action(element)``), else a callable of ``(element, ctx)`` feeding the other
    parameters as ``plan`` says (made for the parameters after the element).  With
    ``middleware``, the middleware wraps a callable of the context alone, which reads
    the element from ``ctx.element``."""
    if middleware:
        def item_of_context(ctx: Any, _a: Callable[..., Any] = action) -> Any:
            return _call_item(_a, plan, ctx.element, ctx)
        wrapped = with_middleware(item_of_context, CONTEXT_ONLY, middleware)

        def call_wrapped(element: Any, ctx: Any, _w: Callable[..., Any] = wrapped) -> Any:
            return _w(ctx)
        return call_wrapped, True
    if plan.nothing:
        return action, False
    if plan.context_only:
        return action, True

    def call(element: Any, ctx: Any, _a: Callable[..., Any] = action) -> Any:
        return _call_item(_a, plan, element, ctx)
    return call, True


def _call_item(action: Callable[..., Any], plan: CallPlan, element: Any, ctx: Any) -> Any:
    if plan.nothing:
        return action(element)
    if plan.context_only:
        return action(element, ctx)
    inputs = ctx.inputs
    args = [ctx if n is None else inputs[n] for n in plan.positional]
    if plan.keywords:
        return action(element, *args, **{k: ctx if n is None else inputs[n] for k, n in plan.keywords})
    return action(element, *args)
