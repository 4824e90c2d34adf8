"""Workflow definitions: nodes, their options, the fluent builder and the decorators.

A :class:`Workflow` is an immutable, validated DAG of named nodes, each with an action
(a callable) and :class:`NodeOptions`.  Build one three ways:

* fluently, with :class:`WorkflowBuilder`::

      wf = (WorkflowBuilder("etl")
            .add("extract", extract)
            .add("transform", transform, depends_on=["extract"], retries=2)
            .add("load", load, depends_on=[transform])   # by reference works too
            .build())

* with decorators, the decorated functions staying plain callables::

      flow = WorkflowBuilder("etl")

      @flow.node
      def extract(): ...

      @flow.node(depends_on=[extract], timeout=30.0)
      def transform(ctx): ...

      wf = flow.build()

* in bulk from arrays, for graphs of millions of nodes, with :meth:`Workflow.from_arrays`.

Options are interned: nodes that share the same options share one :class:`NodeOptions`
object, and the workflow keeps a small table of distinct options plus one ``uint32``
index per node, so a million-node workflow does not hold a million option objects.

Errors are reported when they can first be known: bad options, duplicate names and
self-dependencies when a node is added; unknown dependencies, cycles and an empty
workflow at :meth:`WorkflowBuilder.build`.

Where it sits: layer L2 (definition): knows the core seam below it, nothing about
running; pictures are drawn by :mod:`flow_orchestrator._draw` (below), never by
importing up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

import numpy as np

from . import _draw
from ._calling import CallPlan, Signature, bind, signature_of
from ._draw import Picture
from ._ext import CSRGraph, Interner, first_not_callable, group_by, take
from .errors import (
    CycleError,
    DefinitionError,
    DuplicateNodeError,
    EdgeArrayError,
    EmptyGraphError,
    NodeNameError,
    SelfDependencyError,
    UnknownNodeError,
)

__all__ = ["NodeOptions", "Node", "Workflow", "WorkflowBuilder"]

F = TypeVar("F", bound=Callable[..., Any])
DependencyRef = str | Callable[..., Any]


def check_middleware(middleware: Any) -> tuple[Callable[..., Any], ...]:
    """``middleware`` (one callable or several) as a tuple; DefinitionError otherwise."""
    items = (middleware,) if callable(middleware) else tuple(middleware)
    for mw in items:
        if not callable(mw):
            raise DefinitionError(f"middleware must be callables, got {mw!r}")
    return items


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Per-node execution options, validated on creation and immutable.

    Attributes:
        retries: extra attempts after a failure (``0``: run once).
        retry_delay: seconds to wait before the first retry.
        retry_backoff: factor applied to the delay after each retry (``>= 1``).
        retry_max_delay: upper bound of any single retry delay, in seconds.
        timeout: seconds a single attempt may run before it is marked timed out
            (cooperatively: Python threads cannot be killed), or ``None``.
        middleware: callables ``middleware(action) -> action`` applied innermost
            first, so ``(a, b)`` runs as ``a(b(action))``.
        tags: free-form labels for selection and reporting.
        continue_on_error: when this node fails, only its dependents are skipped;
            independent branches keep running.
        persist: ``False`` keeps the node's output out of the store of a durable run
            (its record says completed, without an output); a resume runs the node
            again when a dependent that has not completed needs it, and not otherwise.
    """

    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 60.0
    timeout: float | None = None
    middleware: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)
    continue_on_error: bool = False
    persist: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise DefinitionError(f"retries must be an int >= 0, got {self.retries!r}")
        _check_seconds("retry_delay", self.retry_delay, allow_zero=True)
        _check_seconds("retry_max_delay", self.retry_max_delay, allow_zero=True)
        if not _is_real(self.retry_backoff) or not 1.0 <= self.retry_backoff < math.inf:
            raise DefinitionError(f"retry_backoff must be a finite number >= 1, got {self.retry_backoff!r}")
        if self.timeout is not None:
            _check_seconds("timeout", self.timeout, allow_zero=False)
        object.__setattr__(self, "middleware", check_middleware(self.middleware))
        tags = frozenset([self.tags] if isinstance(self.tags, str) else self.tags)
        for tag in tags:
            if not isinstance(tag, str):
                raise DefinitionError(f"tags must be str, got {tag!r}")
        object.__setattr__(self, "tags", tags)
        if not isinstance(self.continue_on_error, bool):
            raise DefinitionError(f"continue_on_error must be a bool, got {self.continue_on_error!r}")
        if not isinstance(self.persist, bool):
            raise DefinitionError(f"persist must be a bool, got {self.persist!r}")

    def retry_delay_for(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        delay = self.retry_delay * self.retry_backoff ** max(retry_number - 1, 0)
        return min(delay, self.retry_max_delay)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
            or value < 0 or (value == 0 and not allow_zero)):
        bound = ">= 0" if allow_zero else "> 0"
        raise DefinitionError(f"{name} must be a number of seconds {bound}, got {value!r}")


