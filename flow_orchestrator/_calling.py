"""How an action is called: which of its parameters receive the context, which receive
the outputs of its dependencies, and which are left alone.

Layer L1 (core seam).  The rules are decided once per distinct action (and, where a
parameter names a node, once per distinct set of dependencies), when the workflow is
built, never per call; the compiled core then calls every node's callable with the
context or with nothing (:class:`CallPlan`).  :mod:`flow_orchestrator.context` is the
public face of the convention; this module sits below the workflow definition so that
``WorkflowBuilder.build()`` can refuse a signature that cannot be satisfied.

The rules, for each parameter of the action's signature:

1. A parameter **with a default is never given anything**: ``lambda i=i: i * 10``
   keeps its ``i`` (the usual loop binding), and so does ``def f(limit=10)``.
2. A parameter named ``ctx``, or annotated ``NodeContext`` / ``ExternalContext``,
   receives the context.
3. A parameter named after one of the node's **dependencies** receives that
   dependency's output (as Hamilton does): ``lambda extract: sum(extract)`` with
   ``depends_on="extract"``.
4. Today's convention keeps working: an action whose only required parameter is
   positional and matches neither rule receives the context (``def step(c): ...``).
   ``*args`` alone also receives it.
5. Anything else cannot be satisfied and is a
   :class:`~flow_orchestrator.errors.DefinitionError` naming the node and the
   parameter: a second unknown required parameter, a required keyword-only parameter
   that names no dependency, and a parameter named after a node of the workflow that
   is *not* a dependency of this one (rule 4 would silently hand it the context: the
   trap of a forgotten ``depends_on``).

Signatures Python cannot inspect (some builtins) are called with nothing.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .errors import DefinitionError

__all__ = ["CONTEXT", "CallPlan", "Signature", "bind", "signature_of"]

CONTEXT = None
"""In a :class:`CallPlan`, the source of a parameter that receives the context."""

_CONTEXT_TYPES = ("NodeContext", "ExternalContext")


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How one action is called: ``positional`` parameters in order and ``keywords``
    by name, each fed by :data:`CONTEXT` (``None``) or the name of a dependency whose
    output it receives.  Picklable, so that other processes call actions the same way."""

    positional: tuple[str | None, ...] = ()
    keywords: tuple[tuple[str, str | None], ...] = ()

    @property
    def nothing(self) -> bool:
        """Called with no argument."""
        return not self.positional and not self.keywords

    @property
    def context_only(self) -> bool:
        """Called with the context alone, positionally (the core's fast path)."""
        return self.positional == (CONTEXT,) and not self.keywords

    def inputs(self) -> tuple[str, ...]:
        """The dependencies whose outputs this call passes, in parameter order."""
        return tuple(s for s in (*self.positional, *(s for _, s in self.keywords)) if s is not None)


NOTHING = CallPlan()
CONTEXT_ONLY = CallPlan((CONTEXT,))


@dataclass(frozen=True, slots=True)
class Signature:
    """What matters of an action's signature: its required parameters (positional ones
    in order, then keyword-only), which of them ask for the context by name or
    annotation, and whether it takes ``*args``."""

    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    wants_context: frozenset[str]
    varargs: bool
    inspectable: bool = True

    def names(self) -> tuple[str, ...]:
        """Every required parameter's name."""
        return (*self.positional, *self.keywords)


_UNINSPECTABLE = Signature((), (), frozenset(), False, inspectable=False)


def _is_context_annotation(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1].strip("'\" ") in _CONTEXT_TYPES
    return getattr(annotation, "__name__", None) in _CONTEXT_TYPES