DEFAULT_OPTIONS = NodeOptions()
_OPTION_FIELDS = frozenset(NodeOptions.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Node:
    """A read-only view of one node of a :class:`Workflow`."""

    name: str
    id: int
    action: Callable[..., Any]
    dependencies: tuple[str, ...]
    options: NodeOptions

    @property
    def retries(self) -> int:
        """Shortcut for ``options.retries``."""
        return self.options.retries

    @property
    def timeout(self) -> float | None:
        """Shortcut for ``options.timeout``."""
        return self.options.timeout

    @property
    def tags(self) -> frozenset[str]:
        """Shortcut for ``options.tags``."""
        return self.options.tags


class Workflow:
    """An immutable, validated workflow definition.

    Node ids are dense ints in definition order; every accessor also takes names.
    Instances hold no run state and are safe to share between threads and runs.
    """

    __slots__ = ("_name", "_graph", "_names", "_actions", "_option_table",
                 "_option_index", "_declared_deps", "_middleware", "_plans", "__weakref__")

    def __init__(
        self,
        name: str,
        graph: CSRGraph,
        names: Interner,
        actions: Sequence[Callable[..., Any]],
        option_table: Sequence[NodeOptions],
        option_index: np.ndarray,
        declared_deps: Sequence[tuple[str, ...]] | None = None,
        middleware: Sequence[Callable[..., Any]] = (),
        call_plans: Sequence[CallPlan] | None = None,
    ) -> None:
        """Internal: use :class:`WorkflowBuilder` or :meth:`from_arrays`."""
        self._middleware = check_middleware(middleware)
        self._name = name
        self._graph = graph
        self._names = names.freeze()
        self._actions = tuple(actions)
        self._option_table = tuple(option_table)
        option_index.flags.writeable = False
        self._option_index = option_index
        self._declared_deps = tuple(declared_deps) if declared_deps is not None else None
        # How each node's action is called, decided here once (see flow_orchestrator._calling):
        # a signature that cannot be satisfied is refused when the workflow is built.
        self._plans = tuple(call_plans) if call_plans is not None else _call_plans(self)

    # -- construction in bulk ------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        name: str,
        node_names: Sequence[str],
        sources: Any,
        targets: Any,
        actions: Callable[..., Any] | Sequence[Callable[..., Any]],
        options: NodeOptions | None = None,
        middleware: Sequence[Callable[..., Any]] = (),
    ) -> Workflow:
        """Build a workflow in bulk: ``targets[i]`` depends on ``sources[i]``.

        ``sources`` and ``targets`` are integer arrays of indices into ``node_names``;
        ``actions`` is one callable for every node or one per node; every node gets
        ``options`` (default options when omitted); ``middleware`` wraps every node
        (outside each node's own).  No per-edge or per-node Python work is done: names
        are interned, actions checked and grouped, and call plans gathered in the
        compiled core, with Python work once per distinct action signature.
        """
        return cls._bulk(name, node_names, actions, options, middleware,
                         lambda n, labels: CSRGraph.from_edges(n, sources, targets, labels=labels))

    @classmethod
    def from_edge_list(
        cls,
        name: str,
        node_names: Sequence[str],
        edges: Any,
        actions: Callable[..., Any] | Sequence[Callable[..., Any]],
        options: NodeOptions | None = None,
        middleware: Sequence[Callable[..., Any]] = (),
    ) -> Workflow:
        """Build a workflow in bulk from ``(source, target)`` pairs of indices into
        ``node_names``: each pair ``(u, v)`` makes node ``v`` depend on node ``u``.

        ``edges`` is a list or tuple of pairs, an ``(m, 2)`` integer array, or any
        iterable of pairs, read in the compiled core
        (:meth:`CSRGraph.from_edge_list <flow_orchestrator.dag.CSRGraph.from_edge_list>`);
        otherwise this is :meth:`from_arrays`, with the same arguments and errors.

        >>> wf = Workflow.from_edge_list("etl", ["extract", "transform", "load"],
        ...                              [(0, 1), (1, 2)], lambda: None)
        >>> wf.topological_order(), wf.dependencies("load")
        (['extract', 'transform', 'load'], ('transform',))
        """
        return cls._bulk(name, node_names, actions, options, middleware,
                         lambda n, labels: CSRGraph.from_edge_list(n, edges, labels=labels))

    @classmethod
    def _bulk(cls, name: str, node_names: Sequence[str],
              actions: Callable[..., Any] | Sequence[Callable[..., Any]], options: NodeOptions | None,
              middleware: Sequence[Callable[..., Any]],
              make_graph: Callable[[int, list[str]], CSRGraph]) -> Workflow:
        _check_workflow_name(name)
        names = Interner(node_names)
        if len(names) != len(node_names):
            raise DuplicateNodeError(f"workflow {name!r}: node names are not unique")
        n = len(names)
        if n == 0:
            raise EmptyGraphError(f"workflow {name!r} has no nodes")
        action_list: Sequence[Callable[..., Any]]
        if callable(actions):
            action_list = (actions,) * n
        else:
            action_list = actions if type(actions) in (list, tuple) else list(actions)
            if len(action_list) != n:
                raise EdgeArrayError(f"workflow {name!r}: {len(action_list)} actions for {n} nodes")
            bad = first_not_callable(action_list)
            if bad >= 0:
                raise DefinitionError(f"node {names.name(bad)!r}: action {action_list[bad]!r} is not callable")
        try:
            graph = make_graph(n, names.names())
        except CycleError as exc:
            raise CycleError(f"workflow {name!r}: {exc}", exc.cycle) from None
        opts = DEFAULT_OPTIONS if options is None else options
        if not isinstance(opts, NodeOptions):
            raise DefinitionError(f"options must be a NodeOptions, got {opts!r}")
        return cls(name, graph, names, action_list, (opts,), np.zeros(n, dtype=np.uint32),
                   middleware=middleware)

    # -- identity ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self._name

    @property
    def graph(self) -> CSRGraph:
        """The compiled :class:`CSRGraph` (ids are this workflow's node ids)."""
        return self._graph

    @property
    def middleware(self) -> tuple[Callable[..., Any], ...]:
        """Middleware wrapping every node of this workflow, outside each node's own."""
        return self._middleware

    @property
    def interner(self) -> Interner:
        """The frozen name <-> id table."""
        return self._names

    def __len__(self) -> int:
        return self._graph.num_nodes

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __repr__(self) -> str:
        return f"<Workflow {self._name!r}: {len(self)} nodes, {self._graph.num_edges} edges>"

    # -- nodes ---------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Node names in id order."""
        return self._names.names()

    def node_id(self, name: str) -> int:
        """The id of a node; :class:`UnknownNodeError` if there is none of that name."""
        return self._names.id(name)

    def node(self, name: str | int) -> Node:
        """A :class:`Node` view of one node, by name or id."""
        node_id = self._resolve(name)
        return Node(
            name=self._names.name(node_id),
            id=node_id,
            action=self._actions[node_id],
            dependencies=self.dependencies(node_id),
            options=self.options(node_id),
        )

    def nodes(self) -> Iterator[Node]:
        """Every node, in id order."""
        return (self.node(i) for i in range(len(self)))

    def action(self, name: str | int) -> Callable[..., Any]:
        """The action of a node."""
        return self._actions[self._resolve(name)]

    def options(self, name: str | int) -> NodeOptions:
        """The options of a node."""
        return self._option_table[int(self._option_index[self._resolve(name)])]

    @property
    def actions(self) -> tuple[Callable[..., Any], ...]:
        """Actions indexed by node id."""
        return self._actions

    @property
    def call_plans(self) -> tuple[CallPlan, ...]:
        """How each node's action is called, by node id (see :mod:`flow_orchestrator.context`)."""
        return self._plans

    @property
    def option_table(self) -> tuple[NodeOptions, ...]:
        """The distinct :class:`NodeOptions` of this workflow."""
        return self._option_table

    @property
    def option_index(self) -> np.ndarray:
        """``uint32`` per node id: its options' index in :attr:`option_table` (read-only)."""
        return self._option_index

    def dependencies(self, name: str | int) -> tuple[str, ...]:
        """Names of the nodes this node depends on, in declaration order."""
        node_id = self._resolve(name)
        if self._declared_deps is not None:
            return self._declared_deps[node_id]
        return tuple(self._names.names(self._graph.predecessors(node_id)))

    def dependents(self, name: str | int) -> tuple[str, ...]:
        """Names of the nodes that depend on this node."""
        return tuple(self._names.names(self._graph.successors(self._resolve(name))))

    def _resolve(self, name: str | int) -> int:
        if isinstance(name, str):
            return self._names.id(name)
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < len(self):
            return int(name)
        raise UnknownNodeError(f"workflow {self._name!r} has no node {name!r}")

    # -- structure -----------------------------------------------------------------

    def topological_order(self) -> list[str]:
        """Node names in a topological order (ties in definition order)."""
        return self._names.names(self._graph.topological_order())

    def generations(self) -> list[list[str]]:
        """Node names grouped by level: each group depends only on earlier groups."""
        return [self._names.names(ids) for ids in self._graph.generations()]

    def roots(self) -> list[str]:
        """Nodes without dependencies."""
        return self._names.names(self._graph.roots())

    def leaves(self) -> list[str]:
        """Nodes nothing depends on."""
        return self._names.names(self._graph.leaves())

    def ancestors(self, names: Iterable[str] | str, *, include_self: bool = False) -> list[str]:
        """Every node that some of ``names`` depend on, directly or not (id order)."""
        return self._names.names(self._graph.ancestors(self._ids(names), include_self=include_self))

    def descendants(self, names: Iterable[str] | str, *, include_self: bool = False) -> list[str]:
        """Every node that depends on some of ``names``, directly or not (id order)."""
        return self._names.names(self._graph.descendants(self._ids(names), include_self=include_self))

    def _ids(self, names: Iterable[str] | str) -> np.ndarray:
        return self._names.ids([names] if isinstance(names, str) else names)

    # -- pictures ------------------------------------------------------------------

    def _picture(self) -> Picture:
        """What a drawing of this workflow shows (see :mod:`flow_orchestrator._draw`)."""
        return Picture(self._names.names, len(self), self._graph.succ_indptr, self._graph.succ_indices, None,
                       self.name, f"workflow {self.name!r}")

    def to_dot(self, **options: Any) -> str:
        """This workflow as Graphviz DOT (see :func:`flow_orchestrator.render.to_dot`)."""
        return _draw.to_dot(self, **options)

    def to_mermaid(self, **options: Any) -> str:
        """This workflow as a Mermaid flowchart (see :func:`flow_orchestrator.render.to_mermaid`)."""
        return _draw.to_mermaid(self, **options)