def _from_code(action: types.FunctionType) -> Signature:
    """A plain function's signature read from its code object (bulk workflows have
    millions of actions: this is several times cheaper than ``inspect.signature``)."""
    code = action.__code__
    n_positional = code.co_argcount
    n_kwonly = code.co_kwonlyargcount
    names = code.co_varnames
    n_required = n_positional - len(action.__defaults__ or ())
    kwdefaults = action.__kwdefaults__ or {}
    positional = names[:n_required]
    keywords = tuple(n for n in names[n_positional:n_positional + n_kwonly] if n not in kwdefaults)
    annotations = action.__annotations__ if (positional or keywords) else None
    wants = frozenset(n for n in (*positional, *keywords)
                      if n == "ctx" or (annotations and _is_context_annotation(annotations.get(n))))
    return Signature(positional, keywords, wants, bool(code.co_flags & inspect.CO_VARARGS))


def signature_of(action: Callable[..., Any]) -> Signature:
    """The :class:`Signature` of ``action`` (uninspectable builtins: no parameters)."""
    if type(action) is types.FunctionType and not hasattr(action, "__wrapped__"):
        return _from_code(action)
    try:
        sig = inspect.signature(action)
    except (TypeError, ValueError):
        return _UNINSPECTABLE
    positional: list[str] = []
    keywords: list[str] = []
    wants: set[str] = set()
    varargs = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            varargs = True
            continue
        if p.kind is p.VAR_KEYWORD or p.default is not p.empty:
            continue
        (keywords if p.kind is p.KEYWORD_ONLY else positional).append(p.name)
        if p.name == "ctx" or _is_context_annotation(p.annotation):
            wants.add(p.name)
    return Signature(tuple(positional), tuple(keywords), frozenset(wants), varargs)


def _source(name: str, sig: Signature, dependencies: Collection[str]) -> str | None | bool:
    """The source of a required parameter: CONTEXT, a dependency's name, or False."""
    if name in sig.wants_context:
        return CONTEXT
    if name in dependencies:
        return name
    return False


def bind(sig: Signature, dependencies: Collection[str], node: str = "",
         nodes: Collection[str] = ()) -> CallPlan:
    """The :class:`CallPlan` of an action with signature ``sig`` on a node with
    ``dependencies`` (names), in a workflow whose node names are ``nodes``.

    Raises :class:`~flow_orchestrator.errors.DefinitionError` naming ``node`` and the
    parameter when the signature cannot be satisfied (see the module documentation).
    """
    if not sig.positional and not sig.keywords:
        return CONTEXT_ONLY if sig.varargs else NOTHING
    where = f"node {node!r}: " if node else ""
    positional: list[str | None] = []
    for name in sig.positional:
        source = _source(name, sig, dependencies)
        if source is False:
            if name in nodes:
                raise DefinitionError(
                    f"{where}parameter {name!r} names node {name!r}, which is not a dependency of this node: "
                    f"add depends_on={name!r}, or rename the parameter (ctx receives the context)")
            if len(sig.positional) == 1 and not sig.keywords:
                return CONTEXT_ONLY  # today's convention: the one parameter is the context
            raise DefinitionError(
                f"{where}parameter {name!r} names no dependency of the node"
                f"{_deps_hint(dependencies)} and is not the context (name it ctx); "
                "give it a default to leave it alone")
        positional.append(source)  # type: ignore[arg-type]
    keywords: list[tuple[str, str | None]] = []
    for name in sig.keywords:
        source = _source(name, sig, dependencies)
        if source is False:
            raise DefinitionError(
                f"{where}keyword-only parameter {name!r} names no dependency of the node"
                f"{_deps_hint(dependencies)} and is not the context (name it ctx); "
                "give it a default to leave it alone")
        keywords.append((name, source))  # type: ignore[arg-type]
    plan = CallPlan(tuple(positional), tuple(keywords))
    return CONTEXT_ONLY if plan == CONTEXT_ONLY else plan


def _deps_hint(dependencies: Collection[str]) -> str:
    if not dependencies:
        return " (it has none)"
    shown = sorted(dependencies)[:8]
    more = f", ... {len(dependencies) - 8} more" if len(dependencies) > 8 else ""
    return f" ({', '.join(map(repr, shown))}{more})"