def _call_plans(workflow: Workflow) -> tuple[CallPlan, ...]:
    """Every node's :class:`CallPlan`: one signature per distinct signature (the many
    functions one ``def`` or ``lambda`` makes in a loop share one), gathered per node
    in C; per node in Python only when a required parameter names a node of the
    workflow (then its dependencies matter)."""
    names = workflow.interner
    actions = workflow.actions
    node_names = frozenset(names.names()) if len(names) < 4096 else _NodeNames(names)
    first, group = group_by(actions, signatures=True)
    signatures: list[Signature] = []
    shared: list[CallPlan | None] = []  # a group's plan on every node; None: per node
    for node in first.tolist():
        sig = signature_of(actions[node])
        signatures.append(sig)
        plan: CallPlan | None = None
        if not any(n in node_names and n not in sig.wants_context for n in sig.names()):
            try:
                plan = bind(sig, (), names.name(node), node_names)
            except DefinitionError:
                plan = None  # reported below, with the node's own dependencies
        shared.append(plan)
    if all(plan is not None for plan in shared):
        return take(shared, group)  # type: ignore[no-any-return]
    per_node = np.array([plan is None for plan in shared])[group]
    fallback: list[CallPlan | None] = [None] * len(actions)
    for node in np.flatnonzero(per_node).tolist():
        fallback[node] = bind(signatures[group[node]], workflow.dependencies(node), names.name(node), node_names)
    return take(shared, np.where(per_node, np.uint32(0xFFFFFFFF), group), fallback)  # type: ignore[no-any-return]


class _NodeNames:
    """``name in workflow`` through the interner, for big workflows (no set of names)."""

    __slots__ = ("_names",)

    def __init__(self, names: Interner) -> None:
        self._names = names

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.names())


def _check_workflow_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"a workflow name must be a non-empty str, got {name!r}")


@dataclass(slots=True)
class _PendingNode:
    name: str
    action: Callable[..., Any]
    depends_on: tuple[DependencyRef, ...]
    options: NodeOptions
    infer: bool = False  # decorated without depends_on: parameters named after nodes are dependencies


_INFER: Any = type("_Infer", (tuple,), {"__repr__": lambda self: "<inferred from parameter names>"})()


class WorkflowBuilder:
    """Collects nodes, fluently or by decorators, and builds an immutable :class:`Workflow`.

    Args:
        name: the workflow's name.
        defaults: options every node starts from; per-node keyword options override
            single fields of it.
        middleware: wraps every node of the workflow, outside each node's own
            middleware (and inside the engine's).

    A builder is meant to be used from one thread.  :meth:`build` may be called more
    than once; each call returns a new, independent workflow.
    """

    def __init__(self, name: str, *, defaults: NodeOptions | None = None,
                 middleware: Sequence[Callable[..., Any]] = ()) -> None:
        _check_workflow_name(name)
        self._middleware = check_middleware(middleware)
        if defaults is not None and not isinstance(defaults, NodeOptions):
            raise DefinitionError(f"defaults must be a NodeOptions, got {defaults!r}")
        self._name = name
        self._defaults = defaults or DEFAULT_OPTIONS
        self._nodes: dict[str, _PendingNode] = {}
        self._by_action: dict[int, list[str]] = {}
        self._interned_options: dict[NodeOptions, NodeOptions] = {}

    @property
    def name(self) -> str:
        """The name the built workflow will have."""
        return self._name

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def add(
        self,
        name: str,
        action: Callable[..., Any],
        *,
        depends_on: Iterable[DependencyRef] | DependencyRef = (),
        options: NodeOptions | None = None,
        **option_fields: Any,
    ) -> WorkflowBuilder:
        """Add a node and return the builder, for chaining.

        Args:
            name: a unique, non-empty node name.
            action: the callable to run; it takes no argument or one (the run
                context), see the engine's documentation.
            depends_on: names of nodes, or their actions, that must complete
                first; both may refer to nodes added later (resolved by :meth:`build`).
            options: a whole :class:`NodeOptions`; or give single fields as keywords
                (``retries=3, timeout=10.0, tags={"io"}, continue_on_error=True, ...``),
                which override the builder's defaults.
        """
        if not isinstance(name, str) or not name:
            raise NodeNameError(f"node names must be non-empty str, got {name!r}")
        if name in self._nodes:
            raise DuplicateNodeError(f"workflow {self._name!r} already has a node named {name!r}")
        if not callable(action):
            raise DefinitionError(f"node {name!r}: action {action!r} is not callable")
        deps = self._normalise_deps(name, action, depends_on)
        opts = self._intern(self._make_options(name, options, option_fields))
        self._nodes[name] = _PendingNode(name, action, deps, opts)
        self._by_action.setdefault(id(action), []).append(name)
        return self

    @overload
    def node(self, func: F, /) -> F: ...

    @overload
    def node(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        depends_on: Iterable[DependencyRef] | DependencyRef = (),
        options: NodeOptions | None = None,
        **option_fields: Any,
    ) -> Callable[[F], F]: ...

    def node(self, func: Any = None, /, *, name: str | None = None,
             depends_on: Iterable[DependencyRef] | DependencyRef = _INFER,
             options: NodeOptions | None = None, **option_fields: Any) -> Any:
        """Decorator: add the decorated function as a node and return it unchanged.

        Use bare (``@builder.node``) or with arguments
        (``@builder.node(depends_on=[extract], retries=2)``).  The node's name defaults
        to the function's ``__name__``.  Without ``depends_on``, the dependencies are
        inferred when the workflow is built: every required parameter named after a
        node of the workflow (defined before or after this one) is a dependency and
        receives its output; ``depends_on=()`` says "no dependencies" explicitly.
        """
        def register(fn: F) -> F:
            node_name = name if name is not None else getattr(fn, "__name__", None)
            if node_name is None:
                raise DefinitionError(f"cannot name a node after {fn!r}; pass name=...")
            infer = depends_on is _INFER
            self.add(node_name, fn, depends_on=() if infer else depends_on, options=options, **option_fields)
            if infer:
                self._nodes[node_name].infer = True
            return fn

        if func is not None:
            if not callable(func):
                raise DefinitionError(f"@node expects a callable, got {func!r}")
            return register(func)
        return register

    def _make_options(self, name: str, options: NodeOptions | None,
                      option_fields: dict[str, Any]) -> NodeOptions:
        if options is not None and not isinstance(options, NodeOptions):
            raise DefinitionError(f"node {name!r}: options must be a NodeOptions, got {options!r}")
        unknown = set(option_fields) - _OPTION_FIELDS
        if unknown:
            raise DefinitionError(
                f"node {name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_OPTION_FIELDS))}")
        base = options if options is not None else self._defaults
        try:
            return replace(base, **option_fields) if option_fields else base
        except DefinitionError as exc:
            raise DefinitionError(f"node {name!r}: {exc}") from None

    def _intern(self, options: NodeOptions) -> NodeOptions:
        try:
            return self._interned_options.setdefault(options, options)
        except TypeError:  # unhashable middleware: keep it as is
            return options

    def _normalise_deps(self, name: str, action: Callable[..., Any],
                        depends_on: Iterable[DependencyRef] | DependencyRef) -> tuple[DependencyRef, ...]:
        if isinstance(depends_on, str) or callable(depends_on):
            items: list[DependencyRef] = [depends_on]  # type: ignore[list-item]
        else:
            try:
                items = list(depends_on)
            except TypeError:
                raise DefinitionError(f"node {name!r}: depends_on must be names or actions, got {depends_on!r}") from None
        seen: dict[Any, DependencyRef] = {}
        for dep in items:
            if not isinstance(dep, str) and not callable(dep):
                raise DefinitionError(f"node {name!r}: a dependency must be a name or an action, got {dep!r}")
            if dep == name or (dep is action and not isinstance(dep, str)):
                raise SelfDependencyError(f"node {name!r} depends on itself")
            seen.setdefault(dep if isinstance(dep, str) else ("ref", id(dep)), dep)
        return tuple(seen.values())

    def _resolve_dep(self, node: str, dep: DependencyRef) -> str:
        if isinstance(dep, str):
            if dep not in self._nodes:
                raise UnknownNodeError(f"node {node!r} depends on {dep!r}, which is not in workflow {self._name!r}")
            return dep
        names = self._by_action.get(id(dep), [])
        if not names:
            raise UnknownNodeError(
                f"node {node!r} depends on {getattr(dep, '__name__', dep)!r}, "
                f"which was never added to workflow {self._name!r}")
        if len(names) > 1:
            raise DefinitionError(
                f"node {node!r} depends on an action used by several nodes ({', '.join(names)}); "
                "refer to one of them by name")
        return names[0]

    def build(self) -> Workflow:
        """Validate and freeze: unknown dependencies, cycles and emptiness are reported here."""
        if not self._nodes:
            raise EmptyGraphError(f"workflow {self._name!r} has no nodes")
        names = Interner(self._nodes)
        declared: list[tuple[str, ...]] = []
        edges: list[tuple[int, int]] = []
        for target, pending in enumerate(self._nodes.values()):
            refs = pending.depends_on
            if pending.infer:
                sig = signature_of(pending.action)
                refs = tuple(n for n in sig.names()
                             if n in self._nodes and n != pending.name and n not in sig.wants_context)
            dep_names = tuple(dict.fromkeys(self._resolve_dep(pending.name, d) for d in refs))
            if pending.name in dep_names:
                raise SelfDependencyError(f"node {pending.name!r} depends on itself")
            declared.append(dep_names)
            edges += [(names.id(dep), target) for dep in dep_names]
        try:
            graph = CSRGraph.from_edge_list(len(names), edges, labels=names.names())
        except CycleError as exc:
            raise CycleError(f"workflow {self._name!r}: {exc}", exc.cycle) from None
        pending_nodes = list(self._nodes.values())
        first, option_index = group_by([p.options for p in pending_nodes])
        option_table = [pending_nodes[i].options for i in first.tolist()]
        actions = [p.action for p in pending_nodes]
        return Workflow(self._name, graph, names, actions, option_table, option_index, declared,
                        self._middleware)
